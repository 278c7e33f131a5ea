// SPDX-License-Identifier: MPL-2.0
//! Output pacing: when the next buffer leaves, what it shows and which time it carries.
//!
//! A track with a frame rate leaves one buffer at every tick of the track clock: the newest
//! frame, or the last one again when the producer stalls. A track without frame rate lets
//! frames leave as they come, and an ended one repeats its black or frozen frame once in a
//! while so that the track stays alive. These are decisions on times the caller passes in, so
//! they are tested with made-up times; the element does the waiting.

use std::time::{Duration, Instant};

use gst::prelude::*;

use super::OnProducerEnd;

/// How often an ended track without frame rate repeats its black or frozen frame.
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// What a buffer that leaves is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// A new frame of the producer, kept to be repeated later.
    New,
    /// A new frame hidden by `muted`: black leaves, the frame itself was kept.
    Hidden,
    /// No new frame: the last one again, or a black or idle frame.
    Repeat,
}

/// What a track shows when no new frame came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    /// The producer ended and the track ends with it.
    Eos,
    /// A black frame.
    Black,
    /// The last frame again, if there is one.
    Last,
}

/// The pacing state of the streaming thread.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    /// The next tick of a track with a frame rate.
    next_tick: Option<gst::ClockTime>,
    last_pts: Option<gst::ClockTime>,
    /// When an ended track without frame rate shows its idle frame again.
    keepalive_due: Option<Instant>,
    /// The last new frame, as it left: what a stalled or frozen track repeats.
    last: Option<gst::Buffer>,
}

/// The time between two frames at `fps` (33 ms for a rate that cannot be computed).
pub(super) fn interval(fps: gst::Fraction) -> gst::ClockTime {
    u64::try_from(fps.numer())
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, n))
        .unwrap_or(gst::ClockTime::from_mseconds(33))
}

/// What a track shows without a new frame: on an ended producer what `on_end` says, black
/// while muted (once the format is known), otherwise the last frame.
pub(super) fn idle(ended: bool, on_end: OnProducerEnd, muted: bool, negotiated: bool) -> Idle {
    if ended {
        match on_end {
            OnProducerEnd::Eos => return Idle::Eos,
            OnProducerEnd::Black => return Idle::Black,
            OnProducerEnd::Freeze => (),
        }
    }
    if muted && negotiated {
        Idle::Black
    } else {
        Idle::Last
    }
}

impl Pacer {
    /// The tick the next buffer leaves at, with the running time `now`: the next tick on
    /// time, or `now` when the track fell behind by more than one interval (it starts
    /// afresh rather than sending a burst to catch up).
    pub(super) fn tick(&self, now: gst::ClockTime, interval: gst::ClockTime) -> gst::ClockTime {
        match self.next_tick {
            Some(t) if t + interval >= now => t,
            _ => now,
        }
    }

    /// A buffer leaves at `tick`; the next one an interval later.
    pub(super) fn ticked(&mut self, tick: gst::ClockTime, interval: gst::ClockTime) {
        self.next_tick = Some(tick + interval);
    }

    /// The ticks start afresh at the next buffer (after a pause, or new caps).
    pub(super) fn restart(&mut self) {
        self.next_tick = None;
    }

    /// For an ended track without frame rate: `None` when its idle frame is due now (the next
    /// one is then due a [`KEEPALIVE_INTERVAL`] later), else how long to wait for it.
    pub(super) fn keepalive(&mut self, now: Instant) -> Option<Duration> {
        let due = *self.keepalive_due.get_or_insert(now);
        if now >= due {
            self.keepalive_due = Some(now + KEEPALIVE_INTERVAL);
            None
        } else {
            Some(due - now)
        }
    }

    /// Keeps a new frame that is hidden (muted) as the one to repeat.
    pub(super) fn keep(&mut self, frame: gst::Buffer) {
        self.last = Some(frame);
    }

    /// The last new frame, to show again.
    pub(super) fn last(&self) -> Option<gst::Buffer> {
        self.last.clone()
    }

    /// Stamps `buffer` for leaving at running time `pts`: timestamps strictly increase (a
    /// buffer never carries the time of the one before), a new frame is kept to repeat.
    pub(super) fn stamp(
        &mut self,
        mut buffer: gst::Buffer,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
        shown: Shown,
    ) -> gst::Buffer {
        let pts = match self.last_pts {
            Some(last) if pts <= last => last + gst::ClockTime::from_nseconds(1),
            _ => pts,
        };
        self.last_pts = Some(pts);
        {
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(duration);
        }
        // Kept once stamped: a reference taken before would make the stamping copy it.
        if shown == Shown::New {
            self.last = Some(buffer.clone());
        }
        buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(n)
    }

