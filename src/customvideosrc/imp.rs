// SPDX-License-Identifier: MPL-2.0
//! `customvideosrc` implementation: the GObject glue, and the orchestration of the small
//! states that hold the rules.
//!
//! * [`Settings`] holds every property value, once.
//! * [`Feed`] (`feed.rs`): the bounded queue between the producers and the streaming thread,
//!   and which producer may fill it.
//! * [`Stream`] (`stream.rs`): the streaming thread — format, conversion, pacing ([`Pacer`](super::pacer)).
//! * `format.rs`: negotiation and the events that travel with the track; `app.rs`: pushed and
//!   drawn frames; `producer.rs`: descriptions in their own pipelines.
//!
//! Frames from the producer land in the feed (application threads and producer threads); the
//! streaming thread (`create()`) takes them out, converts them to the track format and paces
//! them. Buffers are stamped with the pipeline running time when they leave, never earlier.
//!
//! # Lock order
//!
//! A thread that holds more than one of the element's locks took them in this order:
//!
//! `stream` → `feed` → `producers` → `settings` | `out` | `clock_id` | `draw_callback`
//!
//! * `stream` belongs to the streaming thread, which holds it across its waits (clock, feed
//!   condition); otherwise only `start()`/`stop()` take it, while streaming is stopped, and
//!   `negotiate()` only tries it.
//! * `feed` is shared by pushers, producer threads and the streaming thread; `feed_cond` (frames
//!   and track controls) and `space_cond` (room for blocked pushers) wait on it. A setter whose
//!   value a waiter reads takes `feed` around the change, so that no wake-up is lost.
//! * `settings`, `out`, `clock_id` and `draw_callback` are leaves: nothing else is locked, no
//!   signal is emitted and no message is posted while one of them is held.
//!
//! Producers are stopped, signals emitted and messages posted after the feed lock is released:
//! the [`Feed`] methods return what to do, the element does it afterwards.

use gst::glib;
use gst::glib::translate::*;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use gst_video::VideoFormat;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::feed::{End, Enqueue, Feed, Frame, InputCaps, Limits, ProducerId, ProducerKind};
use super::presets;
use super::producer::{Producer, ProducerEvent};
use super::stream::Stream;
use super::{DrawCallback, OnProducerEnd, OptimizationMode, VideoRotation};
use crate::rate::Rate;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "customvideosrc",
        gst::DebugColorFlags::empty(),
        Some("Custom video track source"),
    )
});

const DEFAULT_MAX_BUFFERS: u32 = 2;
const DEFAULT_ENABLED: bool = true;
const DEFAULT_MUTED: bool = false;
/// `G_SIGNAL_TYPE_STATIC_SCOPE`: the argument is passed without taking a reference.
const SIGNAL_TYPE_STATIC_SCOPE: usize = 1;

/// Every property value (but `stats`), each held here only.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) producer: Option<String>,
    pub(super) processor: Option<String>,
    /// The `caps` property: what the application pushes or draws.
    pub(super) caps: Option<InputCaps>,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) framerate: gst::Fraction,
    pub(super) format: VideoFormat,
    pub(super) encoder_config: Option<String>,
    pub(super) bitrate_min: u32,
    pub(super) bitrate_max: u32,
    pub(super) optimization_mode: OptimizationMode,
    pub(super) rotation: VideoRotation,
    pub(super) enabled: bool,
    pub(super) muted: bool,
    pub(super) max_buffers: u32,
    pub(super) block: bool,
    pub(super) on_producer_end: OnProducerEnd,
    pub(super) track_id: Option<String>,
    pub(super) label: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            producer: None,
            processor: None,
            caps: None,
            width: 0,
            height: 0,
            framerate: gst::Fraction::new(0, 1),
            format: VideoFormat::Unknown,
            encoder_config: None,
            bitrate_min: 0,
            bitrate_max: 0,
            optimization_mode: OptimizationMode::default(),
            rotation: VideoRotation::default(),
            enabled: DEFAULT_ENABLED,
            muted: DEFAULT_MUTED,
            max_buffers: DEFAULT_MAX_BUFFERS,
            block: false,
            on_producer_end: OnProducerEnd::default(),
            track_id: None,
            label: None,
        }
    }
}

