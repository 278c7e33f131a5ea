// SPDX-License-Identifier: MPL-2.0
//! Shared helpers for the element tests: plugin registration, a pipeline that collects what
//! the track outputs, and frame makers.
#![allow(dead_code)]

pub mod browser;
pub mod build;
pub mod callserver;
pub mod fakewhip;
pub mod http;
pub mod janus;
pub mod netns;
pub mod peers;
#[allow(dead_code)]
pub mod shape;
pub mod watch;

use gst::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstcustomvideo::plugin_register_static().expect("register customvideo");
    });
}

/// One buffer as it reached the sink.
#[derive(Clone, Debug)]
pub struct Out {
    pub pts: gst::ClockTime,
    pub duration: Option<gst::ClockTime>,
    pub arrived: Instant,
    pub width: i32,
    pub height: i32,
    pub format: String,
    /// Address of the first byte of the buffer's memory.
    pub data: usize,
    /// The RGBA pixel at the centre, when the sink caps are RGBA.
    pub center: Option<[u8; 4]>,
    pub pixels: Option<Arc<Vec<u8>>>,
}

/// A running pipeline `customvideosrc ... ! [tail] ! appsink` that records every buffer,
/// every caps event and every bus message.
pub struct Run {
    pub pipeline: gst::Pipeline,
    pub src: CustomVideoSrc,
    pub frames: Arc<Mutex<Vec<Out>>>,
    pub caps_events: Arc<Mutex<Vec<gst::Caps>>>,
    pub events: Arc<Mutex<Vec<gst::Event>>>,
    pub eos: Arc<Mutex<bool>>,
    pub messages: Arc<Mutex<Vec<Posted>>>,
}