    #[test]
    fn interval_of_a_frame_rate() {
        assert_eq!(
            interval(gst::Fraction::new(30, 1)),
            gst::ClockTime::from_nseconds(33_333_333)
        );
        assert_eq!(interval(gst::Fraction::new(25, 2)), ms(80));
        assert_eq!(interval(gst::Fraction::new(0, 1)), ms(33));
    }

    #[test]
    fn ticks_are_one_interval_apart_while_on_time() {
        let mut p = Pacer::default();
        let i = ms(40);
        // (running time when asked, the tick the buffer leaves at), in ms.
        for (now, tick) in [
            // The first buffer leaves at once.
            (1000, 1000),
            // Woken a little late (up to one interval): the tick keeps its place.
            (1070, 1040),
            // Early: wait for the tick.
            (1060, 1080),
            // More than an interval behind: start afresh from now, no burst.
            (1300, 1300),
            (1330, 1340),
        ] {
            let t = p.tick(ms(now), i);
            assert_eq!(t, ms(tick), "asked at {now} ms");
            p.ticked(t, i);
        }
        // After a pause the ticks start afresh too.
        p.restart();
        assert_eq!(p.tick(ms(1310), i), ms(1310));
    }

    #[test]
    fn timestamps_strictly_increase() {
        gst::init().unwrap();
        let mut p = Pacer::default();
        let b = p.stamp(gst::Buffer::new(), ms(100), Some(ms(33)), Shown::New);
        assert_eq!((b.pts(), b.duration()), (Some(ms(100)), Some(ms(33))));
        assert_eq!(b.dts(), None);
        let b = p.stamp(gst::Buffer::new(), ms(100), None, Shown::Repeat);
        assert_eq!(b.pts(), Some(ms(100) + gst::ClockTime::from_nseconds(1)));
        let b = p.stamp(gst::Buffer::new(), ms(50), None, Shown::Repeat);
        assert_eq!(b.pts(), Some(ms(100) + gst::ClockTime::from_nseconds(2)));
        let b = p.stamp(gst::Buffer::new(), ms(200), None, Shown::Repeat);
        assert_eq!(b.pts(), Some(ms(200)));
    }

    #[test]
    fn only_new_frames_are_repeated() {
        gst::init().unwrap();
        let mut p = Pacer::default();
        assert!(p.last().is_none());
        let new = gst::Buffer::from_slice([1u8]);
        let stamped = p.stamp(new, ms(1), None, Shown::New);
        // The kept frame is the stamped buffer itself, no copy.
        assert_eq!(
            p.last().unwrap().as_ptr(),
            stamped.as_ptr(),
            "last frame copied"
        );
        p.stamp(gst::Buffer::from_slice([2u8]), ms(2), None, Shown::Repeat);
        p.stamp(gst::Buffer::from_slice([3u8]), ms(3), None, Shown::Hidden);
        assert_eq!(p.last().unwrap().map_readable().unwrap()[0], 1);
        // A hidden (muted) frame is kept as it came.
        p.keep(gst::Buffer::from_slice([4u8]));
        assert_eq!(p.last().unwrap().map_readable().unwrap()[0], 4);
    }

    #[test]
    fn what_an_idle_track_shows() {
        use OnProducerEnd::*;
        assert_eq!(idle(true, Eos, false, true), Idle::Eos);
        assert_eq!(idle(true, Eos, true, true), Idle::Eos);
        assert_eq!(idle(true, Black, false, true), Idle::Black);
        assert_eq!(idle(true, Freeze, false, true), Idle::Last);
        assert_eq!(idle(true, Freeze, true, true), Idle::Black);
        // A producer that stalls: the last frame, or black while muted.
        assert_eq!(idle(false, Eos, false, true), Idle::Last);
        assert_eq!(idle(false, Eos, true, true), Idle::Black);
        // Muted before the format is known: there is no black frame to make.
        assert_eq!(idle(false, Eos, true, false), Idle::Last);
    }

    #[test]
    fn an_ended_track_without_frame_rate_repeats_once_a_second() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        // (now in ms, how long to wait then in ms; none: due now)
        for (now, wait) in [
            (0, None),
            (400, Some(600)),
            (1000, None),
            (1500, Some(500)),
            // Woken late: due at once, the next one a second after that.
            (3000, None),
            (3100, Some(900)),
        ] {
            assert_eq!(
                p.keepalive(t0 + Duration::from_millis(now)),
                wait.map(Duration::from_millis),
                "at {now} ms"
            );
        }
    }
}