impl Settings {
    /// The queue limits (`max-buffers`, `block`).
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_buffers: self.max_buffers as usize,
            block: self.block,
        }
    }

    /// The processor description, when there is one.
    fn processor(&self) -> Option<String> {
        self.processor.clone().filter(|p| !p.trim().is_empty())
    }

    /// Applies the `encoder-config` preset `name` (`None` unsets it); an unknown name leaves
    /// everything as it was and returns the warning to give.
    fn apply_preset(&mut self, name: Option<String>) -> Result<(), String> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            self.encoder_config = None;
            return Ok(());
        };
        let p = presets::find(&name).ok_or_else(|| {
            format!(
                "customvideosrc: unknown encoder-config preset \"{name}\"; valid presets: {}",
                presets::names()
            )
        })?;
        self.encoder_config = Some(p.name.to_owned());
        self.width = p.width;
        self.height = p.height;
        self.framerate = gst::Fraction::new(p.fps, 1);
        self.bitrate_min = p.bitrate_min_kbps;
        self.bitrate_max = p.bitrate_max_kbps;
        Ok(())
    }

    /// Sets the `format` property from its caps name; an unknown name leaves it as it was
    /// and returns the warning to give.
    fn set_format(&mut self, name: Option<String>) -> Result<(), String> {
        match name.as_deref().filter(|n| !n.is_empty()) {
            None => self.format = VideoFormat::Unknown,
            Some(n) => match VideoFormat::from_string(n) {
                VideoFormat::Unknown | VideoFormat::Encoded => {
                    return Err(format!(
                        "customvideosrc: unknown video format \"{n}\" (use a caps format name such as I420, NV12, RGBA, BGRA)"
                    ));
                }
                f => self.format = f,
            },
        }
        Ok(())
    }
}

/// What the streaming thread counts for the statistics (a lock of its own, so that reading
/// the statistics never waits for the streaming thread).
#[derive(Debug, Default)]
pub(super) struct OutStats {
    frames_out: u64,
    repeated: u64,
    /// Frames out over the last second.
    fps: Rate,
    pub(super) width: u32,
    pub(super) height: u32,
}

impl OutStats {
    /// Counts a buffer that leaves.
    pub(super) fn count_out(&mut self, repeated: bool, now: Instant) {
        self.frames_out += 1;
        if repeated {
            self.repeated += 1;
        }
        self.fps.add(now, 1);
    }
}

#[derive(Default)]
pub struct CustomVideoSrc {
    pub(super) settings: Mutex<Settings>,
    pub(super) feed: Mutex<Feed>,
    feed_cond: Condvar,
    space_cond: Condvar,
    pub(super) out: Mutex<OutStats>,
    pub(super) stream: Mutex<Stream>,
    producers: Mutex<Vec<Producer>>,
    pub(super) draw_callback: Mutex<Option<Arc<DrawCallback>>>,
    pub(super) clock_id: Mutex<Option<gst::SingleShotClockId>>,
    /// The tags or the optimization mode changed: store them on the pad again.
    pub(super) events_dirty: AtomicBool,
}

