// SPDX-License-Identifier: MPL-2.0
//! A producer described in gst-launch syntax, run in its own small pipeline that ends in an
//! `appsink`. Its frames and its end are handed to a callback; the element decides what they
//! mean for the track.

use gst::prelude::*;
use std::sync::{Arc, Mutex};

use super::feed::ProducerId;

/// Name of the source that takes the application's frames into a processing pipeline.
const APP_INPUT: &str = "customvideosrc_app_input";
/// Name of the sink that closes every producer pipeline.
const SINK_NAME: &str = "customvideosrc_producer_sink";

/// What a producer reports.
pub enum ProducerEvent {
    /// A frame (with its caps).
    Sample(gst::Sample),
    /// The producer ended (`error` false) or failed (`error` true); `reason` says why.
    Ended { reason: String, error: bool },
}

/// A running producer pipeline.
pub struct Producer {
    pub id: ProducerId,
    pub description: String,
    pipeline: gst::Pipeline,
}

impl Producer {
    /// Parses `description` (plus an optional `processor`), and sets it playing. Frames and the
    /// end are reported through `on_event` from the producer's own threads.
    pub fn start<F>(
        id: ProducerId,
        description: &str,
        processor: Option<&str>,
        on_event: F,
    ) -> Result<Producer, String>
    where
        F: Fn(ProducerId, ProducerEvent) + Send + Sync + 'static,
    {
        let launch = match processor {
            Some(p) if !p.trim().is_empty() => {
                format!("{description} ! {p} ! appsink name={SINK_NAME} caps=video/x-raw")
            }
            _ => format!("{description} ! appsink name={SINK_NAME} caps=video/x-raw"),
        };
        let mut context = gst::ParseContext::new();
        let element =
            gst::parse::launch_full(&launch, Some(&mut context), gst::ParseFlags::FATAL_ERRORS)
                .map_err(|err| explain_parse_error(description, processor, &err, &context))?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| format!("producer \"{description}\" is not a source description"))?;
        let sink = pipeline
            .by_name(SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| format!("producer \"{description}\" could not be closed with a sink"))?;
        sink.set_caps(Some(&producer_caps()));
        // Real time for non-live producers such as files; live ones are paced by themselves.
        sink.set_sync(true);
        sink.set_max_buffers(1);
        sink.set_drop(true);
        sink.set_property("enable-last-sample", false);
        sink.set_property("wait-on-eos", false);

        let on_event = Arc::new(on_event);
        let cb = on_event.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    cb(id, ProducerEvent::Sample(sample));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        let first_error: Arc<Mutex<Option<String>>> = Arc::default();
        let first_error_bus = first_error.clone();
        let bus = pipeline.bus().expect("pipelines have a bus");
        bus.set_sync_handler(move |_, msg| {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => on_event(
                    id,
                    ProducerEvent::Ended {
                        reason: "producer reached end of stream".into(),
                        error: false,
                    },
                ),
                MessageView::Error(err) => {
                    let source = msg
                        .src()
                        .map(|s| s.name().to_string())
                        .unwrap_or_else(|| "producer".into());
                    let reason = format!("producer error from {source}: {}", err.error());
                    first_error_bus
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| reason.clone());
                    on_event(
                        id,
                        ProducerEvent::Ended {
                            reason,
                            error: true,
                        },
                    );
                }
                _ => (),
            }
            gst::BusSyncReply::Drop
        });

        if pipeline.set_state(gst::State::Playing).is_err() {
            let reason = first_error
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| "its state change failed".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(format!(
                "producer \"{description}\" failed to start: {reason}"
            ));
        }
        Ok(Producer {
            id,
            description: description.to_owned(),
            pipeline,
        })
    }

    /// The `appsrc` at the head of a processing pipeline made by [`Producer::processing`].
    pub fn input(&self) -> Option<gst_app::AppSrc> {
        self.pipeline
            .by_name(APP_INPUT)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
    }

    /// A pipeline that runs the application's frames (pushed or drawn) through `processor`:
    /// frames go in through [`Producer::input`] and come out like a producer's.
    pub fn processing<F>(id: ProducerId, processor: &str, on_event: F) -> Result<Producer, String>
    where
        F: Fn(ProducerId, ProducerEvent) + Send + Sync + 'static,
    {
        Producer::start(
            id,
            &format!(
                "appsrc name={APP_INPUT} is-live=true format=time do-timestamp=true max-buffers=2 leaky-type=downstream"
            ),
            Some(processor),
            on_event,
        )
    }

    /// Stops the producer and waits for its threads.
    pub fn stop(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }

    /// Stops the producer from a helper thread (safe to call from the producer's own threads).
    pub fn stop_in_background(self) {
        std::thread::Builder::new()
            .name("customvideosrc-producer-stop".into())
            .spawn(move || self.stop())
            .map(|_| ())
            .unwrap_or_else(|e| gst::warning!(gst::CAT_DEFAULT, "cannot stop producer: {e}"));
    }
}

/// Raw video in system memory, common formats first so that producers that can choose
/// (videotestsrc, decoders) pick one the track is likely to keep.
fn producer_caps() -> gst::Caps {
    use gst_video::VideoFormat::*;
    // One structure per format: caps intersection keeps the order of structures.
    let mut caps = gst::Caps::new_empty();
    for format in [
        I420, Nv12, Yv12, Nv21, Rgba, Bgra, Rgbx, Bgrx, Argb, Abgr, Xrgb, Xbgr, Yuy2, Uyvy, Rgb,
        Bgr, Gray8,
    ] {
        caps.merge(gst_video::VideoCapsBuilder::new().format(format).build());
    }
    caps.merge(gst_video::VideoCapsBuilder::new().build());
    caps
}

fn explain_parse_error(
    description: &str,
    processor: Option<&str>,
    err: &gst::glib::Error,
    context: &gst::ParseContext,
) -> String {
    let missing = context.missing_elements();
    if !missing.is_empty() {
        return format!(
            "producer \"{description}\" needs elements that are not installed: {}",
            missing.join(", ")
        );
    }
    let msg = err.message();
    if msg.contains(SINK_NAME) {
        let what = if processor.is_some_and(|p| !p.trim().is_empty()) {
            "the producer (with its processor)"
        } else {
            "the producer"
        };
        return format!(
            "{what} \"{description}\" has no raw video src pad to take frames from ({})",
            msg.replace(SINK_NAME, "the track")
        );
    }
    match processor {
        Some(p) => format!("producer \"{description}\" or processor \"{p}\" does not parse: {msg}"),
        None => format!("producer \"{description}\" does not parse: {msg}"),
    }
}
