// SPDX-License-Identifier: MPL-2.0
//! What producers hand to the streaming thread: frames in a small bounded queue, and which
//! producer may add to it.
//!
//! A track has at most one *active* producer (whose frames it shows) and one *pending* producer
//! (a replacement that takes over with its first frame, make-before-break). The rules for both
//! live here as plain methods that return decisions — which producer to stop, whether the
//! frame has to wait for room — and the element acts on them once it has released the lock.
//! Nothing here needs a pipeline, so the rules are tested on their own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use gst_video::VideoInfo;

use super::convert;

/// One producer of the track. Each producer gets a new id when it starts feeding the track
/// (the application's frames too, each time they come back), so that late frames of a retired
/// producer are told apart from its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ProducerId {
    serial: u64,
    kind: ProducerKind,
}

/// Where a producer's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ProducerKind {
    /// The application pushes or draws them.
    App,
    /// A `producer` description runs in a pipeline of its own.
    Description,
}

impl ProducerId {
    /// Whether the application pushes or draws this producer's frames.
    pub(super) fn is_app(self) -> bool {
        self.kind == ProducerKind::App
    }
}

impl std::fmt::Display for ProducerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ProducerKind::App => write!(f, "application producer {}", self.serial),
            ProducerKind::Description => write!(f, "producer {}", self.serial),
        }
    }
}

/// One frame from a producer, in the layout it came in.
pub(super) struct Frame {
    pub(super) buffer: gst::Buffer,
    pub(super) info: Arc<VideoInfo>,
    pub(super) producer: ProducerId,
}

/// The caps of frames the application pushes or draws, parsed once when they are set.
#[derive(Debug, Clone)]
pub(super) struct InputCaps {
    pub(super) caps: gst::Caps,
    /// The frame layout, or why such frames cannot join the track.
    pub(super) info: Result<Arc<VideoInfo>, String>,
}

impl InputCaps {
    pub(super) fn new(caps: gst::Caps) -> Self {
        let info = parse_input_caps(&caps).map(Arc::new);
        InputCaps { caps, info }
    }
}

/// The layout of frames with `caps`, or a sentence that says why the track cannot take them.
pub(super) fn parse_input_caps(caps: &gst::CapsRef) -> Result<VideoInfo, String> {
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

/// How many frames the queue holds and what a full queue does (the `max-buffers` and `block`
/// properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) max_buffers: usize,
    /// A full queue makes pushes wait for room instead of dropping the oldest frame.
    pub(super) block: bool,
}

/// What became of a frame offered to the queue.
#[must_use]
pub(super) enum Enqueue {
    /// The frame is queued. `retire`: the producer it took over from, to stop.
    Queued { retire: Option<ProducerId> },
    /// The queue is full and pushes block: wait for room, then offer the frame again.
    Full {
        frame: Frame,
        retire: Option<ProducerId>,
    },
    /// The frame is refused: `NotLinked` from a producer that no longer feeds the track, `Eos`
    /// after the producer ended.
    Refused(gst::FlowError),
}

/// What the end of a producer means for the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// A replacement ended before its first frame: the current producer carries on.
    ReplacementFailed,
    /// The track's own producer ended: the track ends (`on-producer-end` says how).
    TrackEnded,
    /// Nothing: a retired producer, or one that had already ended.
    Ignored,
}

/// Which waiting threads a change concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Wake {
    /// The streaming thread waits for frames or for a change of the track controls.
    pub(super) track: bool,
    /// Pushers wait for room in the queue.
    pub(super) pushers: bool,
}

/// Input counters for the statistics.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) frames_in: u64,
    pub(super) dropped: u64,
    pub(super) last_in: Option<Instant>,
}