impl CustomVideoSrc {
    pub(super) fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap()
    }

    pub(super) fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap()
    }

    /// Changes settings that waiting threads read (track controls, queue limits): under the
    /// feed lock, then wakes every waiter.
    fn change_live(&self, change: impl FnOnce(&mut Settings, &mut Feed)) {
        let mut feed = self.feed();
        change(&mut self.settings(), &mut feed);
        self.wake_all();
    }

    /// Waits on the feed's condition, counted so that wakers know whether anyone waits.
    pub(super) fn wait<'a>(&self, feed: MutexGuard<'a, Feed>) -> MutexGuard<'a, Feed> {
        self.wait_timeout(feed, None)
    }

    pub(super) fn wait_timeout<'a>(
        &self,
        mut feed: MutexGuard<'a, Feed>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, Feed> {
        feed.waiting += 1;
        let mut feed = match timeout {
            Some(t) => self.feed_cond.wait_timeout(feed, t).unwrap().0,
            None => self.feed_cond.wait(feed).unwrap(),
        };
        feed.waiting -= 1;
        feed
    }

    /// Wakes every waiting thread (state changes: flushing, end, properties). The caller holds
    /// the feed lock, or took it around the change.
    pub(super) fn wake_all(&self) {
        self.feed_cond.notify_all();
        self.space_cond.notify_all();
    }

    /// Wakes whom a change of the queue concerns (a notification costs a system call).
    pub(super) fn wake(&self, feed: &Feed) {
        let wake = feed.wakes(self.settings().limits());
        if wake.track {
            self.feed_cond.notify_all();
        }
        if wake.pushers {
            self.space_cond.notify_all();
        }
    }

    // ----- producers ---------------------------------------------------------------------

    /// The callback through which producers report to the element (from their own threads).
    fn producer_events(&self) -> impl Fn(ProducerId, ProducerEvent) + Send + Sync + 'static {
        let weak = self.obj().downgrade();
        move |id, ev| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_producer_event(id, ev);
            }
        }
    }

    fn start_producer(&self, id: ProducerId, description: &str) -> Result<Producer, String> {
        let processor = self.settings().processor();
        Producer::start(
            id,
            description,
            processor.as_deref(),
            self.producer_events(),
        )
    }

    /// With a `processor`, the application's frames (pushed or drawn) go through it in a
    /// processing pipeline whose output feeds the track like a producer's.
    pub(super) fn start_app_processing(&self, id: ProducerId) -> Result<(), String> {
        let Some(processor) = self.settings().processor() else {
            return Ok(());
        };
        let p = Producer::processing(id, &processor, self.producer_events())?;
        gst::info!(
            CAT,
            imp = self,
            "application frames go through \"{processor}\""
        );
        self.producers.lock().unwrap().push(p);
        Ok(())
    }

    /// The processing pipeline's input for the application producer `id`, if any.
    pub(super) fn app_processing_input(&self, id: ProducerId) -> Option<gst_app::AppSrc> {
        self.producers
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.input())
    }

    fn on_producer_event(&self, id: ProducerId, event: ProducerEvent) {
        match event {
            ProducerEvent::Sample(sample) => self.on_producer_sample(id, sample),
            ProducerEvent::Ended { reason, error } => self.producer_ended(id, reason, error),
        }
    }

    fn on_producer_sample(&self, id: ProducerId, sample: gst::Sample) {
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        let Some(caps) = sample.caps() else {
            return;
        };
        let info = match super::feed::parse_input_caps(caps) {
            Ok(info) => Arc::new(info),
            Err(e) => {
                self.producer_ended(id, e, true);
                return;
            }
        };
        let _ = self.enqueue(
            self.feed(),
            Frame {
                buffer,
                info,
                producer: id,
            },
        );
    }

    /// Hands a frame to the streaming thread (newest kept when the queue is full, or waiting
    /// for room with `block`). A producer that takes over with this frame retires the one it
    /// replaces.
    pub(super) fn enqueue(
        &self,
        mut feed: MutexGuard<'_, Feed>,
        mut frame: Frame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let producer = frame.producer;
        let mut retire = None;
        let result = loop {
            let limits = self.settings().limits();
            match feed.enqueue(frame, limits, Instant::now()) {
                Enqueue::Queued { retire: r } => {
                    retire = retire.or(r);
                    self.wake(&feed);
                    break Ok(gst::FlowSuccess::Ok);
                }
                Enqueue::Full {
                    frame: f,
                    retire: r,
                } => {
                    retire = retire.or(r);
                    frame = f;
                    feed.pushers_waiting += 1;
                    feed = self.space_cond.wait(feed).unwrap();
                    feed.pushers_waiting -= 1;
                }
                Enqueue::Refused(e) => break Err(e),
            }
        };
        drop(feed);
        if let Some(old) = retire {
            self.took_over(producer, old);
        }
        result
    }

    /// Producer `id` delivered its first frame and took over from `old`, which stops.
    pub(super) fn took_over(&self, id: ProducerId, old: ProducerId) {
        gst::info!(CAT, imp = self, "{id} took over from {old}");
        self.retire_producer(old);
    }

    /// Stops the pipeline of producer `id` (a description, or the application's processor)
    /// without blocking.
    pub(super) fn retire_producer(&self, id: ProducerId) {
        let mut producers = self.producers.lock().unwrap();
        if let Some(pos) = producers.iter().position(|p| p.id == id) {
            let p = producers.remove(pos);
            gst::debug!(CAT, imp = self, "retiring producer \"{}\"", p.description);
            p.stop_in_background();
        }
    }

    pub(super) fn producer_ended(&self, id: ProducerId, reason: String, error: bool) {
        let end = self.feed().end(id);
        match end {
            End::Ignored => (),
            End::ReplacementFailed => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Failed,
                    (
                        "The replacement producer ended before its first frame; the track keeps its current producer: {}",
                        reason
                    )
                );
                self.retire_producer(id);
            }
            End::TrackEnded => {
                self.retire_producer(id);
                gst::info!(CAT, imp = self, "track ended: {reason}");
                if error {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Failed,
                        ("The producer failed: {}", reason)
                    );
                }
                let s = gst::Structure::builder("track-ended")
                    .field("reason", &reason)
                    .field("error", error)
                    .build();
                let _ = self
                    .obj()
                    .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
                self.obj().emit_by_name::<()>("track-ended", &[&reason]);
                // Said: now the track ends (EOS after the message).
                self.feed().seal(&reason);
                self.wake_all();
            }
        }
    }

    /// Swaps the producer: a description, or `None` for the application's frames. While
    /// stopped this only sets the `producer` property. While running the new producer starts
    /// and takes over with its first frame; the property changes only once it started, so a
    /// replacement that fails leaves everything as it was.
    pub(super) fn replace_producer(
        &self,
        description: Option<String>,
    ) -> Result<(), glib::BoolError> {
        let description = description.filter(|d| !d.trim().is_empty());
        let id = {
            let mut feed = self.feed();
            if !feed.running {
                self.set_producer_stopped(&mut feed, description);
                return Ok(());
            }
            let kind = match description {
                Some(_) => ProducerKind::Description,
                None => ProducerKind::App,
            };
            feed.new_producer(kind)
        };

        let started = match &description {
            Some(desc) => {
                gst::info!(CAT, imp = self, "replacing the producer with \"{desc}\"");
                self.start_producer(id, desc).map(|p| {
                    self.producers.lock().unwrap().push(p);
                })
            }
            None => self.start_app_processing(id),
        };
        if let Err(e) = started {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "Cannot replace the producer; the track keeps its current producer: {}",
                    e
                )
            );
            return Err(glib::bool_error!("{e}"));
        }
        let stale = {
            let mut feed = self.feed();
            if feed.running {
                self.settings().producer = description;
                self.wake_all();
                feed.propose(id)
            } else {
                // The element stopped meanwhile: the new producer is only the setting.
                self.set_producer_stopped(&mut feed, description);
                Some(id)
            }
        };
        if let Some(stale) = stale {
            self.retire_producer(stale);
        }
        Ok(())
    }

    /// Sets the `producer` property while the element is stopped: the feed waits for the
    /// description, or for the application's frames.
    fn set_producer_stopped(&self, feed: &mut Feed, description: Option<String>) {
        match &description {
            Some(_) => feed.expect_description(),
            None => {
                feed.use_app();
            }
        }
        self.settings().producer = description;
    }

    fn stats(&self) -> gst::Structure {
        let now = Instant::now();
        let (frames_out, repeated, fps, width, height) = {
            let o = self.out.lock().unwrap();
            (
                o.frames_out,
                o.repeated,
                o.fps.per_second(now),
                o.width,
                o.height,
            )
        };
        let (c, ended) = {
            let feed = self.feed();
            (feed.counters(), feed.is_ended())
        };
        let (enabled, muted) = {
            let s = self.settings();
            (s.enabled, s.muted)
        };
        gst::Structure::builder("customvideosrc-stats")
            .field("frames-in", c.frames_in)
            .field("frames-out", frames_out)
            .field("dropped", c.dropped)
            .field("repeated", repeated)
            .field("fps", fps as f64)
            .field("width", width)
            .field("height", height)
            .field(
                "last-frame-age-ms",
                c.last_in
                    .map(|t| now.duration_since(t).as_millis() as i64)
                    .unwrap_or(-1),
            )
            .field("enabled", enabled)
            .field("muted", muted)
            .field("ended", ended)
            .build()
    }

    /// Gives a property warning where the user sees it: the log and a GLib warning.
    fn warn_setting(&self, msg: &str) {
        gst::warning!(CAT, imp = self, "{msg}");
        glib::g_warning!("customvideosrc", "{msg}");
    }
}

