// SPDX-License-Identifier: MPL-2.0
//! Where callsink's call stands, and what happens next: a typed state with the rules of the
//! call's lifecycle, with no element, thread or clock of its own (the supervisor in
//! `connection.rs` feeds it what happened and carries out the [`Step`] it returns), so every
//! rule is tested with made-up instants.

use std::time::{Duration, Instant};

use super::liveness::{Backoff, ReconnectLimit};

/// How long the encoder may take to let its last frames out at EOS.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the receiver's liveness is looked at while connected.
pub const LIVENESS_TICK: Duration = Duration::from_millis(100);

/// Where the call stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Waiting for the first caps.
    Idle,
    /// An attempt (offer, WHIP POST) runs on a worker thread.
    Offering,
    /// The answer is applied; ICE and DTLS must connect before `deadline`.
    Connecting { deadline: Instant },
    /// Media flows.
    Connected,
    /// The call was lost; the next attempt starts at `at`.
    Waiting { at: Instant },
    /// End of stream: the encoder's last frames leave before `deadline`, then the call ends.
    Draining { deadline: Instant },
    /// The call ended (EOS posted) or failed (error posted).
    Ended,
}

/// What the supervisor does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nothing,
    /// Start a publishing attempt now (a new webrtcbin when `was_connected`).
    Attempt,
    /// The call was lost: hold the media, report `reconnecting`; the next attempt comes
    /// when the phase says.
    Reconnect {
        reason: String,
    },
    /// Leave the call and post EOS.
    Finish,
    /// Leave the call and fail the element with this message.
    GiveUp(String),
}

/// The call's lifecycle. See the module documentation.
#[derive(Debug)]
pub struct Session {
    pub phase: Phase,
    backoff: Backoff,
    /// When the call was lost, while it is being restored.
    lost_at: Option<Instant>,
    /// The call was up once: later failures are retried instead of failing the element.
    pub was_connected: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            phase: Phase::Idle,
            backoff: Backoff::new(),
            lost_at: None,
            was_connected: false,
        }
    }
}