/// The queue between the producers and the streaming thread, and who may fill it.
#[derive(Debug)]
pub(super) struct Feed {
    queue: VecDeque<Frame>,
    /// The producer whose frames the track shows.
    active: Option<ProducerId>,
    /// A producer that replaces the active one at its first frame.
    pending: Option<ProducerId>,
    next_serial: u64,
    /// Why the active producer ended, once it has.
    ended: Option<String>,
    /// The active producer ended; the track ends once that is said ([`Feed::seal`]).
    ending: bool,
    /// The element is being unlocked (flush, stop): nobody may wait.
    pub(super) flushing: bool,
    /// Between start and stop.
    pub(super) running: bool,
    /// Threads waiting for frames or track controls, and pushers waiting for room: wakers
    /// skip the notification (a system call) when nobody waits.
    pub(super) waiting: u32,
    pub(super) pushers_waiting: u32,
    counters: Counters,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("producer", &self.producer)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Default for Feed {
    /// A new track is fed by the application until a `producer` description is set.
    fn default() -> Self {
        let mut feed = Feed {
            queue: VecDeque::new(),
            active: None,
            pending: None,
            next_serial: 1,
            ended: None,
            ending: false,
            flushing: false,
            running: false,
            waiting: 0,
            pushers_waiting: 0,
            counters: Counters::default(),
        };
        feed.use_app();
        feed
    }
}

impl Feed {
    /// A new producer id, not yet active or pending.
    pub(super) fn new_producer(&mut self, kind: ProducerKind) -> ProducerId {
        let id = ProducerId {
            serial: self.next_serial,
            kind,
        };
        self.next_serial += 1;
        id
    }

    /// The application's producer, while it feeds the track or is about to take over. A
    /// pending one comes first: pushed frames go to the replacement, which then takes over.
    pub(super) fn app(&self) -> Option<ProducerId> {
        self.pending
            .filter(|p| p.is_app())
            .or(self.active.filter(|p| p.is_app()))
    }

    /// The producer whose frames the track shows.
    #[cfg(test)]
    pub(super) fn active(&self) -> Option<ProducerId> {
        self.active
    }

    /// The application producer that frames pushed now belong to: `NotLinked` while a
    /// description feeds the track, `Eos` once the application ended its frames.
    pub(super) fn app_accepting(&self) -> Result<ProducerId, gst::FlowError> {
        match self.app() {
            Some(id) if Some(id) == self.active && self.ended.is_some() => Err(gst::FlowError::Eos),
            Some(id) => Ok(id),
            None => Err(gst::FlowError::NotLinked),
        }
    }

    /// Makes the application feed the track (when it does not already) and returns its
    /// producer.
    pub(super) fn use_app(&mut self) -> ProducerId {
        if let Some(id) = self.app() {
            return id;
        }
        let id = self.new_producer(ProducerKind::App);
        self.active = Some(id);
        id
    }

    /// A description will feed the track once it starts: until then nobody does, and frames
    /// held for the application are dropped.
    pub(super) fn expect_description(&mut self) {
        self.active = None;
        self.pending = None;
        self.queue.clear();
    }

    /// A description starts feeding the track at once (the element starts).
    pub(super) fn start_description(&mut self) -> ProducerId {
        let id = self.new_producer(ProducerKind::Description);
        self.active = Some(id);
        self.queue.clear();
        id
    }

    /// The element starts: frames held for the application stay (they leave once PLAYING).
    pub(super) fn start(&mut self) {
        self.flushing = false;
        self.ended = None;
        self.ending = false;
        self.pending = None;
    }

    /// The element stops: the queue and the counters are emptied, and the track waits for
    /// a description (`description` true) or the application.
    pub(super) fn stop(&mut self, description: bool) {
        self.running = false;
        self.queue.clear();
        self.ended = None;
        self.ending = false;
        self.pending = None;
        self.counters = Counters::default();
        if description {
            self.expect_description();
        } else {
            self.use_app();
        }
    }

    /// Makes `id` the replacement of the active producer; returns a replacement that had
    /// not yet taken over, to stop.
    pub(super) fn propose(&mut self, id: ProducerId) -> Option<ProducerId> {
        self.pending.replace(id)
    }

    /// Lets a frame of `id` in: a pending producer takes over with its first frame (the
    /// producer it replaces is returned, to stop); a producer that no longer feeds the track
    /// gets `NotLinked`, an ended one `Eos`.
    pub(super) fn admit(&mut self, id: ProducerId) -> Result<Option<ProducerId>, gst::FlowError> {
        if self.pending == Some(id) {
            return Ok(self.promote(id));
        }
        if self.active != Some(id) {
            return Err(gst::FlowError::NotLinked);
        }
        if self.ended.is_some() {
            return Err(gst::FlowError::Eos);
        }
        Ok(None)
    }

