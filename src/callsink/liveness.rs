// SPDX-License-Identifier: MPL-2.0
//! When is the call lost, and when to try again: the rules callsink follows, without
//! threads or clocks of their own so that they are tested with made-up instants.
//!
//! What a healthy receiver sends back while we send media: RTCP. A WebRTC receiver sends
//! transport-wide congestion control feedback every 50–100 ms for the packets it got (str0m,
//! Janus, Chromium), receiver reports every second or so, NACKs and keyframe requests when
//! needed. So while media flows, silence means the receiver is gone (the server was killed
//! or restarted, the network changed). While we send nothing (the track is paused) the
//! receiver has nothing to answer and silence means nothing; ICE keeps the pair alive then
//! and webrtcbin reports when it fails.

use std::time::{Duration, Instant};

/// Silence after which the receiver is gone, once its usual pace is known.
const MIN_SILENCE: Duration = Duration::from_millis(1200);
/// Silence after which the receiver is gone while its pace is not known yet (the first
/// 100–200 ms of a call with a WebRTC receiver), and at most: receivers that send nothing but
/// RTP/AVP receiver reports send them every 2.5 to 7.5 s.
const MAX_SILENCE: Duration = Duration::from_secs(10);
/// RTCP packets seen while sending before their pace is trusted.
const LEARNING_SAMPLES: u32 = 3;
/// A pause in sending longer than this ends a sending streak.
const SENDING_PAUSE: Duration = Duration::from_millis(500);
/// The largest gap between two RTCP packets decays by this factor with every packet, so
/// one slow moment is forgotten after a minute or so of fast feedback.
const GAP_DECAY: f64 = 0.999;

/// Tells, from the RTP we send and the RTCP that comes back, whether the receiver is gone.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// When the connection came up: silence is counted from here at the earliest.
    connected: Instant,
    last_rtp: Option<Instant>,
    last_rtcp: Option<Instant>,
    /// Start of the current streak of sending without pauses.
    sending_since: Option<Instant>,
    /// Largest gap between two RTCP packets while sending (decaying).
    max_gap: Duration,
    samples: u32,
}

impl Liveness {
    pub fn new(connected: Instant) -> Liveness {
        Liveness {
            connected,
            last_rtp: None,
            last_rtcp: None,
            sending_since: None,
            max_gap: Duration::ZERO,
            samples: 0,
        }
    }

    fn sending(&self, now: Instant) -> bool {
        self.last_rtp
            .is_some_and(|t| now.saturating_duration_since(t) <= SENDING_PAUSE)
    }

    /// An RTP packet left.
    pub fn rtp_sent(&mut self, now: Instant) {
        if !self.sending(now) {
            self.sending_since = Some(now);
        }
        self.last_rtp = Some(now);
    }

    /// An RTCP packet came from the receiver.
    pub fn rtcp_received(&mut self, now: Instant) {
        if let (Some(last), Some(since)) = (self.last_rtcp, self.sending_since)
            && self.sending(now)
            && last >= since
        {
            let gap = now.saturating_duration_since(last);
            self.max_gap = self.max_gap.mul_f64(GAP_DECAY).max(gap);
            self.samples = self.samples.saturating_add(1);
        }
        self.last_rtcp = Some(now);
    }

    /// Whether the receiver's pace is known.
    pub fn learned(&self) -> bool {
        self.samples >= LEARNING_SAMPLES
    }

    /// How long the receiver may stay silent while we send.
    pub fn allowed_silence(&self) -> Duration {
        if self.samples < LEARNING_SAMPLES {
            MAX_SILENCE
        } else {
            (self.max_gap * 3).clamp(MIN_SILENCE, MAX_SILENCE)
        }
    }

    /// `Some(silence)` when the receiver has said nothing for longer than it may while we
    /// kept sending.
    pub fn lost(&self, now: Instant) -> Option<Duration> {
        if !self.sending(now) {
            return None;
        }
        let since = [Some(self.connected), self.last_rtcp, self.sending_since]
            .into_iter()
            .flatten()
            .max()?;
        let silence = now.saturating_duration_since(since);
        (silence > self.allowed_silence()).then_some(silence)
    }
}

/// The waits between attempts to publish again: short at first (a server that restarts is
/// back within a second or two), then every [`Backoff::MAX_DELAY`], so that a server that
/// comes back after a long time is found again within that delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    pub const MAX_DELAY: Duration = Duration::from_secs(2);
    const FIRST_DELAY: Duration = Duration::from_millis(250);

    pub fn new() -> Backoff {
        Backoff { attempts: 0 }
    }

    /// The wait before the next attempt: none before the first, then 250 ms doubling up to
    /// MAX_DELAY.
    pub fn next_delay(&mut self) -> Duration {
        let n = self.attempts;
        self.attempts = self.attempts.saturating_add(1);
        if n == 0 {
            return Duration::ZERO;
        }
        Self::FIRST_DELAY
            .saturating_mul(1 << (n - 1).min(8))
            .min(Self::MAX_DELAY)
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// How long callsink keeps trying to publish again after losing the call (the
/// `reconnect-timeout` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectLimit {
    /// Keep trying for as long as the pipeline runs.
    Forever,
    /// Give up once this long has passed since the call was lost (zero: at once).
    After(Duration),
}