impl Run {
    /// `src` is the customvideosrc part (`"customvideosrc name=src ..."`), `tail` what comes
    /// between it and the appsink (may be empty).
    pub fn new(src: &str, tail: &str, keep_pixels: bool) -> Run {
        init();
        let desc = if tail.is_empty() {
            format!("{src} ! appsink name=sink sync=false")
        } else {
            format!("{src} ! {tail} ! appsink name=sink sync=false")
        };
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let src = pipeline
            .by_name("src")
            .expect("element named src")
            .downcast::<CustomVideoSrc>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let frames: Arc<Mutex<Vec<Out>>> = Arc::default();
        let caps_events: Arc<Mutex<Vec<gst::Caps>>> = Arc::default();
        let events: Arc<Mutex<Vec<gst::Event>>> = Arc::default();
        let eos: Arc<Mutex<bool>> = Arc::default();
        let messages: Arc<Mutex<Vec<Posted>>> = Arc::default();

        let f = frames.clone();
        let e = eos.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    f.lock().unwrap().push(describe(&sample, keep_pixels));
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| *e.lock().unwrap() = true)
                .build(),
        );
        let ce = caps_events.clone();
        let ev = events.clone();
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(event)) = &info.data {
                    if let gst::EventView::Caps(c) = event.view() {
                        ce.lock().unwrap().push(c.caps_owned());
                    }
                    ev.lock().unwrap().push(event.clone());
                }
                gst::PadProbeReturn::Ok
            },
        );
        let m = messages.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            m.lock().unwrap().push(Posted::of(msg));
            gst::BusSyncReply::Drop
        });
        Run {
            pipeline,
            src,
            frames,
            caps_events,
            events,
            eos,
            messages,
        }
    }

    pub fn play(&self) {
        self.pipeline.set_state(gst::State::Playing).unwrap();
    }

    pub fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    pub fn frames(&self) -> Vec<Out> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` frames arrived; returns whether they did.
    pub fn wait_frames(&self, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, || self.count() >= n)
    }

    pub fn wait_eos(&self, timeout: Duration) -> bool {
        wait_for(timeout, || *self.eos.lock().unwrap())
    }

    /// The first error message on the bus, if any: (message, debug).
    pub fn error(&self) -> Option<(String, String)> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.kind == gst::MessageType::Error)
            .map(|p| {
                (
                    p.text.clone().unwrap_or_default(),
                    p.debug.clone().unwrap_or_default(),
                )
            })
    }

    pub fn warnings(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.kind == gst::MessageType::Warning)
            .map(|p| {
                format!(
                    "{} {}",
                    p.text.as_deref().unwrap_or_default(),
                    p.debug.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn element_messages(&self, name: &str) -> Vec<gst::Structure> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| p.structure.as_ref().filter(|s| s.name() == name).cloned())
            .collect()
    }

    pub fn wait_error(&self, timeout: Duration) -> Option<(String, String)> {
        wait_for(timeout, || self.error().is_some());
        self.error()
    }

    pub fn running_time(&self) -> gst::ClockTime {
        let clock = self.pipeline.clock().unwrap();
        clock.time() - self.pipeline.base_time().unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn describe(sample: &gst::Sample, keep_pixels: bool) -> Out {
    let buffer = sample.buffer().unwrap();
    let caps = sample.caps().unwrap();
    let s = caps.structure(0).unwrap();
    let width = s.get::<i32>("width").unwrap();
    let height = s.get::<i32>("height").unwrap();
    let format = s.get::<String>("format").unwrap();
    let map = buffer.map_readable().unwrap();
    let data = map.as_slice().as_ptr() as usize;
    let (center, pixels) = if format == "RGBA" {
        let stride = (width as usize * 4).next_multiple_of(4);
        let o = (height as usize / 2) * stride + (width as usize / 2) * 4;
        let px: [u8; 4] = map[o..o + 4].try_into().unwrap();
        (
            Some(px),
            keep_pixels.then(|| Arc::new(map.as_slice().to_vec())),
        )
    } else {
        (None, None)
    };
    Out {
        pts: buffer.pts().expect("every track buffer has a timestamp"),
        duration: buffer.duration(),
        arrived: Instant::now(),
        width,
        height,
        format,
        data,
        center,
        pixels,
    }
}

/// Raw video caps.
pub fn caps(format: &str, width: i32, height: i32, fps: i32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", format)
        .field("width", width)
        .field("height", height)
        .field("framerate", gst::Fraction::new(fps, 1))
        .build()
}

/// A solid-colour frame of `format` made from an RGBA colour by GStreamer's own converter.
pub fn solid(format: &str, width: u32, height: u32, rgba: [u8; 4]) -> gst::Buffer {
    init();
    let in_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, width, height)
        .build()
        .unwrap();
    let mut src = gst::Buffer::with_size(in_info.size()).unwrap();
    {
        let mut map = src.get_mut().unwrap().map_writable().unwrap();
        for px in map.as_mut_slice().chunks_exact_mut(4) {
            px.copy_from_slice(&rgba);
        }
    }
    convert(src, &in_info, format)
}

/// A frame of `width` x `height` RGBA pixels given by `f`, converted to `format`.
pub fn painted(
    format: &str,
    width: u32,
    height: u32,
    f: impl Fn(u32, u32) -> [u8; 4],
) -> gst::Buffer {
    init();
    let in_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, width, height)
        .build()
        .unwrap();
    let mut src = gst::Buffer::with_size(in_info.size()).unwrap();
    {
        let stride = in_info.stride()[0] as usize;
        let mut map = src.get_mut().unwrap().map_writable().unwrap();
        for y in 0..height {
            for x in 0..width {
                let o = y as usize * stride + x as usize * 4;
                map[o..o + 4].copy_from_slice(&f(x, y));
            }
        }
    }
    convert(src, &in_info, format)
}

fn convert(src: gst::Buffer, in_info: &gst_video::VideoInfo, format: &str) -> gst::Buffer {
    let out_info = gst_video::VideoInfo::builder(
        gst_video::VideoFormat::from_string(format),
        in_info.width(),
        in_info.height(),
    )
    .build()
    .unwrap();
    if out_info.format() == in_info.format() {
        return src;
    }
    let conv = gst_video::VideoConverter::new(in_info, &out_info, None).unwrap();
    let mut dst = gst::Buffer::with_size(out_info.size()).unwrap();
    {
        let s = gst_video::VideoFrameRef::from_buffer_ref_readable(src.as_ref(), in_info).unwrap();
        let mut d =
            gst_video::VideoFrameRef::from_buffer_ref_writable(dst.get_mut().unwrap(), &out_info)
                .unwrap();
        conv.frame_ref(&s, &mut d);
    }
    dst
}

/// Asserts that consecutive frames are exactly one interval of `fps` apart.
pub fn assert_paced(frames: &[Out], fps: u64) {
    let interval = gst::ClockTime::SECOND.mul_div_floor(1, fps).unwrap();
    for (i, w) in frames.windows(2).enumerate() {
        assert_eq!(w[1].pts - w[0].pts, interval, "frames {i} and {}", i + 1);
    }
}

/// Whether an RGBA pixel is close to `want` (each channel within `tol`).
pub fn near(px: [u8; 4], want: [u8; 3], tol: u8) -> bool {
    (0..3).all(|i| px[i].abs_diff(want[i]) <= tol)
}

pub const RED: [u8; 4] = [255, 0, 0, 255];
pub const GREEN: [u8; 4] = [0, 255, 0, 255];
pub const BLUE: [u8; 4] = [0, 0, 255, 255];

/// What a bus message said, kept without the message itself: a message holds a reference to
/// the element that posted it, and keeping it would keep that element (and its threads and
/// sockets) alive after the pipeline stopped.
#[derive(Debug, Clone)]
pub struct Posted {
    pub at: Instant,
    pub kind: gst::MessageType,
    /// Name of the object that posted it.
    pub src: Option<String>,
    /// The structure of an element message.
    pub structure: Option<gst::Structure>,
    /// The text of an error or warning.
    pub text: Option<String>,
    /// Its debug details.
    pub debug: Option<String>,
    /// The new state of a state change.
    pub state: Option<gst::State>,
}

impl Posted {
    fn of(msg: &gst::MessageRef) -> Posted {
        let (structure, text, debug, state) = match msg.view() {
            gst::MessageView::Element(e) => (e.structure().map(|s| s.to_owned()), None, None, None),
            gst::MessageView::Error(e) => (
                None,
                Some(e.error().message().to_string()),
                e.debug().map(|d| d.to_string()),
                None,
            ),
            gst::MessageView::Warning(w) => (
                None,
                Some(w.error().message().to_string()),
                w.debug().map(|d| d.to_string()),
                None,
            ),
            gst::MessageView::StateChanged(s) => (None, None, None, Some(s.current())),
            _ => (None, None, None, None),
        };
        Posted {
            at: Instant::now(),
            kind: msg.type_(),
            src: msg.src().map(|s| s.name().to_string()),
            structure,
            text,
            debug,
            state,
        }
    }
}

/// A pipeline made from a gst-launch description that records what every bus message said,
/// with the time it was posted.
pub struct Launched {
    pub pipeline: gst::Pipeline,
    pub messages: Arc<Mutex<Vec<Posted>>>,
}

impl Launched {
    pub fn new(desc: &str) -> Launched {
        init();
        let pipeline = gst::parse::launch(desc)
            .unwrap_or_else(|e| panic!("{desc}: {e}"))
            .downcast::<gst::Pipeline>()
            .unwrap();
        let messages: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let m = messages.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            m.lock().unwrap().push(Posted::of(msg));
            gst::BusSyncReply::Drop
        });
        Launched { pipeline, messages }
    }

    pub fn play(self) -> Launched {
        let _ = self.pipeline.set_state(gst::State::Playing);
        self
    }

    /// The first error message, if any.
    pub fn error(&self) -> Option<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.kind == gst::MessageType::Error)
            .and_then(|p| p.text.clone())
    }

    pub fn wait_error(&self, timeout: Duration) -> Option<String> {
        wait_for(timeout, || self.error().is_some());
        self.error()
    }

    /// Element messages named `name`, with their times.
    pub fn element_messages(&self, name: &str) -> Vec<(Instant, gst::Structure)> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| {
                p.structure
                    .as_ref()
                    .filter(|s| s.name() == name)
                    .map(|s| (p.at, s.clone()))
            })
            .collect()
    }

    pub fn element_message(&self, name: &str) -> Option<gst::Structure> {
        self.element_messages(name)
            .into_iter()
            .next()
            .map(|(_, s)| s)
    }

    /// callsink's connection states, in order, with their times.
    pub fn connection_states(&self) -> Vec<(Instant, String)> {
        self.element_messages("callsink-connection-state")
            .into_iter()
            .filter_map(|(t, s)| s.get::<String>("state").ok().map(|st| (t, st)))
            .collect()
    }

    /// Waits (bounded) for callsink to report `state`; returns when it first did.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> Option<Instant> {
        let find = || {
            self.connection_states()
                .into_iter()
                .find(|(_, s)| s == state)
                .map(|(t, _)| t)
        };
        wait_for(timeout, || find().is_some());
        find()
    }

    /// When EOS reached the application's bus.
    pub fn eos(&self) -> Option<Instant> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.kind == gst::MessageType::Eos)
            .map(|p| p.at)
    }

    /// The states the pipeline itself went through.
    pub fn pipeline_states(&self) -> Vec<gst::State> {
        let name = self.pipeline.name().to_string();
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.src.as_deref() == Some(name.as_str()))
            .filter_map(|p| p.state)
            .collect()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub use browser::PUBLISH_TOKEN;

/// The simulcast layers (rid, width, height) call server `server` lists for publisher `uid`,
/// those whose size it knows, smallest first.
pub fn listed_layers(
    server: &gstcustomvideo::server::CallServer,
    uid: &str,
) -> Vec<(String, u32, u32)> {
    let mut layers: Vec<(String, u32, u32)> = server
        .channels()
        .iter()
        .flat_map(|c| c.publishers.iter())
        .filter(|p| p.uid == uid)
        .flat_map(|p| p.layers.iter())
        .filter_map(|l| Some((l.rid.clone(), l.width?, l.height?)))
        .collect();
    layers.sort_by_key(|l| l.1);
    layers
}

/// A call server on the network namespace's private veth address (10.255.0.1), where every
/// WebRTC stack gathers candidates (libnice gathers no loopback candidates on its own, and the
/// webrtcbin inside whipclientsink is out of reach for adding one). Publishing needs
/// [`PUBLISH_TOKEN`]; test pages opened from files (origin `file://` in
/// the test browser) may call it.
pub fn server_on_veth() -> gstcustomvideo::server::CallServer {
    init();
    gstcustomvideo::server::CallServer::start(gstcustomvideo::server::ServerConfig {
        bind: "10.255.0.1".parse().unwrap(),
        port: 0,
        token: Some(PUBLISH_TOKEN.into()),
        allow_origins: vec!["file://".into()],
        ..Default::default()
    })
    .expect("server starts on the private veth address (run inside netns::enter)")
}