#[glib::object_subclass]
impl ObjectSubclass for CustomVideoSrc {
    const NAME: &'static str = "GstCustomVideoSrc";
    type Type = super::CustomVideoSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for CustomVideoSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("producer")
                    .nick("Producer")
                    .blurb("gst-launch description of the source that produces the frames, e.g. \"v4l2src\", \"filesrc location=clip.webm ! decodebin\", \"videotestsrc pattern=ball\". Unset: the application pushes frames (push-buffer) or draws them (draw-frame). Setting it while playing replaces the producer live")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("processor")
                    .nick("Processor")
                    .blurb("gst-launch description of filters applied to every frame before it joins the track (pre-processing), e.g. \"videobalance saturation=1.4\"; pushed and drawn frames go through it in a pipeline of their own")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Caps>("caps")
                    .nick("Caps")
                    .blurb("Caps of the frames the application pushes or draws (fixed raw video in system memory: I420, NV12, RGBA, BGRA, ... any format GStreamer converts). Draw default: BGRA at the track size (640x480 if unset)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("width")
                    .nick("Width")
                    .blurb("Track width in pixels; 0 follows the producer's first frame. Frames of another size are scaled")
                    .maximum(16384)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("height")
                    .nick("Height")
                    .blurb("Track height in pixels; 0 follows the producer's first frame. Frames of another size are scaled")
                    .maximum(16384)
                    .mutable_ready()
                    .build(),
                gst::ParamSpecFraction::builder("framerate")
                    .nick("Frame rate")
                    .blurb("Constant track frame rate: the last frame is repeated when the producer stalls, surplus frames are dropped. 0/1: frames leave as they arrive (variable rate, no added latency)")
                    .minimum(gst::Fraction::new(0, 1))
                    .maximum(gst::Fraction::new(240, 1))
                    .default_value(gst::Fraction::new(0, 1))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("format")
                    .nick("Format")
                    .blurb("Track pixel format as written in caps (I420, NV12, RGBA, BGRA, ...); unset follows the producer's first frame")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("encoder-config")
                    .nick("Encoder configuration preset")
                    .blurb(&*Box::leak(format!("Call-SDK style preset that sets width, height, framerate, bitrate-min and bitrate-max: {}", presets::names()).into_boxed_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate-min")
                    .nick("Minimum bitrate")
                    .blurb("Minimum send bitrate in kbit/s, sent downstream as the minimum-bitrate tag (0: unset)")
                    .maximum(1_000_000)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("bitrate-max")
                    .nick("Maximum bitrate")
                    .blurb("Maximum send bitrate in kbit/s, sent downstream as the maximum-bitrate tag (0: unset)")
                    .maximum(1_000_000)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder::<OptimizationMode>("optimization-mode")
                    .nick("Optimization mode")
                    .blurb("What to keep under congestion, sent downstream as the sticky custom event customvideo/optimization-mode")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder::<VideoRotation>("rotation")
                    .nick("Rotation")
                    .blurb("Clockwise rotation applied to every frame (0, 90, 180, 270); set it before the caps are negotiated")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("enabled")
                    .nick("Enabled")
                    .blurb("false: no frames leave, the track is paused (frames that arrive meanwhile are dropped but the newest)")
                    .default_value(DEFAULT_ENABLED)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("muted")
                    .nick("Muted")
                    .blurb("true: black frames leave instead of the producer's frames, at the same pace")
                    .default_value(DEFAULT_MUTED)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-buffers")
                    .nick("Maximum queued frames")
                    .blurb("Frames held between the producer and the track; when full the oldest is dropped (newest wins) and counted in stats")
                    .minimum(1)
                    .maximum(1000)
                    .default_value(DEFAULT_MAX_BUFFERS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("block")
                    .nick("Block")
                    .blurb("When the queue is full, make push-buffer wait for room instead of dropping the oldest frame (backpressure into the producer; for throughput rather than real time)")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder::<OnProducerEnd>("on-producer-end")
                    .nick("On producer end")
                    .blurb("What the track does when its producer ends or fails")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("track-id")
                    .nick("Track id")
                    .blurb("Stream id of the track (stream-start event); unset: generated")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("label")
                    .nick("Label")
                    .blurb("Human-readable track label, sent downstream as the title tag")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Track statistics: frames-in, frames-out, dropped, repeated, fps (frames out in the last second), width, height, last-frame-age-ms (-1 before any frame), enabled, muted, ended")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            let static_buffer: glib::Type = unsafe {
                from_glib(gst::Buffer::static_type().into_glib() | SIGNAL_TYPE_STATIC_SCOPE)
            };
            vec![
                glib::subclass::Signal::builder("push-buffer")
                    .param_types([gst::Buffer::static_type()])
                    .return_type::<gst::FlowReturn>()
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::CustomVideoSrc>().expect("signal arg");
                        let ret = match args[1].get::<Option<gst::Buffer>>() {
                            Ok(Some(buffer)) => obj.imp().push(buffer, None),
                            _ => Err(gst::FlowError::Error),
                        };
                        Some(gst::FlowReturn::from(ret).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("push-sample")
                    .param_types([gst::Sample::static_type()])
                    .return_type::<gst::FlowReturn>()
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::CustomVideoSrc>().expect("signal arg");
                        let ret = match args[1].get::<Option<gst::Sample>>() {
                            Ok(Some(sample)) => obj.imp().push_sample(&sample),
                            _ => Err(gst::FlowError::Error),
                        };
                        Some(gst::FlowReturn::from(ret).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("end-of-stream")
                    .return_type::<gst::FlowReturn>()
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::CustomVideoSrc>().expect("signal arg");
                        Some(gst::FlowReturn::from(obj.imp().app_end_of_stream()).to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("replace-producer")
                    .param_types([String::static_type()])
                    .return_type::<bool>()
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::CustomVideoSrc>().expect("signal arg");
                        let desc = args[1].get::<Option<String>>().ok().flatten();
                        Some(obj.imp().replace_producer(desc).is_ok().to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("draw-frame")
                    .param_types([static_buffer, u64::static_type()])
                    .return_type::<bool>()
                    .run_last()
                    .accumulator(|_hint, acc, value| {
                        let drawn = value.get::<bool>().unwrap_or(false);
                        if drawn {
                            std::ops::ControlFlow::Break(drawn.to_value())
                        } else {
                            std::ops::ControlFlow::Continue(acc)
                        }
                    })
                    .build(),
                glib::subclass::Signal::builder("track-ended")
                    .param_types([String::static_type()])
                    .run_last()
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
        obj.set_do_timestamp(false);

        // Give the stream the track id when one is set.
        let weak = obj.downgrade();
        obj.src_pad()
            .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(gst::PadProbeData::Event(ev)) = &mut info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                let track_id = obj.imp().settings().track_id.clone();
                if let Some(id) = track_id
                    && let Some(renamed) = super::format::with_stream_id(ev, &id)
                {
                    *ev = renamed;
                }
                gst::PadProbeReturn::Ok
            });
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        gst::debug!(CAT, imp = self, "setting {name} to {value:?}");
        match name {
            "producer" => {
                let desc = value
                    .get::<Option<String>>()
                    .expect("type checked upstream");
                let _ = self.replace_producer(desc);
                return;
            }
            "enabled" => {
                let v = value.get().expect("type checked upstream");
                self.change_live(|s, _| s.enabled = v);
                return;
            }
            "muted" => {
                let v = value.get().expect("type checked upstream");
                self.change_live(|s, _| s.muted = v);
                return;
            }
            "block" => {
                let v = value.get().expect("type checked upstream");
                self.change_live(|s, _| s.block = v);
                return;
            }
            "max-buffers" => {
                let n: u32 = value.get().expect("type checked upstream");
                self.change_live(|s, feed| {
                    s.max_buffers = n;
                    feed.trim(n as usize);
                });
                return;
            }
            "on-producer-end" => {
                let v = value.get().expect("type checked upstream");
                self.change_live(|s, _| s.on_producer_end = v);
                return;
            }
            _ => (),
        }
        let mut settings = self.settings();
        let mut warning = None;
        match name {
            "processor" => settings.processor = value.get().expect("type checked upstream"),
            "caps" => {
                let caps = value
                    .get::<Option<gst::Caps>>()
                    .expect("type checked upstream");
                settings.caps = caps.map(InputCaps::new);
            }
            "width" => settings.width = value.get().expect("type checked upstream"),
            "height" => settings.height = value.get().expect("type checked upstream"),
            "framerate" => settings.framerate = value.get().expect("type checked upstream"),
            "format" => {
                warning = settings
                    .set_format(value.get().expect("type checked upstream"))
                    .err()
            }
            "encoder-config" => {
                warning = settings
                    .apply_preset(value.get().expect("type checked upstream"))
                    .err()
            }
            "bitrate-min" => settings.bitrate_min = value.get().expect("type checked upstream"),
            "bitrate-max" => settings.bitrate_max = value.get().expect("type checked upstream"),
            "optimization-mode" => {
                settings.optimization_mode = value.get().expect("type checked upstream")
            }
            "rotation" => settings.rotation = value.get().expect("type checked upstream"),
            "track-id" => settings.track_id = value.get().expect("type checked upstream"),
            "label" => settings.label = value.get().expect("type checked upstream"),
            _ => unimplemented!("property {name}"),
        }
        drop(settings);
        if let Some(msg) = warning {
            self.warn_setting(&msg);
        }
        if matches!(
            name,
            "bitrate-min" | "bitrate-max" | "optimization-mode" | "label" | "encoder-config"
        ) {
            self.events_dirty.store(true, Ordering::SeqCst);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let settings = self.settings();
        match pspec.name() {
            "producer" => settings.producer.to_value(),
            "processor" => settings.processor.to_value(),
            "caps" => settings.caps.as_ref().map(|i| i.caps.clone()).to_value(),
            "width" => settings.width.to_value(),
            "height" => settings.height.to_value(),
            "framerate" => settings.framerate.to_value(),
            "format" => (settings.format != VideoFormat::Unknown)
                .then(|| settings.format.to_str().to_string())
                .to_value(),
            "encoder-config" => settings.encoder_config.to_value(),
            "bitrate-min" => settings.bitrate_min.to_value(),
            "bitrate-max" => settings.bitrate_max.to_value(),
            "optimization-mode" => settings.optimization_mode.to_value(),
            "rotation" => settings.rotation.to_value(),
            "enabled" => settings.enabled.to_value(),
            "muted" => settings.muted.to_value(),
            "max-buffers" => settings.max_buffers.to_value(),
            "block" => settings.block.to_value(),
            "on-producer-end" => settings.on_producer_end.to_value(),
            "track-id" => settings.track_id.to_value(),
            "label" => settings.label.to_value(),
            name => unimplemented!("property {name}"),
        }
    }
}

impl GstObjectImpl for CustomVideoSrc {}

impl ElementImpl for CustomVideoSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Custom video track source",
                "Source/Video",
                "Wraps any frame producer (pushed frames, a draw callback, any source description) as one steady live video track with track controls and statistics",
                "gst-plugin-customvideo developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new().build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for CustomVideoSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let description = self.settings().producer.clone();
        let id = {
            let mut feed = self.feed();
            feed.start();
            match description {
                Some(_) => feed.start_description(),
                None => feed.use_app(),
            }
        };
        let started = match &description {
            Some(desc) => self.start_producer(id, desc).map(|producer| {
                gst::info!(CAT, imp = self, "producer \"{desc}\" started");
                self.producers.lock().unwrap().push(producer);
            }),
            None => self.start_app_processing(id),
        };
        started.map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        *self.stream.lock().unwrap() = Stream::default();
        self.events_dirty.store(true, Ordering::SeqCst);
        self.feed().running = true;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let producers = std::mem::take(&mut *self.producers.lock().unwrap());
        for p in producers {
            p.stop();
        }
        let description = self.settings().producer.is_some();
        {
            let mut feed = self.feed();
            feed.stop(description);
            self.wake_all();
        }
        *self.out.lock().unwrap() = OutStats::default();
        // Dropping the stream state releases the draw pool.
        *self.stream.lock().unwrap() = Stream::default();
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // The caps are chosen in create(), once the producer's first frame is known; after
        // that they are kept as long as downstream accepts them. While create() holds the
        // stream it negotiates itself.
        let Ok(mut stream) = self.stream.try_lock() else {
            return Ok(());
        };
        self.renegotiate(&mut stream)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "unlock");
        let mut feed = self.feed();
        feed.flushing = true;
        self.wake_all();
        if let Some(id) = self.clock_id.lock().unwrap().take() {
            id.unschedule();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "unlock stop");
        self.feed().flushing = false;
        Ok(())
    }
}

impl PushSrcImpl for CustomVideoSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        self.next_buffer().map(CreateSuccess::NewBuffer)
    }
}