    /// Makes `id` the active producer; returns the one it replaces. Frames of other
    /// producers still queued are dropped.
    fn promote(&mut self, id: ProducerId) -> Option<ProducerId> {
        let old = self.active.replace(id);
        self.pending = None;
        self.ended = None;
        self.ending = false;
        let before = self.queue.len();
        self.queue.retain(|f| f.producer == id);
        self.counters.dropped += (before - self.queue.len()) as u64;
        old
    }

    /// Offers `frame` to the queue. When it is full the oldest frame is dropped (newest
    /// wins), unless pushes block and nobody is flushing: then the frame has to wait.
    pub(super) fn enqueue(&mut self, frame: Frame, limits: Limits, now: Instant) -> Enqueue {
        let retire = match self.admit(frame.producer) {
            Ok(retire) => retire,
            Err(e) => return Enqueue::Refused(e),
        };
        if self.queue.len() >= limits.max_buffers && limits.block && !self.flushing {
            return Enqueue::Full { frame, retire };
        }
        self.trim(limits.max_buffers.saturating_sub(1));
        self.queue.push_back(frame);
        self.count_in(now);
        Enqueue::Queued { retire }
    }

    /// Counts a frame that reached the track (queued, or drawn straight for it).
    pub(super) fn count_in(&mut self, now: Instant) {
        self.counters.frames_in += 1;
        self.counters.last_in = Some(now);
    }

    /// Drops the oldest frames beyond `max` (counted).
    pub(super) fn trim(&mut self, max: usize) {
        while self.queue.len() > max {
            self.queue.pop_front();
            self.counters.dropped += 1;
        }
    }

    /// The newest frame; older ones are dropped (counted). A track with a frame rate takes
    /// this at each tick.
    pub(super) fn take_newest(&mut self) -> Option<Frame> {
        let newest = self.queue.pop_back();
        self.trim(0);
        newest
    }

    /// The oldest frame: a track without frame rate lets every frame leave, in order.
    pub(super) fn take_oldest(&mut self) -> Option<Frame> {
        self.queue.pop_front()
    }

    /// After a pause (`enabled=false`): frames that came meanwhile are stale, only the newest
    /// stays.
    pub(super) fn keep_newest(&mut self) {
        if let Some(f) = self.take_newest() {
            self.queue.push_back(f);
        }
    }

