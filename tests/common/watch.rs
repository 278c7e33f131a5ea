// SPDX-License-Identifier: MPL-2.0
//! Watching with callsrc in a test: `callsrc PROPS ! TAIL ! appsink`, what the appsink got
//! (frames, caps, the centre pixel) and what callsrc posted.

use super::{init, wait_for};
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// What the appsink after callsrc got.
#[derive(Default)]
pub struct Seen {
    pub frames: usize,
    pub caps: Option<gst::Caps>,
    /// Centre pixel (RGBA) of the last decoded frame.
    pub centre: Option<[u8; 4]>,
}

/// `callsrc PROPS ! TAIL ! appsink`, playing.
pub struct Watch {
    pub pipeline: gst::Pipeline,
    pub src: gst::Element,
    pub seen: Arc<Mutex<Seen>>,
    /// callsrc's element messages and "eos", in the order they were posted.
    pub posted: Arc<Mutex<Vec<gst::Structure>>>,
    pub started: Instant,
}

impl Watch {
    pub fn start(props: &str, tail: &str) -> Watch {
        init();
        let pipeline = gst::parse::launch(&format!(
            "callsrc name=src {props} ! {tail} ! appsink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let mut seen = s.lock().unwrap();
                    seen.frames += 1;
                    let caps = sample.caps().map(|c| c.to_owned());
                    if let (Some(caps), Some(buffer)) = (&caps, sample.buffer())
                        && let Ok(info) = gst_video::VideoInfo::from_caps(caps)
                        && info.format() == gst_video::VideoFormat::Rgba
                        && let Ok(map) = buffer.map_readable()
                    {
                        let (w, h) = (info.width() as usize, info.height() as usize);
                        let stride = info.stride()[0] as usize;
                        let o = (h / 2) * stride + (w / 2) * 4;
                        if let Some(px) = map.get(o..o + 4) {
                            seen.centre = Some([px[0], px[1], px[2], px[3]]);
                        }
                    }
                    seen.caps = caps;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let posted: Arc<Mutex<Vec<gst::Structure>>> = Arc::default();
        let p = posted.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure() {
                        p.lock().unwrap().push(s.to_owned());
                    }
                }
                gst::MessageView::Eos(_) => {
                    p.lock().unwrap().push(gst::Structure::new_empty("eos"));
                }
                _ => (),
            }
            gst::BusSyncReply::Pass
        });
        // A bad URL fails here; the error on the bus says why.
        let _ = pipeline.set_state(gst::State::Playing);
        Watch {
            pipeline,
            src,
            seen,
            posted,
            started: Instant::now(),
        }
    }

    pub fn decoded(props: &str) -> Watch {
        Watch::start(props, "videoconvert ! video/x-raw,format=RGBA")
    }

    pub fn error(&self) -> Option<String> {
        let bus = self.pipeline.bus().unwrap();
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(e.error().to_string());
            }
        }
        None
    }

    /// Asserts that red frames come within 20 s.
    pub fn assert_red(&self) {
        assert!(
            self.wait_red(20 * SEC),
            "no red frame: centre {:?}, {} frames, error {:?}, {}",
            self.seen.lock().unwrap().centre,
            self.frames(),
            self.error(),
            self.stats()
        );
    }

    pub fn wait_red(&self, timeout: Duration) -> bool {
        self.wait_colour([255, 0, 0], timeout)
    }

    /// Waits for a centre pixel within 60 of `rgb` in each channel (after a few frames).
    pub fn wait_colour(&self, rgb: [u8; 3], timeout: Duration) -> bool {
        wait_for(timeout, || {
            let seen = self.seen.lock().unwrap();
            seen.frames > 5
                && seen
                    .centre
                    .is_some_and(|px| (0..3).all(|i| px[i].abs_diff(rgb[i]) < 60))
        })
    }

    pub fn frames(&self) -> usize {
        self.seen.lock().unwrap().frames
    }

    pub fn state(&self) -> String {
        self.stats().get::<String>("connection-state").unwrap()
    }

    /// The names (and uid fields) of what callsrc posted.
    pub fn posted(&self) -> Vec<String> {
        self.posted
            .lock()
            .unwrap()
            .iter()
            .map(|s| match s.get::<String>("uid") {
                Ok(uid) => format!(
                    "{} {uid}{}",
                    s.name(),
                    s.get::<String>("previous-uid")
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default()
                ),
                Err(_) => s.name().to_string(),
            })
            .filter(|n| {
                (n.starts_with("callsrc-") && !n.starts_with("callsrc-connection-state"))
                    || n == "eos"
            })
            .collect()
    }

    pub fn stats(&self) -> gst::Structure {
        self.src.property("stats")
    }

    /// The size of the frames output, once there is one.
    pub fn size(&self) -> Option<(i32, i32)> {
        let caps = self.seen.lock().unwrap().caps.clone()?;
        let s = caps.structure(0)?;
        Some((s.get("width").ok()?, s.get("height").ok()?))
    }

    /// Everything known, for assertion messages.
    pub fn report(&self) -> String {
        let (frames, centre) = {
            let seen = self.seen.lock().unwrap();
            (seen.frames, seen.centre)
        };
        format!(
            "{frames} frames, centre {centre:?}, size {:?}, error {:?}, {}",
            self.size(),
            self.error(),
            self.stats()
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
