// SPDX-License-Identifier: MPL-2.0
//! `customvideosrc` implementation.
//!
//! Frames from the producer land in a small bounded queue (`Feed`, shared with the application
//! threads and producer threads); the streaming thread (`create()`) takes them out, converts
//! them to the track format and paces them: at a constant rate when the track has a frame
//! rate (newest frame wins, the last frame is repeated on stalls), as they come otherwise.
//! Buffers are stamped with the pipeline running time when they leave, never earlier.

use gst::glib;
use gst::glib::translate::*;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use gst_video::{VideoFormat, VideoInfo};

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::convert::{self, Converter, Rotation};
use super::presets;
use super::producer::{Producer, ProducerEvent};
use super::{DrawCallback, OnProducerEnd, OptimizationMode, VideoRotation};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "customvideosrc",
        gst::DebugColorFlags::empty(),
        Some("Custom video track source"),
    )
});

const DEFAULT_MAX_BUFFERS: u32 = 2;
const DEFAULT_ENABLED: bool = true;
const DEFAULT_MUTED: bool = false;
const DEFAULT_DRAW_WIDTH: u32 = 640;
const DEFAULT_DRAW_HEIGHT: u32 = 480;
const DEFAULT_DRAW_FPS: i32 = 30;
const DEFAULT_DRAW_FORMAT: VideoFormat = VideoFormat::Bgra;
/// How often an ended track without frame rate repeats its black or frozen frame.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// `G_SIGNAL_TYPE_STATIC_SCOPE`: the argument is passed without taking a reference.
const SIGNAL_TYPE_STATIC_SCOPE: usize = 1;

#[derive(Debug, Clone)]
struct Settings {
    producer: Option<String>,
    processor: Option<String>,
    width: u32,
    height: u32,
    framerate: gst::Fraction,
    format: VideoFormat,
    encoder_config: Option<String>,
    bitrate_min: u32,
    bitrate_max: u32,
    optimization_mode: OptimizationMode,
    rotation: VideoRotation,
    max_buffers: u32,
    on_producer_end: OnProducerEnd,
    track_id: Option<String>,
    label: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            producer: None,
            processor: None,
            width: 0,
            height: 0,
            framerate: gst::Fraction::new(0, 1),
            format: VideoFormat::Unknown,
            encoder_config: None,
            bitrate_min: 0,
            bitrate_max: 0,
            optimization_mode: OptimizationMode::default(),
            rotation: VideoRotation::default(),
            max_buffers: DEFAULT_MAX_BUFFERS,
            on_producer_end: OnProducerEnd::default(),
            track_id: None,
            label: None,
        }
    }
}

/// One frame from a producer, with the layout it came in.
struct Frame {
    buffer: gst::Buffer,
    info: Arc<VideoInfo>,
    generation: u64,
}

/// The caps of frames the application pushes or draws.
#[derive(Clone)]
struct InputCaps {
    caps: gst::Caps,
    info: Result<Arc<VideoInfo>, String>,
}

impl InputCaps {
    fn new(caps: gst::Caps) -> Self {
        let info = parse_input_caps(&caps).map(Arc::new);
        InputCaps { caps, info }
    }
}

fn parse_input_caps(caps: &gst::CapsRef) -> Result<VideoInfo, String> {
    let s = caps
        .structure(0)
        .ok_or_else(|| format!("caps {caps} are empty"))?;
    if s.name() != "video/x-raw" {
        return Err(format!(
            "caps {caps} cannot be converted to the track: only raw video (video/x-raw) is accepted"
        ));
    }
    if let Some(features) = caps.features(0)
        && !features.is_any()
        && !features.is_empty()
        && !features.contains(gst::CAPS_FEATURE_MEMORY_SYSTEM_MEMORY)
    {
        return Err(format!(
            "caps {caps} cannot be converted to the track: only system memory is accepted"
        ));
    }
    let info = VideoInfo::from_caps(caps)
        .map_err(|_| format!("caps {caps} are not complete, fixed raw video caps"))?;
    convert::check_input(&info).map_err(|e| e.0)?;
    Ok(info)
}

/// What the streaming thread counts (its own lock: the feed lock is shared with pushers).
#[derive(Default)]
struct OutStats {
    frames_out: u64,
    repeated: u64,
    out_times: VecDeque<Instant>,
}

#[derive(Default)]
struct Counters {
    frames_in: u64,
    dropped: u64,
    last_in: Option<Instant>,
    width: u32,
    height: u32,
}

/// What producers hand to the streaming thread, and the producer bookkeeping.
struct Feed {
    queue: VecDeque<Frame>,
    max_buffers: usize,
    /// Pushes wait for room instead of dropping the oldest frame.
    block: bool,
    /// Threads waiting on the feed's condition.
    waiting: u32,
    /// Pushers waiting for room (`block`).
    pushers_waiting: u32,
    flushing: bool,
    running: bool,
    enabled: bool,
    muted: bool,
    /// Generation of the producer whose frames the track shows.
    active: u64,
    /// Generation of a producer that replaces the active one at its first frame.
    pending: Option<u64>,
    next_generation: u64,
    /// Generation of the application producer (push/draw), while it is active or pending.
    app_generation: Option<u64>,
    input: Option<InputCaps>,
    /// Why the active producer ended, once it has.
    ended: Option<String>,
    counters: Counters,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            queue: VecDeque::new(),
            max_buffers: DEFAULT_MAX_BUFFERS as usize,
            block: false,
            waiting: 0,
            pushers_waiting: 0,
            flushing: false,
            running: false,
            enabled: DEFAULT_ENABLED,
            muted: DEFAULT_MUTED,
            active: 1,
            pending: None,
            next_generation: 2,
            app_generation: Some(1),
            input: None,
            ended: None,
            counters: Counters::default(),
        }
    }
}