    /// The layout of the newest queued frame: the track learns its format from it.
    pub(super) fn newest_info(&self) -> Option<Arc<VideoInfo>> {
        self.queue.back().map(|f| f.info.clone())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records the end of producer `id` and says what it means. When the track ends, it
    /// does so at [`Feed::seal`], once the end was said (the `track-ended` message goes to
    /// the bus before the EOS it causes).
    pub(super) fn end(&mut self, id: ProducerId) -> End {
        if self.pending == Some(id) {
            self.pending = None;
            return End::ReplacementFailed;
        }
        if self.active != Some(id) || self.ended.is_some() || self.ending {
            return End::Ignored;
        }
        self.ending = true;
        End::TrackEnded
    }

    /// Ends the track (`reason` says why) after [`Feed::end`], unless a new producer took
    /// over meanwhile.
    pub(super) fn seal(&mut self, reason: &str) {
        if std::mem::take(&mut self.ending) {
            self.ended = Some(reason.to_owned());
        }
    }

    /// Whether the track's producer ended.
    pub(super) fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    pub(super) fn counters(&self) -> Counters {
        self.counters
    }

    /// Who to wake after the queue changed: the streaming thread when it waits, blocked
    /// pushers once the track has taken half of the queue (so that pusher and track do not
    /// wake each other for every frame).
    pub(super) fn wakes(&self, limits: Limits) -> Wake {
        Wake {
            track: self.waiting > 0,
            pushers: self.pushers_waiting > 0 && self.queue.len() <= limits.max_buffers / 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROP2: Limits = Limits {
        max_buffers: 2,
        block: false,
    };
    const BLOCK2: Limits = Limits {
        max_buffers: 2,
        block: true,
    };

    fn info() -> Arc<VideoInfo> {
        gst::init().unwrap();
        Arc::new(
            VideoInfo::builder(gst_video::VideoFormat::Gray8, 4, 4)
                .build()
                .unwrap(),
        )
    }

    /// A frame of `producer` whose one-byte buffer is tagged `tag`.
    fn frame(producer: ProducerId, tag: u8) -> Frame {
        let info = info();
        Frame {
            buffer: gst::Buffer::from_slice([tag]),
            info,
            producer,
        }
    }

    /// Offers a frame of `producer` tagged `tag` to a queue of two that drops.
    fn offer(feed: &mut Feed, producer: ProducerId, tag: u8) -> Enqueue {
        feed.enqueue(frame(producer, tag), DROP2, Instant::now())
    }

    fn tag(f: &Frame) -> u8 {
        f.buffer.map_readable().unwrap()[0]
    }

    fn queued(e: Enqueue) -> Option<ProducerId> {
        match e {
            Enqueue::Queued { retire } => retire,
            Enqueue::Full { .. } => panic!("full"),
            Enqueue::Refused(e) => panic!("refused: {e:?}"),
        }
    }

    fn refused(e: Enqueue) -> gst::FlowError {
        match e {
            Enqueue::Refused(e) => e,
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn a_new_feed_belongs_to_the_application() {
        let feed = Feed::default();
        let app = feed.app().unwrap();
        assert!(app.is_app());
        assert_eq!(feed.active(), Some(app));
        assert_eq!(feed.app_accepting(), Ok(app));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        let now = Instant::now();
        for i in 0..5 {
            assert_eq!(queued(feed.enqueue(frame(app, i), DROP2, now)), None);
        }
        let c = feed.counters();
        assert_eq!((c.frames_in, c.dropped), (5, 3));
        assert_eq!(c.last_in, Some(now));
        assert_eq!(tag(&feed.take_oldest().unwrap()), 3);
        assert_eq!(tag(&feed.take_oldest().unwrap()), 4);
        assert!(feed.take_oldest().is_none());
    }

    #[test]
    fn a_full_queue_that_blocks_makes_the_frame_wait_unless_flushing() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        let now = Instant::now();
        queued(feed.enqueue(frame(app, 0), BLOCK2, now));
        queued(feed.enqueue(frame(app, 1), BLOCK2, now));
        let Enqueue::Full { frame: f, retire } = feed.enqueue(frame(app, 2), BLOCK2, now) else {
            panic!("a blocking full queue took a frame");
        };
        assert_eq!((tag(&f), retire), (2, None));
        assert_eq!(feed.counters().dropped, 0);
        // Nobody waits for room until the track took half of the queue.
        feed.pushers_waiting = 1;
        assert!(!feed.wakes(BLOCK2).pushers);
        feed.take_oldest();
        assert!(feed.wakes(BLOCK2).pushers);
        queued(feed.enqueue(f, BLOCK2, now));
        // While flushing, nobody may wait: the oldest is dropped instead.
        feed.flushing = true;
        queued(feed.enqueue(frame(app, 3), BLOCK2, now));
        assert_eq!(feed.counters().dropped, 1);
    }

    #[test]
    fn the_track_takes_the_newest_frame_and_drops_the_rest() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        let limits = Limits {
            max_buffers: 10,
            block: false,
        };
        for i in 0..4 {
            queued(feed.enqueue(frame(app, i), limits, Instant::now()));
        }
        assert_eq!(tag(&feed.take_newest().unwrap()), 3);
        assert_eq!(feed.counters().dropped, 3);
        assert!(feed.is_empty());
        for i in 0..3 {
            queued(feed.enqueue(frame(app, i), limits, Instant::now()));
        }
        feed.keep_newest();
        assert_eq!(tag(&feed.take_oldest().unwrap()), 2);
        // Lowering max-buffers drops the oldest beyond the new limit.
        for i in 0..4 {
            queued(feed.enqueue(frame(app, i), limits, Instant::now()));
        }
        feed.trim(1);
        assert_eq!(tag(&feed.take_oldest().unwrap()), 3);
    }

    #[test]
    fn a_pending_producer_takes_over_with_its_first_frame() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        queued(offer(&mut feed, app, 0));
        let next = feed.new_producer(ProducerKind::Description);
        assert_eq!(feed.propose(next), None);
        // Until it delivers, the application still feeds the track.
        assert_eq!(feed.active(), Some(app));
        assert_eq!(feed.app_accepting(), Ok(app));
        queued(offer(&mut feed, app, 1));
        // Its first frame: it takes over, the application's frames are dropped and the
        // application producer is to be stopped.
        assert_eq!(queued(offer(&mut feed, next, 2)), Some(app));
        assert_eq!(feed.active(), Some(next));
        assert_eq!(feed.counters().dropped, 2);
        assert_eq!(tag(&feed.take_oldest().unwrap()), 2);
        // The application no longer feeds the track.
        assert_eq!(feed.app(), None);
        assert_eq!(feed.app_accepting(), Err(gst::FlowError::NotLinked));
        assert_eq!(refused(offer(&mut feed, app, 3)), gst::FlowError::NotLinked);
    }

    #[test]
    fn a_newer_replacement_retires_the_one_that_had_not_taken_over() {
        let mut feed = Feed::default();
        let first = feed.new_producer(ProducerKind::Description);
        let second = feed.new_producer(ProducerKind::Description);
        assert_eq!(feed.propose(first), None);
        assert_eq!(feed.propose(second), Some(first));
        assert_eq!(
            refused(offer(&mut feed, first, 0)),
            gst::FlowError::NotLinked
        );
    }

    #[test]
    fn going_back_to_the_application_gives_it_a_new_producer() {
        let mut feed = Feed {
            running: true,
            ..Default::default()
        };
        let desc = feed.start_description();
        assert_eq!(feed.app(), None);
        let app = feed.new_producer(ProducerKind::App);
        feed.propose(app);
        // Pushed frames go to the pending application producer, which takes over.
        assert_eq!(feed.app_accepting(), Ok(app));
        assert_eq!(queued(offer(&mut feed, app, 0)), Some(desc));
        // Late frames of the description are refused.
        assert_eq!(
            refused(offer(&mut feed, desc, 1)),
            gst::FlowError::NotLinked
        );
    }

    #[test]
    fn the_end_of_the_active_producer_ends_the_track_once() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        assert_eq!(feed.end(app), End::TrackEnded);
        assert!(!feed.is_ended(), "ended once said");
        assert_eq!(feed.end(app), End::Ignored);
        feed.seal("done");
        assert!(feed.is_ended());
        assert_eq!(feed.end(app), End::Ignored);
        assert_eq!(feed.app_accepting(), Err(gst::FlowError::Eos));
        assert_eq!(refused(offer(&mut feed, app, 0)), gst::FlowError::Eos);
        // A new producer revives the track.
        let next = feed.new_producer(ProducerKind::Description);
        feed.propose(next);
        assert_eq!(queued(offer(&mut feed, next, 1)), Some(app));
        assert!(!feed.is_ended());
    }

    #[test]
    fn a_replacement_that_ends_before_its_first_frame_changes_nothing() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        let next = feed.new_producer(ProducerKind::Description);
        feed.propose(next);
        assert_eq!(feed.end(next), End::ReplacementFailed);
        assert_eq!(feed.active(), Some(app));
        assert!(!feed.is_ended());
        // A producer that no longer feeds the track ends unnoticed.
        assert_eq!(feed.end(next), End::Ignored);
    }

    #[test]
    fn stopping_waits_for_a_description_or_keeps_the_application() {
        let mut feed = Feed::default();
        let app = feed.app().unwrap();
        queued(offer(&mut feed, app, 0));
        feed.stop(false);
        assert_eq!(feed.app(), Some(app));
        assert!(feed.is_empty());
        assert_eq!(feed.counters().frames_in, 0);
        feed.stop(true);
        assert_eq!(feed.active(), None);
        assert_eq!(feed.app_accepting(), Err(gst::FlowError::NotLinked));
        // Back to the application: a new producer.
        let again = feed.use_app();
        assert_ne!(again, app);
        assert_eq!(feed.use_app(), again);
        // Frames held before the start stay for it.
        queued(offer(&mut feed, again, 1));
        feed.start();
        assert_eq!(feed.newest_info().map(|i| i.width()), Some(4));
        let desc = feed.start_description();
        assert!(feed.is_empty());
        assert_eq!(feed.active(), Some(desc));
    }
}