/// `t` as milliseconds since the epoch (the clock a browser's `Date.now()` reads).
pub fn epoch_ms(t: Instant) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0;
    now - t.elapsed().as_secs_f64() * 1000.0
}

/// What this process holds now: resident memory (MB), threads, open file descriptors.
pub fn process_resources() -> (f64, u64, u64) {
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:") / 1024.0, field("Threads:") as u64, fds)
}

/// The heap memory this process has allocated and not freed, MB (glibc's `mallinfo2`: every
/// arena's blocks in use plus the blocks mapped on their own). Unlike RSS it does not count
/// freed memory the allocator keeps.
#[allow(dead_code)]
pub fn heap_in_use() -> f64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as f64 / (1024.0 * 1024.0)
}

/// A small deterministic generator (xorshift), so that a failing run can be repeated.
pub struct Noise(pub u64);

impl Noise {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `filesrc location=<path> ! matroskademux ! <tail> ! appsink`, playing (as fast as it
/// goes): a recorded file decoded in this process.
pub fn play_file(path: &std::path::Path, tail: &str) -> (gst::Pipeline, gst_app::AppSink) {
    init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc name=file ! matroskademux ! {tail} ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline
        .by_name("file")
        .unwrap()
        .set_property("location", path.to_str().expect("UTF-8 path"));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, sink)
}