impl ReconnectLimit {
    /// From the property value: negative is forever, otherwise seconds.
    pub fn from_seconds(secs: i32) -> ReconnectLimit {
        match u64::try_from(secs) {
            Ok(s) => ReconnectLimit::After(Duration::from_secs(s)),
            Err(_) => ReconnectLimit::Forever,
        }
    }

    /// Whether another attempt may start at `now` for a call lost at `lost`.
    pub fn allows(&self, lost: Instant, now: Instant) -> bool {
        match self {
            ReconnectLimit::Forever => true,
            ReconnectLimit::After(d) => now.saturating_duration_since(lost) < *d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends a frame every 33 ms and gets feedback every 50 ms from `from` to `to`.
    fn healthy(l: &mut Liveness, t0: Instant, from: u64, to: u64) {
        let mut t = from;
        while t < to {
            if t.is_multiple_of(33) {
                l.rtp_sent(t0 + ms(t));
            }
            if t.is_multiple_of(50) {
                l.rtcp_received(t0 + ms(t));
            }
            assert_eq!(l.lost(t0 + ms(t)), None, "false alarm at {t} ms");
            t += 1;
        }
    }

    #[test]
    fn a_healthy_call_never_looks_lost() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        healthy(&mut l, t0, 0, 120_000);
        assert_eq!(l.allowed_silence(), MIN_SILENCE);
    }

    #[test]
    fn silence_while_sending_is_noticed_within_the_allowed_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        healthy(&mut l, t0, 0, 10_000);
        // The server dies at 10 s: frames keep going out, nothing comes back.
        let mut t = 10_000;
        let noticed = loop {
            l.rtp_sent(t0 + ms(t));
            if l.lost(t0 + ms(t)).is_some() {
                break t;
            }
            t += 33;
        };
        let after = noticed - 10_000;
        assert!((1100..1300).contains(&after), "noticed after {after} ms");
    }

    #[test]
    fn a_paused_track_is_not_a_lost_call() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        healthy(&mut l, t0, 0, 5_000);
        // Nothing sent and nothing received for 30 s.
        for t in (5_000..35_000).step_by(100) {
            assert_eq!(l.lost(t0 + ms(t)), None);
        }
        // Sending again: the receiver answers within 50 ms, no alarm.
        healthy(&mut l, t0, 35_000, 40_000);
        // Sending again, no answer at all: noticed.
        let t = 40_000 + 1_400;
        for t in (40_000..=t).step_by(33) {
            l.rtp_sent(t0 + ms(t));
        }
        assert!(l.lost(t0 + ms(t)).is_some());
    }

    #[test]
    fn a_receiver_that_reports_every_few_seconds_is_given_time() {
        // RTP/AVP receiver reports: every 5 s on average, randomised over 2.5 to 7.5 s.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        let reports = [
            2_600u64, 9_900, 12_600, 20_000, 23_000, 30_400, 33_000, 40_000,
        ];
        for t in (0..40_000u64).step_by(33) {
            l.rtp_sent(t0 + ms(t));
            if let Some(r) = reports.iter().find(|&&r| r >= t && r < t + 33) {
                l.rtcp_received(t0 + ms(*r));
            }
            assert_eq!(l.lost(t0 + ms(t)), None, "false alarm at {t} ms");
        }
    }

    #[test]
    fn a_slow_receiver_is_given_time() {
        // A receiver that only sends a report every second (no congestion feedback) is
        // learnt, and not taken for gone between its reports.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        for t in 0..30_000u64 {
            if t.is_multiple_of(33) {
                l.rtp_sent(t0 + ms(t));
            }
            if t % 1000 == 999 {
                l.rtcp_received(t0 + ms(t));
            }
            assert_eq!(l.lost(t0 + ms(t)), None, "false alarm at {t} ms");
        }
        assert_eq!(l.allowed_silence(), Duration::from_secs(3));
    }

    #[test]
    fn before_the_pace_is_known_the_receiver_gets_the_longest_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        for t in (0..9_900).step_by(33) {
            l.rtp_sent(t0 + ms(t));
            assert_eq!(l.lost(t0 + ms(t)), None);
        }
        l.rtp_sent(t0 + ms(10_100));
        assert!(l.lost(t0 + ms(10_100)).is_some());
    }

    #[test]
    fn backoff_is_short_at_first_and_capped() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [0, 250, 500, 1000, 2000, 2000, 2000, 2000]);
        for _ in 0..1000 {
            assert_eq!(b.next_delay(), Backoff::MAX_DELAY);
        }
    }

    #[test]
    fn reconnect_limit() {
        let t0 = Instant::now();
        assert!(ReconnectLimit::from_seconds(-1).allows(t0, t0 + Duration::from_secs(86_400)));
        assert!(!ReconnectLimit::from_seconds(0).allows(t0, t0));
        let five = ReconnectLimit::from_seconds(5);
        assert!(five.allows(t0, t0 + ms(4_999)));
        assert!(!five.allows(t0, t0 + ms(5_000)));
    }
}