impl Session {
    /// How long the supervisor may sleep before it has something to do on its own.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let until = |t: Instant| t.saturating_duration_since(now);
        match self.phase {
            Phase::Connected => Some(LIVENESS_TICK),
            Phase::Connecting { deadline } | Phase::Draining { deadline } => Some(until(deadline)),
            Phase::Waiting { at } => Some(until(at)),
            Phase::Idle | Phase::Offering | Phase::Ended => None,
        }
    }

    /// Attempts made since the call was last up.
    pub fn attempts(&self) -> u32 {
        self.backoff.attempts()
    }

    /// The first caps arrived.
    pub fn caps(&mut self) -> Step {
        match self.phase {
            Phase::Idle => Step::Attempt,
            _ => Step::Nothing,
        }
    }

    /// An attempt started.
    pub fn offering(&mut self) {
        self.phase = Phase::Offering;
    }

    /// The answer was applied; ICE and DTLS have `connect_timeout` to come up.
    pub fn answered(&mut self, now: Instant, connect_timeout: Duration) {
        self.phase = Phase::Connecting {
            deadline: now + connect_timeout,
        };
    }

    /// webrtcbin connected. Returns how long the call was away, when it was restored.
    pub fn connected(&mut self, now: Instant) -> Option<Duration> {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return None;
        }
        self.phase = Phase::Connected;
        self.was_connected = true;
        self.backoff = Backoff::new();
        self.lost_at
            .take()
            .map(|t| now.saturating_duration_since(t))
    }

    /// The connection failed or the receiver fell silent.
    pub fn lost(&mut self, now: Instant, reason: String, limit: ReconnectLimit) -> Step {
        if !matches!(self.phase, Phase::Connected | Phase::Connecting { .. }) {
            return Step::Nothing;
        }
        if !self.was_connected {
            // The first attempt never connected: that fails the element.
            self.phase = Phase::Ended;
            return Step::GiveUp(reason);
        }
        match self.next_attempt(now, limit) {
            Some(_) => Step::GiveUp(format!(
                "the connection to the call was lost ({reason}) and reconnect-timeout is 0"
            )),
            None => Step::Reconnect { reason },
        }
    }

    /// An attempt failed: `retry` false when asking again cannot help.
    pub fn failed(
        &mut self,
        now: Instant,
        reason: String,
        retry: bool,
        limit: ReconnectLimit,
    ) -> Step {
        if !retry || !self.was_connected {
            self.phase = Phase::Ended;
            return Step::GiveUp(reason);
        }
        match self.next_attempt(now, limit) {
            Some(attempts) => Step::GiveUp(format!(
                "the connection to the call was lost and could not be restored within reconnect-timeout ({attempts} attempts): {reason}"
            )),
            None => Step::Nothing,
        }
    }

    /// Schedules the next attempt after the backoff, if `limit` allows one since the call
    /// was lost; otherwise ends the session and returns the attempts made.
    fn next_attempt(&mut self, now: Instant, limit: ReconnectLimit) -> Option<u32> {
        let lost_at = *self.lost_at.get_or_insert(now);
        if !limit.allows(lost_at, now) {
            self.phase = Phase::Ended;
            return Some(self.backoff.attempts());
        }
        self.phase = Phase::Waiting {
            at: now + self.backoff.next_delay(),
        };
        None
    }

    /// EOS reached the sink.
    pub fn eos(&mut self, now: Instant) -> Step {
        match self.phase {
            Phase::Connected => {
                self.phase = Phase::Draining {
                    deadline: now + DRAIN_TIMEOUT,
                };
                Step::Nothing
            }
            Phase::Ended | Phase::Draining { .. } => Step::Nothing,
            _ => self.finish(),
        }
    }

    /// EOS left the encoding chain.
    pub fn drained(&mut self) -> Step {
        match self.phase {
            Phase::Draining { .. } => self.finish(),
            _ => Step::Nothing,
        }
    }

    fn finish(&mut self) -> Step {
        self.phase = Phase::Ended;
        Step::Finish
    }

    /// The element fails for a reason of its own (it cannot build its chain, ...).
    pub fn fail(&mut self, reason: String) -> Step {
        self.phase = Phase::Ended;
        Step::GiveUp(reason)
    }

    /// Time passed. `silence` is the receiver's silence while sending and the silence it is
    /// allowed, when it is over that; `connect_timeout` how long ICE and DTLS were given.
    pub fn tick(
        &mut self,
        now: Instant,
        silence: Option<(Duration, Duration)>,
        connect_timeout: Duration,
        limit: ReconnectLimit,
    ) -> Step {
        match self.phase {
            Phase::Connected => match silence {
                Some((silence, allowed)) => self.lost(
                    now,
                    format!(
                        "no RTCP from the receiver for {} ms while sending (allowed: {} ms)",
                        silence.as_millis(),
                        allowed.as_millis()
                    ),
                    limit,
                ),
                None => Step::Nothing,
            },
            Phase::Connecting { deadline } if now >= deadline => self.failed(
                now,
                format!(
                    "the WHIP server answered but the WebRTC connection (ICE, DTLS) did not come up within {} s: \
                     the server's ICE candidates are not reachable from here (use ice-servers for a TURN server across NATs)",
                    connect_timeout.as_secs()
                ),
                true,
                limit,
            ),
            Phase::Waiting { at } if now >= at => Step::Attempt,
            Phase::Draining { deadline } if now >= deadline => self.finish(),
            _ => Step::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: ReconnectLimit = ReconnectLimit::Forever;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// A session that connected at `t0`.
    fn connected(t0: Instant) -> Session {
        let mut s = Session::default();
        assert_eq!(s.caps(), Step::Attempt);
        s.offering();
        s.answered(t0, Duration::from_secs(10));
        assert_eq!(s.connected(t0), None);
        assert_eq!(s.phase, Phase::Connected);
        s
    }

    #[test]
    fn the_first_connection_is_not_retried() {
        let t0 = Instant::now();
        let mut s = Session::default();
        s.caps();
        s.offering();
        let step = s.failed(t0, "cannot reach http://x".into(), true, FOREVER);
        assert_eq!(step, Step::GiveUp("cannot reach http://x".into()));
        assert_eq!(s.phase, Phase::Ended);
        // Nor is a first connection whose ICE never comes up.
        let mut s = Session::default();
        s.caps();
        s.offering();
        s.answered(t0, Duration::from_secs(10));
        assert_eq!(
            s.tick(ms(t0, 9_000), None, Duration::from_secs(10), FOREVER),
            Step::Nothing
        );
        let step = s.tick(ms(t0, 10_000), None, Duration::from_secs(10), FOREVER);
        assert!(matches!(step, Step::GiveUp(m) if m.contains("did not come up within 10 s")));
    }

    #[test]
    fn a_lost_call_is_retried_with_backoff_until_it_is_back() {
        let t0 = Instant::now();
        let mut s = connected(t0);
        let step = s.tick(
            ms(t0, 5_000),
            Some((Duration::from_millis(1300), Duration::from_millis(1200))),
            Duration::from_secs(5),
            FOREVER,
        );
        assert!(matches!(step, Step::Reconnect { reason } if reason.contains("1300 ms")));
        // At once, then after 250 ms, 500 ms, 1 s, 2 s, 2 s...
        let mut now = ms(t0, 5_000);
        let mut waits = vec![];
        for _ in 0..7 {
            let Phase::Waiting { at } = s.phase else {
                panic!("{:?}", s.phase)
            };
            waits.push(at.duration_since(now).as_millis());
            now = at;
            assert_eq!(
                s.tick(now, None, Duration::from_secs(5), FOREVER),
                Step::Attempt
            );
            s.offering();
            assert_eq!(
                s.failed(now, "cannot reach".into(), true, FOREVER),
                Step::Nothing
            );
        }
        assert_eq!(waits, [0, 250, 500, 1000, 2000, 2000, 2000]);
        // The server is back: the next attempt connects, and the backoff starts over.
        let Phase::Waiting { at } = s.phase else {
            panic!()
        };
        assert_eq!(
            s.tick(at, None, Duration::from_secs(5), FOREVER),
            Step::Attempt
        );
        s.offering();
        s.answered(at, Duration::from_secs(5));
        let away = s.connected(ms(at, 100)).expect("restored");
        assert_eq!(away, ms(at, 100).duration_since(ms(t0, 5_000)));
        assert_eq!(s.attempts(), 0);
    }

    #[test]
    fn reconnect_timeout_bounds_the_tries() {
        let t0 = Instant::now();
        // 0: the loss is the end.
        let mut s = connected(t0);
        let step = s.lost(
            t0,
            "the WebRTC connection is failed".into(),
            ReconnectLimit::from_seconds(0),
        );
        assert!(matches!(step, Step::GiveUp(m) if m.contains("reconnect-timeout is 0")));
        // 3 s: attempts until then, then an error that names the last cause.
        let limit = ReconnectLimit::from_seconds(3);
        let mut s = connected(t0);
        assert!(matches!(
            s.lost(t0, "silent".into(), limit),
            Step::Reconnect { .. }
        ));
        let mut now;
        let step = loop {
            let Phase::Waiting { at } = s.phase else {
                panic!("{:?}", s.phase)
            };
            now = at;
            s.offering();
            let step = s.failed(now, "cannot reach http://x".into(), true, limit);
            if step != Step::Nothing {
                break step;
            }
        };
        assert!(now.duration_since(t0) >= Duration::from_secs(3));
        assert!(
            matches!(step, Step::GiveUp(m) if m.contains("within reconnect-timeout") && m.contains("cannot reach"))
        );
        // A refusal for good (a 401) is not retried.
        let mut s = connected(t0);
        s.lost(t0, "silent".into(), FOREVER);
        s.offering();
        assert!(matches!(
            s.failed(t0, "HTTP 401".into(), false, FOREVER),
            Step::GiveUp(_)
        ));
    }

    #[test]
    fn end_of_stream_in_every_phase() {
        let t0 = Instant::now();
        // Connected: the encoder drains first, at most DRAIN_TIMEOUT.
        let mut s = connected(t0);
        assert_eq!(s.eos(t0), Step::Nothing);
        assert_eq!(s.drained(), Step::Finish);
        let mut s = connected(t0);
        s.eos(t0);
        assert_eq!(
            s.tick(ms(t0, 499), None, Duration::ZERO, FOREVER),
            Step::Nothing
        );
        assert_eq!(
            s.tick(ms(t0, 500), None, Duration::ZERO, FOREVER),
            Step::Finish
        );
        assert_eq!(s.drained(), Step::Nothing, "finished once");
        // Before the call is up, or while it is down: at once.
        let mut s = Session::default();
        assert_eq!(s.eos(t0), Step::Finish);
        let mut s = Session::default();
        s.caps();
        s.offering();
        assert_eq!(s.eos(t0), Step::Finish);
        let mut s = connected(t0);
        s.lost(t0, "silent".into(), FOREVER);
        assert_eq!(s.eos(t0), Step::Finish);
        assert_eq!(s.eos(t0), Step::Nothing);
    }

    #[test]
    fn the_supervisor_sleeps_until_it_has_something_to_do() {
        let t0 = Instant::now();
        let mut s = Session::default();
        assert_eq!(s.wait(t0), None);
        s.caps();
        s.offering();
        assert_eq!(s.wait(t0), None, "the worker reports");
        s.answered(t0, Duration::from_secs(10));
        assert_eq!(s.wait(t0), Some(Duration::from_secs(10)));
        s.connected(t0);
        assert_eq!(s.wait(t0), Some(LIVENESS_TICK));
        // Late news changes nothing.
        assert_eq!(s.connected(t0), None);
        assert_eq!(s.caps(), Step::Nothing);
    }
}