impl Feed {
    fn new_generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    /// Makes `generation` the active producer; returns the one it replaces.
    fn promote(&mut self, generation: u64) -> u64 {
        let old = self.active;
        self.active = generation;
        self.pending = None;
        self.ended = None;
        if self.app_generation != Some(generation) {
            self.app_generation = None;
        }
        let before = self.queue.len();
        self.queue.retain(|f| f.generation == generation);
        self.counters.dropped += (before - self.queue.len()) as u64;
        old
    }

    fn trim_to_newest(&mut self) -> Option<Frame> {
        let newest = self.queue.pop_back();
        self.counters.dropped += self.queue.len() as u64;
        self.queue.clear();
        newest
    }
}

/// State of the streaming thread.
#[derive(Default)]
struct Stream {
    out_info: Option<VideoInfo>,
    fps: Option<gst::Fraction>,
    converter: Converter,
    last: Option<gst::Buffer>,
    /// The buffer being stamped is a new frame to keep as `last`.
    remember: bool,
    next_rt: Option<gst::ClockTime>,
    last_pts: Option<gst::ClockTime>,
    draw_info: Option<VideoInfo>,
    draw_pool: Option<gst::BufferPool>,
    keepalive_due: Option<Instant>,
}

#[derive(Default)]
pub struct CustomVideoSrc {
    settings: Mutex<Settings>,
    feed: Mutex<Feed>,
    feed_cond: Condvar,
    space_cond: Condvar,
    out_stats: Mutex<OutStats>,
    stream: Mutex<Stream>,
    producers: Mutex<Vec<Producer>>,
    draw_callback: Mutex<Option<Arc<DrawCallback>>>,
    clock_id: Mutex<Option<gst::SingleShotClockId>>,
    events_dirty: std::sync::atomic::AtomicBool,
}

impl CustomVideoSrc {
    fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap()
    }

    /// Waits on the feed's condition, counted so that wakers know whether anyone waits.
    fn wait<'a>(&self, mut feed: MutexGuard<'a, Feed>) -> MutexGuard<'a, Feed> {
        feed.waiting += 1;
        let mut feed = self.feed_cond.wait(feed).unwrap();
        feed.waiting -= 1;
        feed
    }

    fn wait_timeout<'a>(
        &self,
        mut feed: MutexGuard<'a, Feed>,
        timeout: Duration,
    ) -> MutexGuard<'a, Feed> {
        feed.waiting += 1;
        let mut feed = self.feed_cond.wait_timeout(feed, timeout).unwrap().0;
        feed.waiting -= 1;
        feed
    }

    /// Wakes every waiting thread (state changes: flushing, end, properties).
    fn wake_all(&self) {
        self.feed_cond.notify_all();
        self.space_cond.notify_all();
    }

    /// Wakes the waiters, if any (a notification costs a system call), and blocked pushers
    /// once the queue is half empty.
    fn wake(&self, feed: &Feed) {
        if feed.waiting > 0 {
            self.feed_cond.notify_all();
        }
        if feed.pushers_waiting > 0 && feed.queue.len() <= feed.max_buffers / 2 {
            self.space_cond.notify_all();
        }
    }

    // ----- producers ---------------------------------------------------------------------

    fn start_producer(&self, generation: u64, description: &str) -> Result<Producer, String> {
        let processor = self.settings.lock().unwrap().processor.clone();
        let weak = self.obj().downgrade();
        Producer::start(
            generation,
            description,
            processor.as_deref(),
            move |g, ev| {
                if let Some(obj) = weak.upgrade() {
                    obj.imp().on_producer_event(g, ev);
                }
            },
        )
    }

    /// With a `processor`, the application's frames (pushed or drawn) go through it in a
    /// processing pipeline whose output feeds the track like a producer's.
    fn start_app_processing(&self, generation: u64) -> Result<(), String> {
        let Some(processor) = self
            .settings
            .lock()
            .unwrap()
            .processor
            .clone()
            .filter(|p| !p.trim().is_empty())
        else {
            return Ok(());
        };
        let weak = self.obj().downgrade();
        let p = Producer::processing(generation, &processor, move |g, ev| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().on_producer_event(g, ev);
            }
        })?;
        gst::info!(
            CAT,
            imp = self,
            "application frames go through \"{processor}\""
        );
        self.producers.lock().unwrap().push(p);
        Ok(())
    }

    /// The processing pipeline's input for the application producer `generation`, if any.
    fn app_processing_input(&self, generation: u64) -> Option<gst_app::AppSrc> {
        self.producers
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.generation == generation)
            .and_then(|p| p.input())
    }

    /// Hands an application frame to the processor. Its output reaches the track later.
    fn process_app_frame(
        &self,
        input: &gst_app::AppSrc,
        buffer: gst::Buffer,
        info: &VideoInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let caps = info.to_caps().map_err(|_| gst::FlowError::NotNegotiated)?;
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        input.push_sample(&sample)
    }

    fn on_producer_event(&self, generation: u64, event: ProducerEvent) {
        match event {
            ProducerEvent::Sample(sample) => self.on_producer_sample(generation, sample),
            ProducerEvent::Ended { reason, error } => {
                self.producer_ended(generation, reason, error)
            }
        }
    }

    fn on_producer_sample(&self, generation: u64, sample: gst::Sample) {
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        let Some(caps) = sample.caps() else {
            return;
        };
        let info = match parse_input_caps(caps) {
            Ok(info) => Arc::new(info),
            Err(e) => {
                self.producer_ended(generation, e, true);
                return;
            }
        };
        let _ = self.enqueue(Frame {
            buffer,
            info,
            generation,
        });
    }

    /// Hands a frame to the streaming thread (newest kept when the queue is full).
    fn enqueue(&self, frame: Frame) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.enqueue_locked(self.feed(), frame)
    }

    fn enqueue_locked(
        &self,
        mut feed: MutexGuard<'_, Feed>,
        frame: Frame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut replaced = None;
        if feed.pending == Some(frame.generation) {
            replaced = Some(feed.promote(frame.generation));
            gst::info!(CAT, imp = self, "producer {} took over", frame.generation);
        } else if frame.generation != feed.active {
            return Err(gst::FlowError::NotLinked);
        }
        if feed.ended.is_some() {
            return Err(gst::FlowError::Eos);
        }
        while feed.queue.len() >= feed.max_buffers {
            if feed.block && !feed.flushing {
                // Backpressure: wait until the track has taken half of the queue, so that
                // pusher and track do not wake each other for every frame.
                feed.pushers_waiting += 1;
                feed = self.space_cond.wait(feed).unwrap();
                feed.pushers_waiting -= 1;
                if frame.generation != feed.active {
                    return Err(gst::FlowError::NotLinked);
                }
                if feed.ended.is_some() {
                    return Err(gst::FlowError::Eos);
                }
                continue;
            }
            feed.queue.pop_front();
            feed.counters.dropped += 1;
        }
        feed.queue.push_back(frame);
        feed.counters.frames_in += 1;
        feed.counters.last_in = Some(Instant::now());
        self.wake(&feed);
        drop(feed);
        if let Some(old) = replaced {
            self.retire_producer(old);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Stops the producer of `generation` (if it is a description) without blocking.
    fn retire_producer(&self, generation: u64) {
        let mut producers = self.producers.lock().unwrap();
        if let Some(pos) = producers.iter().position(|p| p.generation == generation) {
            let p = producers.remove(pos);
            gst::debug!(CAT, imp = self, "retiring producer \"{}\"", p.description);
            p.stop_in_background();
        }
    }

    fn producer_ended(&self, generation: u64, reason: String, error: bool) {
        let mut feed = self.feed();
        if feed.pending == Some(generation) {
            feed.pending = None;
            if feed.app_generation == Some(generation) {
                feed.app_generation = None;
            }
            drop(feed);
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Failed,
                (
                    "The replacement producer ended before its first frame; the track keeps its current producer: {}",
                    reason
                )
            );
            self.retire_producer(generation);
            return;
        }
        if generation != feed.active || feed.ended.is_some() {
            return;
        }
        feed.ended = Some(reason.clone());
        self.wake_all();
        drop(feed);
        self.retire_producer(generation);

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
    }

    pub(super) fn replace_producer(
        &self,
        description: Option<String>,
    ) -> Result<(), glib::BoolError> {
        let description = description.filter(|d| !d.trim().is_empty());
        let running = self.feed().running;
        self.settings.lock().unwrap().producer = description.clone();
        if !running {
            let mut feed = self.feed();
            match &description {
                Some(_) => {
                    feed.app_generation = None;
                    feed.active = 0;
                    feed.queue.clear();
                }
                None if feed.app_generation.is_none() => {
                    let g = feed.new_generation();
                    feed.app_generation = Some(g);
                    feed.active = g;
                }
                None => (),
            }
            return Ok(());
        }

        let generation = self.feed().new_generation();
        if let Some(desc) = &description {
            gst::info!(CAT, imp = self, "replacing the producer with \"{desc}\"");
            let producer = match self.start_producer(generation, desc) {
                Ok(p) => p,
                Err(e) => {
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
            };
            self.producers.lock().unwrap().push(producer);
        }
        if description.is_none()
            && let Err(e) = self.start_app_processing(generation)
        {
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{}", e));
            return Err(glib::bool_error!("{e}"));
        }
        let stale = {
            let mut feed = self.feed();
            let stale = feed.pending.replace(generation);
            if description.is_none() {
                feed.app_generation = Some(generation);
            }
            self.wake_all();
            stale
        };
        if let Some(stale) = stale {
            self.retire_producer(stale);
        }
        Ok(())
    }

    // ----- the application producer ------------------------------------------------------

    pub(super) fn push(
        &self,
        buffer: gst::Buffer,
        caps: Option<&gst::Caps>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut feed = self.feed();
        if let Some(caps) = caps
            && feed.input.as_ref().is_none_or(|i| &i.caps != caps)
        {
            feed.input = Some(InputCaps::new(caps.clone()));
        }
        let Some(generation) = feed.app_generation else {
            gst::debug!(
                CAT,
                imp = self,
                "refusing pushed frame: a producer description feeds the track"
            );
            return Err(gst::FlowError::NotLinked);
        };
        if generation == feed.active && feed.ended.is_some() {
            return Err(gst::FlowError::Eos);
        }
        let info = match feed.input.as_ref().map(|i| i.info.clone()) {
            None => {
                drop(feed);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("A frame was pushed before its caps are known: set the caps property, or push a sample that carries caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            Some(Err(e)) => {
                drop(feed);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Pushed frames cannot be converted to the track: {}", e)
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            Some(Ok(info)) => info,
        };
        if let Err(e) = convert::check_buffer(&buffer, &info) {
            drop(feed);
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Pushed frame does not match its caps: {}", e)
            );
            return Err(gst::FlowError::Error);
        }
        gst::trace!(CAT, imp = self, "pushed {buffer:?}");
        if feed.running
            && let Some(input) = self.app_processing_input(generation)
        {
            drop(feed);
            return self.process_app_frame(&input, buffer, &info);
        }
        self.enqueue_locked(
            feed,
            Frame {
                buffer,
                info,
                generation,
            },
        )
    }

    pub(super) fn push_sample(
        &self,
        sample: &gst::Sample,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(buffer) = sample.buffer_owned() else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Pushed sample has no buffer")
            );
            return Err(gst::FlowError::Error);
        };
        self.push(buffer, sample.caps_owned().as_ref())
    }

    pub(super) fn app_end_of_stream(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let generation = {
            let feed = self.feed();
            match feed.app_generation {
                Some(g) if g == feed.active && feed.ended.is_some() => {
                    return Err(gst::FlowError::Eos);
                }
                Some(g) => g,
                None => return Err(gst::FlowError::NotLinked),
            }
        };
        self.producer_ended(
            generation,
            "end of stream from the application".into(),
            false,
        );
        Ok(gst::FlowSuccess::Ok)
    }

    pub(super) fn set_draw_callback(&self, callback: Option<Arc<DrawCallback>>) {
        *self.draw_callback.lock().unwrap() = callback;
        self.wake_all();
    }

    fn draw_signal_id() -> glib::subclass::SignalId {
        glib::subclass::SignalId::lookup("draw-frame", super::CustomVideoSrc::static_type())
            .expect("draw-frame is registered")
    }

    fn can_draw(&self) -> bool {
        if self.draw_callback.lock().unwrap().is_some() {
            return true;
        }
        unsafe {
            from_glib(glib::gobject_ffi::g_signal_has_handler_pending(
                self.obj().as_ptr() as *mut _,
                Self::draw_signal_id().into_glib(),
                0,
                glib::ffi::GFALSE,
            ))
        }
    }

    /// Asks the application for a frame; `None` when it drew nothing.
    fn draw(&self, stream: &mut Stream, rt: gst::ClockTime) -> Option<Frame> {
        let generation = self.feed().app_generation?;
        let info = stream.draw_info.clone()?;
        let pool = stream.draw_pool.as_ref()?;
        let mut buffer = match pool.acquire_buffer(None) {
            Ok(b) => b,
            Err(err) => {
                gst::warning!(CAT, imp = self, "no buffer to draw into: {err:?}");
                return None;
            }
        };
        let callback = self.draw_callback.lock().unwrap().clone();
        let drawn = if let Some(cb) = callback {
            let bufref = buffer.get_mut()?;
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(bufref, &info).ok()?;
            cb(&mut frame, rt)
        } else {
            let mut ret: glib::ffi::gboolean = glib::ffi::GFALSE;
            unsafe {
                // The buffer goes out with static scope so that handlers can map it writable.
                glib::gobject_ffi::g_signal_emit(
                    self.obj().as_ptr() as *mut _,
                    Self::draw_signal_id().into_glib(),
                    0,
                    buffer.as_mut_ptr(),
                    rt.nseconds(),
                    &mut ret as *mut glib::ffi::gboolean,
                );
            }
            ret != glib::ffi::GFALSE
        };
        if !drawn {
            return None;
        }
        if let Some(input) = self.app_processing_input(generation) {
            // The processed frame joins the queue; the track takes it from there.
            let _ = self.process_app_frame(&input, buffer, &info);
            return None;
        }
        let mut feed = self.feed();
        let mut replaced = None;
        if feed.pending == Some(generation) {
            replaced = Some(feed.promote(generation));
        } else if feed.active != generation {
            return None;
        }
        feed.counters.frames_in += 1;
        feed.counters.last_in = Some(Instant::now());
        drop(feed);
        if let Some(old) = replaced {
            self.retire_producer(old);
        }
        Some(Frame {
            buffer,
            info: Arc::new(info),
            generation,
        })
    }

    // ----- output format -----------------------------------------------------------------

    /// The frame rate the track runs at before negotiation: the property, or the draw rate
    /// when frames are drawn, or 0/1 (frames leave as they come).
    fn wanted_fps(&self, settings: &Settings, drawing: bool) -> gst::Fraction {
        if settings.framerate.numer() > 0 {
            return settings.framerate;
        }
        if drawing {
            if let Some(fps) = self.draw_caps_info(settings).map(|i| i.fps())
                && fps.numer() > 0
            {
                return fps;
            }
            return gst::Fraction::new(DEFAULT_DRAW_FPS, 1);
        }
        gst::Fraction::new(0, 1)
    }

    fn draw_caps_info(&self, settings: &Settings) -> Option<VideoInfo> {
        if let Some(Ok(info)) = self.feed().input.as_ref().map(|i| i.info.clone()) {
            return Some((*info).clone());
        }
        let w = if settings.width > 0 {
            settings.width
        } else {
            DEFAULT_DRAW_WIDTH
        };
        let h = if settings.height > 0 {
            settings.height
        } else {
            DEFAULT_DRAW_HEIGHT
        };
        VideoInfo::builder(DEFAULT_DRAW_FORMAT, w, h).build().ok()
    }

    /// Chooses the output caps from the properties, the producer's frames and what
    /// downstream accepts, and sets them. They stay for the life of the stream.
    fn negotiate_output(
        &self,
        stream: &mut Stream,
        producer: Option<&VideoInfo>,
        drawing: bool,
    ) -> Result<(), gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let rotation = Rotation::from(settings.rotation);
        let from_producer = producer.map(|i| rotation.rotated_size(i.width(), i.height()));
        let width = if settings.width > 0 {
            settings.width
        } else if let Some((w, _)) = from_producer {
            w
        } else {
            return Ok(());
        };
        let height = if settings.height > 0 {
            settings.height
        } else if let Some((_, h)) = from_producer {
            h
        } else {
            return Ok(());
        };
        let format = if settings.format != VideoFormat::Unknown {
            settings.format
        } else {
            producer.map(|i| i.format()).unwrap_or(VideoFormat::I420)
        };
        let fps = self.wanted_fps(&settings, drawing);

        let mut template = gst_video::VideoCapsBuilder::new();
        if settings.format != VideoFormat::Unknown {
            template = template.format(settings.format);
        }
        if settings.width > 0 {
            template = template.width(settings.width as i32);
        }
        if settings.height > 0 {
            template = template.height(settings.height as i32);
        }
        if settings.framerate.numer() > 0 {
            template = template.framerate(settings.framerate);
        }
        let template = template.build();
        let peer = self.obj().src_pad().peer_query_caps(Some(&template));
        if peer.is_empty() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                (
                    "Downstream accepts no format the track can produce: track format {}, downstream accepts {}",
                    template,
                    self.obj().src_pad().peer_query_caps(None)
                )
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        let preferred = gst_video::VideoCapsBuilder::new()
            .format(format)
            .width(width as i32)
            .height(height as i32)
            .framerate(fps)
            .pixel_aspect_ratio(gst::Fraction::new(1, 1))
            .build();
        let caps = if peer.can_intersect(&preferred) {
            let mut caps = peer.intersect(&preferred);
            caps.fixate();
            caps
        } else {
            let mut caps = peer.clone();
            caps.truncate();
            {
                let caps = caps.make_mut();
                let s = caps.structure_mut(0).unwrap();
                s.fixate_field_nearest_int("width", width as i32);
                s.fixate_field_nearest_int("height", height as i32);
                s.fixate_field_nearest_fraction("framerate", fps);
                s.fixate_field_nearest_fraction("pixel-aspect-ratio", gst::Fraction::new(1, 1));
                s.fixate_field_str("format", format.to_str());
            }
            caps.fixate();
            caps
        };
        let info = VideoInfo::from_caps(&caps).map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Cannot use caps {}", caps)
            );
            gst::FlowError::NotNegotiated
        })?;
        gst::info!(CAT, imp = self, "track caps {caps}");
        if self.obj().set_caps(&caps).is_err() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Downstream refused the track caps {}", caps)
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        stream.fps = Some(info.fps());
        {
            let mut feed = self.feed();
            feed.counters.width = info.width();
            feed.counters.height = info.height();
        }
        stream.out_info = Some(info);
        stream.next_rt = None;
        self.events_dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn setup_draw(&self, stream: &mut Stream) -> Result<(), gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(mut info) = self.draw_caps_info(&settings) else {
            return Ok(());
        };
        if stream.draw_info.as_ref() == Some(&info) {
            return Ok(());
        }
        let fps = self.wanted_fps(&settings, true);
        info = VideoInfo::builder_from_info(&info)
            .fps(fps)
            .build()
            .map_err(|_| gst::FlowError::NotNegotiated)?;
        let pool = gst_video::VideoBufferPool::new();
        let mut config = pool.config();
        let caps = info.to_caps().map_err(|_| gst::FlowError::NotNegotiated)?;
        config.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(config)
            .and_then(|_| pool.set_active(true))
            .map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::NoSpaceLeft,
                    ("Cannot set up the draw buffer pool: {}", e)
                );
                gst::FlowError::Error
            })?;
        if let Some(old) = stream.draw_pool.replace(pool.upcast()) {
            let _ = old.set_active(false);
        }
        stream.draw_info = Some(info);
        Ok(())
    }

    /// Stores the track's tags and optimization-mode event on the src pad; they travel
    /// downstream, in order, before the next buffer.
    fn store_track_events(&self) {
        if !self
            .events_dirty
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let settings = self.settings.lock().unwrap().clone();
        let mut tags = gst::TagList::new();
        {
            let tags = tags.get_mut().unwrap();
            if let Some(label) = &settings.label {
                tags.add::<gst::tags::Title>(&label.as_str(), gst::TagMergeMode::Replace);
            }
            if settings.bitrate_min > 0 {
                tags.add::<gst::tags::MinimumBitrate>(
                    &settings.bitrate_min.saturating_mul(1000),
                    gst::TagMergeMode::Replace,
                );
            }
            if settings.bitrate_max > 0 {
                tags.add::<gst::tags::MaximumBitrate>(
                    &settings.bitrate_max.saturating_mul(1000),
                    gst::TagMergeMode::Replace,
                );
            }
            tags.set_scope(gst::TagScope::Stream);
        }
        let pad = self.obj().src_pad().clone();
        if let Err(e) = pad.store_sticky_event(&gst::event::Tag::new(tags)) {
            gst::debug!(CAT, imp = self, "cannot store tags: {e:?}");
        }
        let ev = crate::events::optimization_mode_event(settings.optimization_mode);
        if let Err(e) = pad.store_sticky_event(&ev) {
            gst::debug!(CAT, imp = self, "cannot store optimization mode: {e:?}");
        }
    }

    // ----- pacing --------------------------------------------------------------------------

    fn running_time(&self) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let clock = obj.clock()?;
        let base = obj.base_time()?;
        clock.time().checked_sub(base)
    }

    fn wait_until(&self, rt: gst::ClockTime) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let (Some(clock), Some(base)) = (obj.clock(), obj.base_time()) else {
            return Err(gst::FlowError::Flushing);
        };
        let id = clock.new_single_shot_id(base + rt);
        {
            let feed = self.feed();
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            *self.clock_id.lock().unwrap() = Some(id.clone());
        }
        let (res, _) = id.wait();
        self.clock_id.lock().unwrap().take();
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }

    /// Blocks while the track is disabled. Returns true if it had to wait.
    fn wait_enabled(&self) -> Result<bool, gst::FlowError> {
        let mut feed = self.feed();
        let mut waited = false;
        while !feed.enabled {
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            waited = true;
            feed = self.wait(feed);
        }
        if feed.flushing {
            return Err(gst::FlowError::Flushing);
        }
        if waited {
            // Frames that came while disabled are stale: keep only the newest.
            if let Some(f) = feed.trim_to_newest() {
                feed.queue.push_back(f);
            }
        }
        Ok(waited)
    }

    /// Waits for the first frame, to learn the producer's format.
    fn wait_first_frame(&self) -> Result<Option<Arc<VideoInfo>>, gst::FlowError> {
        let mut feed = self.feed();
        loop {
            if feed.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if let Some(f) = feed.queue.back() {
                return Ok(Some(f.info.clone()));
            }
            if feed.ended.is_some() {
                return Ok(None);
            }
            if feed.app_generation.is_some() && self.can_draw() {
                return Ok(None);
            }
            feed = self.wait_timeout(feed, Duration::from_millis(100));
        }
    }

    fn output(
        &self,
        stream: &mut Stream,
        frame: Frame,
        muted: bool,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let out_info = stream
            .out_info
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        let rotation = Rotation::from(self.settings.lock().unwrap().rotation);
        let converted = stream
            .converter
            .process(frame.buffer, &frame.info, &out_info, rotation)
            .map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("Cannot convert a frame to the track format: {}", e)
                );
                gst::FlowError::NotNegotiated
            })?;
        if muted {
            stream.last = Some(converted);
            return self.black(stream);
        }
        // Kept as the last frame once stamped: taking a reference now would make the
        // stamping copy the buffer.
        stream.remember = true;
        Ok(converted)
    }

    fn black(&self, stream: &mut Stream) -> Result<gst::Buffer, gst::FlowError> {
        let out_info = stream
            .out_info
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        stream.converter.black(&out_info).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Cannot make a black frame: {}", e)
            );
            gst::FlowError::NotNegotiated
        })
    }

    /// What an idle or ended track shows: `None` to show nothing this time.
    fn idle_frame(
        &self,
        stream: &mut Stream,
        ended: bool,
        muted: bool,
    ) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let on_end = self.settings.lock().unwrap().on_producer_end;
        if ended {
            match on_end {
                OnProducerEnd::Eos => return Err(gst::FlowError::Eos),
                OnProducerEnd::Black => return self.black(stream).map(Some),
                OnProducerEnd::Freeze => (),
            }
        }
        if muted && stream.out_info.is_some() {
            return self.black(stream).map(Some);
        }
        Ok(stream.last.clone())
    }

    fn stamp(
        &self,
        stream: &mut Stream,
        mut buffer: gst::Buffer,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
        repeated: bool,
    ) -> gst::Buffer {
        let pts = match stream.last_pts {
            Some(last) if pts <= last => last + gst::ClockTime::from_nseconds(1),
            _ => pts,
        };
        stream.last_pts = Some(pts);
        {
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(duration);
        }
        if std::mem::take(&mut stream.remember) {
            stream.last = Some(buffer.clone());
        }
        let now = Instant::now();
        let mut c = self.out_stats.lock().unwrap();
        c.frames_out += 1;
        if repeated {
            c.repeated += 1;
        }
        c.out_times.push_back(now);
        while c
            .out_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            c.out_times.pop_front();
        }
        buffer
    }

    /// One buffer of a track with a frame rate.
    fn next_paced(
        &self,
        stream: &mut Stream,
        fps: gst::Fraction,
    ) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let interval = gst::ClockTime::SECOND
            .mul_div_floor(fps.denom() as u64, fps.numer() as u64)
            .unwrap_or(gst::ClockTime::from_mseconds(33));
        let now = self.running_time().ok_or(gst::FlowError::Flushing)?;
        let slot = match stream.next_rt {
            Some(t) if t + interval >= now => t,
            _ => now,
        };
        self.wait_until(slot)?;
        if self.wait_enabled()? {
            stream.next_rt = None;
            return Ok(None);
        }
        stream.next_rt = Some(slot + interval);

        // An ended draw producer is not asked again (end-of-stream from the application).
        let drawing = {
            let feed = self.feed();
            feed.app_generation.is_some() && feed.ended.is_none()
        } && self.can_draw();
        let frame = if drawing {
            self.setup_draw(stream)?;
            self.draw(stream, slot)
        } else {
            None
        };
        let (frame, ended, muted) = {
            let mut feed = self.feed();
            let frame = frame.or_else(|| feed.trim_to_newest());
            self.wake(&feed);
            (frame, feed.ended.is_some(), feed.muted)
        };
        let (buffer, repeated) = match frame {
            Some(frame) => (self.output(stream, frame, muted)?, false),
            None => match self.idle_frame(stream, ended, muted)? {
                Some(b) => (b, true),
                None => return Ok(None),
            },
        };
        Ok(Some(self.stamp(
            stream,
            buffer,
            slot,
            Some(interval),
            repeated,
        )))
    }

    /// One buffer of a track without frame rate: frames leave as they arrive.
    fn next_unpaced(&self, stream: &mut Stream) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let (frame, ended, muted) = {
            let mut feed = self.feed();
            loop {
                if feed.flushing {
                    return Err(gst::FlowError::Flushing);
                }
                if !feed.enabled {
                    drop(feed);
                    self.wait_enabled()?;
                    return Ok(None);
                }
                if !feed.queue.is_empty() {
                    break;
                }
                if feed.ended.is_some() {
                    let due = *stream.keepalive_due.get_or_insert_with(Instant::now);
                    let now = Instant::now();
                    if now >= due {
                        stream.keepalive_due = Some(now + KEEPALIVE_INTERVAL);
                        break;
                    }
                    feed = self.wait_timeout(feed, due - now);
                    continue;
                }
                feed = self.wait(feed);
            }
            let frame = feed.queue.pop_front();
            // A blocked pusher may go on.
            self.wake(&feed);
            (frame, feed.ended.is_some(), feed.muted)
        };
        let (buffer, repeated) = match frame {
            Some(frame) => (self.output(stream, frame, muted)?, false),
            None => match self.idle_frame(stream, ended, muted)? {
                Some(b) => (b, true),
                None => return Ok(None),
            },
        };
        let now = self.running_time().ok_or(gst::FlowError::Flushing)?;
        Ok(Some(self.stamp(stream, buffer, now, None, repeated)))
    }

    fn next_buffer(&self) -> Result<gst::Buffer, gst::FlowError> {
        let mut stream = self.stream.lock().unwrap();
        loop {
            if stream.out_info.is_none() {
                let drawing = self.feed().app_generation.is_some() && self.can_draw();
                if drawing {
                    self.setup_draw(&mut stream)?;
                    let info = stream.draw_info.clone();
                    self.negotiate_output(&mut stream, info.as_ref(), true)?;
                } else {
                    self.negotiate_output(&mut stream, None, false)?;
                }
            }
            if stream.out_info.is_none() {
                match self.wait_first_frame()? {
                    Some(info) => self.negotiate_output(&mut stream, Some(&info), false)?,
                    None => {
                        let feed = self.feed();
                        if feed.ended.is_some() && feed.queue.is_empty() {
                            drop(feed);
                            // Nothing was ever produced: the track can only end.
                            return Err(gst::FlowError::Eos);
                        }
                    }
                }
                continue;
            }
            self.store_track_events();
            let fps = stream.fps.unwrap_or_else(|| gst::Fraction::new(0, 1));
            let next = if fps.numer() > 0 {
                self.next_paced(&mut stream, fps)?
            } else {
                self.next_unpaced(&mut stream)?
            };
            if let Some(buffer) = next {
                gst::log!(CAT, imp = self, "output {buffer:?}");
                return Ok(buffer);
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        let now = Instant::now();
        let (frames_out, repeated, recent) = {
            let o = self.out_stats.lock().unwrap();
            let recent = o
                .out_times
                .iter()
                .filter(|t| now.duration_since(**t) <= Duration::from_secs(1))
                .count();
            (o.frames_out, o.repeated, recent)
        };
        let feed = self.feed();
        let c = &feed.counters;
        gst::Structure::builder("customvideosrc-stats")
            .field("frames-in", c.frames_in)
            .field("frames-out", frames_out)
            .field("dropped", c.dropped)
            .field("repeated", repeated)
            .field("fps", recent as f64)
            .field("width", c.width)
            .field("height", c.height)
            .field(
                "last-frame-age-ms",
                c.last_in
                    .map(|t| now.duration_since(t).as_millis() as i64)
                    .unwrap_or(-1),
            )
            .field("enabled", feed.enabled)
            .field("muted", feed.muted)
            .field("ended", feed.ended.is_some())
            .build()
    }

    fn apply_preset(&self, settings: &mut Settings, name: Option<String>) {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            settings.encoder_config = None;
            return;
        };
        match presets::find(&name) {
            Some(p) => {
                settings.encoder_config = Some(p.name.to_owned());
                settings.width = p.width;
                settings.height = p.height;
                settings.framerate = gst::Fraction::new(p.fps, 1);
                settings.bitrate_min = p.bitrate_min_kbps;
                settings.bitrate_max = p.bitrate_max_kbps;
            }
            None => {
                let msg = format!(
                    "customvideosrc: unknown encoder-config preset \"{name}\"; valid presets: {}",
                    presets::names()
                );
                gst::warning!(CAT, imp = self, "{msg}");
                glib::g_warning!("customvideosrc", "{msg}");
            }
        }
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
                if let gst::EventView::StreamStart(ss) = ev.view()
                    && let Some(id) = obj.imp().settings.lock().unwrap().track_id.clone()
                    && ss.stream_id() != id
                {
                    let mut builder =
                        gst::event::StreamStart::builder(&id).flags(ss.stream_flags());
                    if let Some(group) = ss.group_id() {
                        builder = builder.group_id(group);
                    }
                    *ev = builder.build();
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
                self.feed().enabled = value.get().expect("type checked upstream");
                self.wake_all();
                return;
            }
            "muted" => {
                self.feed().muted = value.get().expect("type checked upstream");
                self.wake_all();
                return;
            }
            "block" => {
                self.feed().block = value.get().expect("type checked upstream");
                self.wake_all();
                return;
            }
            "caps" => {
                let caps = value
                    .get::<Option<gst::Caps>>()
                    .expect("type checked upstream");
                self.feed().input = caps.map(InputCaps::new);
                return;
            }
            "max-buffers" => {
                let n: u32 = value.get().expect("type checked upstream");
                self.settings.lock().unwrap().max_buffers = n;
                let mut feed = self.feed();
                feed.max_buffers = n as usize;
                while feed.queue.len() > feed.max_buffers {
                    feed.queue.pop_front();
                    feed.counters.dropped += 1;
                }
                return;
            }
            _ => (),
        }
        let mut settings = self.settings.lock().unwrap();
        match name {
            "processor" => settings.processor = value.get().expect("type checked upstream"),
            "width" => settings.width = value.get().expect("type checked upstream"),
            "height" => settings.height = value.get().expect("type checked upstream"),
            "framerate" => settings.framerate = value.get().expect("type checked upstream"),
            "format" => {
                let name = value
                    .get::<Option<String>>()
                    .expect("type checked upstream");
                match name.as_deref().filter(|n| !n.is_empty()) {
                    None => settings.format = VideoFormat::Unknown,
                    Some(n) => match VideoFormat::from_string(n) {
                        VideoFormat::Unknown | VideoFormat::Encoded => {
                            let msg = format!(
                                "customvideosrc: unknown video format \"{n}\" (use a caps format name such as I420, NV12, RGBA, BGRA)"
                            );
                            gst::warning!(CAT, imp = self, "{msg}");
                            glib::g_warning!("customvideosrc", "{msg}");
                        }
                        f => settings.format = f,
                    },
                }
            }
            "encoder-config" => {
                let preset = value
                    .get::<Option<String>>()
                    .expect("type checked upstream");
                self.apply_preset(&mut settings, preset);
            }
            "bitrate-min" => settings.bitrate_min = value.get().expect("type checked upstream"),
            "bitrate-max" => settings.bitrate_max = value.get().expect("type checked upstream"),
            "optimization-mode" => {
                settings.optimization_mode = value.get().expect("type checked upstream")
            }
            "rotation" => settings.rotation = value.get().expect("type checked upstream"),
            "on-producer-end" => {
                settings.on_producer_end = value.get().expect("type checked upstream");
                self.wake_all();
            }
            "track-id" => settings.track_id = value.get().expect("type checked upstream"),
            "label" => settings.label = value.get().expect("type checked upstream"),
            _ => unimplemented!("property {name}"),
        }
        if matches!(
            name,
            "bitrate-min" | "bitrate-max" | "optimization-mode" | "label" | "encoder-config"
        ) {
            self.events_dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "enabled" => return self.feed().enabled.to_value(),
            "muted" => return self.feed().muted.to_value(),
            "block" => return self.feed().block.to_value(),
            "caps" => {
                return self
                    .feed()
                    .input
                    .as_ref()
                    .map(|i| i.caps.clone())
                    .to_value();
            }
            "stats" => return self.stats().to_value(),
            _ => (),
        }
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "producer" => settings.producer.to_value(),
            "processor" => settings.processor.to_value(),
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
            "max-buffers" => settings.max_buffers.to_value(),
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
        let settings = self.settings.lock().unwrap().clone();
        {
            let mut feed = self.feed();
            feed.flushing = false;
            feed.ended = None;
            feed.pending = None;
            feed.max_buffers = settings.max_buffers as usize;
        }
        if let Some(desc) = settings
            .producer
            .as_deref()
            .filter(|d| !d.trim().is_empty())
        {
            let generation = {
                let mut feed = self.feed();
                let g = feed.new_generation();
                feed.active = g;
                feed.app_generation = None;
                feed.queue.clear();
                g
            };
            let producer = self
                .start_producer(generation, desc)
                .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
            gst::info!(CAT, imp = self, "producer \"{desc}\" started");
            self.producers.lock().unwrap().push(producer);
        } else {
            let generation = {
                let mut feed = self.feed();
                if feed.app_generation.is_none() {
                    let g = feed.new_generation();
                    feed.app_generation = Some(g);
                    feed.active = g;
                }
                feed.app_generation.expect("set above")
            };
            self.start_app_processing(generation)
                .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{}", e)))?;
        }
        *self.stream.lock().unwrap() = Stream::default();
        self.events_dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.feed().running = true;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let producers = std::mem::take(&mut *self.producers.lock().unwrap());
        for p in producers {
            p.stop();
        }
        {
            let mut feed = self.feed();
            feed.running = false;
            feed.queue.clear();
            self.wake_all();
            feed.ended = None;
            feed.pending = None;
            feed.counters = Counters::default();
            *self.out_stats.lock().unwrap() = OutStats::default();
            if self.settings.lock().unwrap().producer.is_some() {
                feed.app_generation = None;
                feed.active = 0;
            } else if feed.app_generation.is_none() {
                let g = feed.new_generation();
                feed.app_generation = Some(g);
                feed.active = g;
            }
        }
        let mut stream = self.stream.lock().unwrap();
        if let Some(pool) = stream.draw_pool.take() {
            let _ = pool.set_active(false);
        }
        *stream = Stream::default();
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // The caps are chosen in create(), once the producer's first frame is known; after
        // that they are kept as long as downstream accepts them.
        let Ok(mut stream) = self.stream.try_lock() else {
            return Ok(());
        };
        let Some(info) = stream.out_info.clone() else {
            return Ok(());
        };
        let caps = info
            .to_caps()
            .map_err(|_| gst::loggable_error!(CAT, "bad caps"))?;
        if self.obj().src_pad().peer_query_accept_caps(&caps) {
            return Ok(());
        }
        gst::info!(
            CAT,
            imp = self,
            "downstream no longer accepts {caps}, renegotiating"
        );
        stream.out_info = None;
        self.negotiate_output(&mut stream, Some(&info), false)
            .map_err(|_| gst::loggable_error!(CAT, "renegotiation failed"))
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "unlock");
        self.feed().flushing = true;
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
