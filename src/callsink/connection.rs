// SPDX-License-Identifier: MPL-2.0
//! callsink's connection to the call: one supervisor thread per run (READY→PAUSED until
//! PAUSED→READY) owns the call's lifecycle as a typed [`Phase`] and reacts to messages:
//!
//! ```text
//!          caps                 answer              webrtcbin connected
//!  Idle ─────────> Offering ───────────> Connecting ───────────────────> Connected
//!                     ^                      │ no connection in time          │ RTCP silent while
//!                     │ backoff over         v (after the first call)         │ sending, ICE/DTLS
//!                     └──────────────── Waiting <─────────────────────────────┘ failed
//!  EOS: Connected ─> Draining (the encoder's last frames leave) ─> leave (DELETE ≤ 1 s), post EOS
//!       any other phase ──────────────────────────────────────────> leave, post EOS
//! ```
//!
//! Network work never blocks the supervisor for long: an attempt (offer, ICE gathering, the
//! WHIP POST) runs on a worker thread of its own that holds no reference to the element, only
//! the attempt's webrtcbin and the WHIP client. It reports back under the run's *generation*
//! lock: the supervisor bumps the generation whenever it moves on (a new attempt, leaving the
//! call, stopping), so a worker that finishes late finds its attempt abandoned and deletes the
//! session it made instead of reporting it. The only blocking call on the supervisor is the
//! DELETE that leaves the call, bounded to [`LEAVE_TIMEOUT`]. Stopping the element stops and
//! joins the supervisor; a worker still waiting for its POST ends by itself within the POST's
//! timeout and touches nothing of the element.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_webrtc::{WebRTCICEGatheringState, WebRTCPeerConnectionState, WebRTCSDPType};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::ConnectionState;
use super::chain::EncodingChain;
use super::codec::Codec;
use super::imp::{CAT, CallSink, answered_codec};
use super::liveness::{Backoff, Liveness, ReconnectLimit};
use super::whip;

/// Longest wait for ICE gathering before the offer goes out with what was gathered.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of the DELETE that leaves the call (at EOS, when stopping, before publishing again):
/// a server that is gone must not hold the pipeline.
pub const LEAVE_TIMEOUT: Duration = Duration::from_millis(750);
/// Bound of a WHIP POST while restoring a lost call (the first one uses `timeout`).
const RETRY_POST_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for ICE and DTLS to connect after the answer, while restoring a lost call.
const RETRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the encoder may take to let its last frames out at EOS.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the supervisor looks at the receiver's liveness while connected.
const LIVENESS_TICK: Duration = Duration::from_millis(100);

/// What the supervisor is told.
pub enum Msg {
    /// The first caps arrived: publish.
    Caps(gst::Caps),
    /// A publishing attempt ended: the server answered (or not).
    Answered {
        generation: u64,
        result: Result<whip::Session, AttemptError>,
    },
    /// webrtcbin `generation` changed its connection state.
    Peer {
        generation: u64,
        state: WebRTCPeerConnectionState,
    },
    /// EOS reached the sink pad.
    Eos(gst::Seqnum),
    /// EOS left the encoding chain: everything before it was sent.
    Drained,
    /// The element stops.
    Stop,
}

impl Msg {
    fn name(&self) -> &'static str {
        match self {
            Msg::Caps(_) => "caps",
            Msg::Answered { .. } => "answered",
            Msg::Peer { .. } => "peer",
            Msg::Eos(_) => "eos",
            Msg::Drained => "drained",
            Msg::Stop => "stop",
        }
    }
}

/// What a worker needs for one publishing attempt: no reference to the element.
struct Job {
    generation: u64,
    gate: Arc<Mutex<u64>>,
    tx: mpsc::Sender<Msg>,
    webrtcbin: gst::Element,
    client: Arc<whip::Client>,
    codecs: Vec<Codec>,
    ssrc: u32,
    /// The session of the call that was lost, deleted first.
    old: Option<String>,
    post_timeout: Duration,
}

/// Why an attempt failed.
pub enum AttemptError {
    /// Trying again will not help (the server refused us, the answer is unusable).
    Fatal(String),
    /// The server may answer later (unreachable, 5xx, timeout).
    Retry(String),
    /// The attempt was abandoned (the element stopped or left the call meanwhile).
    Abandoned,
}

impl From<whip::WhipError> for AttemptError {
    fn from(e: whip::WhipError) -> Self {
        if e.is_permanent() {
            AttemptError::Fatal(e.to_string())
        } else {
            AttemptError::Retry(e.to_string())
        }
    }
}

/// Where the call stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the first caps.
    Idle,
    /// An attempt (offer, WHIP POST, answer) runs on a worker thread.
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

/// The supervisor's own state.
struct Conn {
    phase: Phase,
    codecs: Vec<Codec>,
    backoff: Backoff,
    /// When the call was lost, while it is being restored.
    lost_at: Option<Instant>,
    /// The call was up once: later failures are retried instead of failing the element.
    was_connected: bool,
    eos_seqnum: Option<gst::Seqnum>,
    /// The liveness check learnt the receiver's pace (logged once per connection).
    pace_known: bool,
}

impl Conn {
    /// How long the supervisor may sleep before it has something to do on its own.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let until = |t: Instant| t.saturating_duration_since(now);
        match self.phase {
            Phase::Connected => Some(LIVENESS_TICK),
            Phase::Connecting { deadline } | Phase::Draining { deadline } => Some(until(deadline)),
            Phase::Waiting { at } => Some(until(at)),
            Phase::Idle | Phase::Offering | Phase::Ended => None,
        }
    }
}

/// The supervisor thread and the way to reach it.
pub struct Supervisor {
    tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CallSink {
    /// Starts the supervisor of a new run.
    pub(super) fn start_supervisor(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        let weak = self.obj().downgrade();
        let thread = std::thread::Builder::new()
            .name("callsink-connection".into())
            .spawn(move || supervise(weak, rx))
            .map_err(|e| format!("cannot start the connection thread: {e}"))?;
        *self.supervisor.lock().unwrap() = Some(Supervisor {
            tx,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Stops the supervisor (it leaves the call, bounded) and waits for it.
    pub(super) fn stop_supervisor(&self) {
        let supervisor = self.supervisor.lock().unwrap().take();
        if let Some(mut s) = supervisor {
            let _ = s.tx.send(Msg::Stop);
            if let Some(t) = s.thread.take()
                && t.join().is_err()
            {
                gst::error!(CAT, imp = self, "the connection thread panicked");
            }
        }
    }

    /// Tells the supervisor (if the element runs).
    pub(super) fn send(&self, msg: Msg) {
        if let Some(s) = self.supervisor.lock().unwrap().as_ref() {
            let _ = s.tx.send(msg);
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.supervisor
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.tx.clone())
    }

    fn handle(&self, conn: &mut Conn, msg: Msg) {
        gst::trace!(
            CAT,
            imp = self,
            "message {} in {:?}",
            msg.name(),
            conn.phase
        );
        match msg {
            Msg::Caps(caps) => {
                if conn.phase != Phase::Idle {
                    return;
                }
                match self.codecs_for(&caps) {
                    Ok(codecs) => {
                        conn.codecs = codecs;
                        self.set_connection_state(ConnectionState::Connecting);
                        self.start_attempt(conn);
                    }
                    Err(e) => self.give_up(conn, e),
                }
            }
            Msg::Answered { generation, result } => {
                if self.generation() != generation || conn.phase != Phase::Offering {
                    if let Ok(session) = result {
                        // Too late: the call was left meanwhile.
                        self.delete(&session.resource);
                    }
                    return;
                }
                let applied = result.and_then(|session| self.apply_answer(session));
                match applied {
                    Ok((codec, pt)) => self.answered(conn, codec, pt),
                    Err(e) => self.attempt_failed(conn, e),
                }
            }
            Msg::Peer { generation, state } => {
                if self.generation() != generation {
                    return;
                }
                match (state, conn.phase) {
                    (WebRTCPeerConnectionState::Connected, Phase::Connecting { .. }) => {
                        self.connected(conn)
                    }
                    (
                        WebRTCPeerConnectionState::Failed
                        | WebRTCPeerConnectionState::Disconnected
                        | WebRTCPeerConnectionState::Closed,
                        Phase::Connected | Phase::Connecting { .. },
                    ) => {
                        let nick = glib::EnumValue::from_value(&state.to_value())
                            .map(|(_, v)| v.nick().to_owned())
                            .unwrap_or_default();
                        self.lost(conn, format!("the WebRTC connection is {nick}"));
                    }
                    _ => (),
                }
            }
            Msg::Eos(seqnum) => {
                conn.eos_seqnum = Some(seqnum);
                match conn.phase {
                    Phase::Connected => {
                        conn.phase = Phase::Draining {
                            deadline: Instant::now() + DRAIN_TIMEOUT,
                        }
                    }
                    Phase::Ended | Phase::Draining { .. } => (),
                    _ => self.finish(conn),
                }
            }
            Msg::Drained => {
                if matches!(conn.phase, Phase::Draining { .. }) {
                    self.finish(conn);
                }
            }
            Msg::Stop => unreachable!("handled by the loop"),
        }
    }

    /// Time passed: check the receiver, deadlines, the backoff.
    fn tick(&self, conn: &mut Conn) {
        let now = Instant::now();
        match conn.phase {
            Phase::Connected => {
                gst::trace!(
                    CAT,
                    imp = self,
                    "liveness {:?}",
                    self.liveness.lock().unwrap()
                );
                if !conn.pace_known
                    && let Some(allowed) = self
                        .liveness
                        .lock()
                        .unwrap()
                        .as_ref()
                        .filter(|l| l.learned())
                        .map(Liveness::allowed_silence)
                {
                    conn.pace_known = true;
                    gst::debug!(
                        CAT,
                        imp = self,
                        "the receiver's RTCP pace is known: silence over {} ms while sending means it is gone",
                        allowed.as_millis()
                    );
                }
                let silence = self
                    .liveness
                    .lock()
                    .unwrap()
                    .as_ref()
                    .and_then(|l| l.lost(now).map(|s| (s, l.allowed_silence())));
                if let Some((silence, allowed)) = silence {
                    self.lost(
                        conn,
                        format!(
                            "no RTCP from the receiver for {} ms while sending (allowed: {} ms)",
                            silence.as_millis(),
                            allowed.as_millis()
                        ),
                    );
                }
            }
            Phase::Connecting { deadline } if now >= deadline => {
                let msg = format!(
                    "the WHIP server answered but the WebRTC connection (ICE, DTLS) did not come up within {} s: \
                     the server's ICE candidates are not reachable from here (use ice-servers for a TURN server across NATs)",
                    self.connect_timeout(conn).as_secs()
                );
                self.attempt_failed(conn, AttemptError::Retry(msg));
            }
            Phase::Waiting { at } if now >= at => self.start_attempt(conn),
            Phase::Draining { deadline } if now >= deadline => {
                gst::debug!(CAT, imp = self, "the encoder did not drain in time");
                self.finish(conn);
            }
            _ => (),
        }
    }

    fn connect_timeout(&self, conn: &Conn) -> Duration {
        let configured = Duration::from_secs(self.settings.lock().unwrap().timeout.max(1) as u64);
        if conn.was_connected {
            configured.min(RETRY_CONNECT_TIMEOUT)
        } else {
            configured
        }
    }

    /// Starts a publishing attempt on a worker thread: the first with the webrtcbin made at
    /// start, later ones with a new webrtcbin (the old session is deleted first).
    fn start_attempt(&self, conn: &mut Conn) {
        let retry = conn.was_connected;
        let webrtcbin = if retry {
            match self.replace_webrtcbin() {
                Ok(w) => w,
                Err(e) => return self.give_up(conn, e),
            }
        } else {
            self.state.lock().unwrap().webrtcbin.clone()
        };
        let generation = self.generation();
        let (client, old, ssrc) = {
            let mut state = self.state.lock().unwrap();
            (state.client.clone(), state.resource.take(), state.ssrc)
        };
        let (Some(webrtcbin), Some(client), Some(tx)) = (webrtcbin, client, self.sender()) else {
            return self.give_up(conn, "not started".into());
        };
        let post_timeout = if retry {
            self.connect_timeout(conn).min(RETRY_POST_TIMEOUT)
        } else {
            self.connect_timeout(conn)
        };
        if retry {
            gst::info!(
                CAT,
                imp = self,
                "publishing again (attempt {})",
                conn.backoff.attempts()
            );
        }
        let job = Job {
            generation,
            gate: self.gate.clone(),
            tx,
            webrtcbin,
            client,
            codecs: conn.codecs.clone(),
            ssrc,
            old,
            post_timeout,
        };
        let spawned = std::thread::Builder::new()
            .name("callsink-offer".into())
            .spawn(move || work(job));
        match spawned {
            Ok(_) => conn.phase = Phase::Offering,
            Err(e) => self.give_up(conn, format!("cannot start publishing: {e}")),
        }
    }

    /// The run's current generation.
    pub(super) fn generation(&self) -> u64 {
        *self.gate.lock().unwrap()
    }

    /// Moves the run to a new generation: whatever the older ones still do is abandoned.
    pub(super) fn next_generation(&self) -> u64 {
        let mut gate = self.gate.lock().unwrap();
        *gate += 1;
        *gate
    }

    /// Keeps the session the server answered with and applies its answer to the current
    /// webrtcbin. Returns the codec and payload type the answer chose.
    fn apply_answer(&self, session: whip::Session) -> Result<(Codec, u32), AttemptError> {
        let webrtcbin = {
            let mut state = self.state.lock().unwrap();
            state.resource = Some(session.resource.clone());
            if !session.ice_servers.is_empty() {
                gst::info!(
                    CAT,
                    imp = self,
                    "server announced ICE servers {:?} (used when publishing again)",
                    session.ice_servers
                );
                state.link_ice_servers =
                    session.ice_servers.iter().map(|s| s.to_gst_uri()).collect();
            }
            state.webrtcbin.clone()
        };
        let webrtcbin = webrtcbin.ok_or(AttemptError::Abandoned)?;
        gst::info!(CAT, imp = self, "published, session {}", session.resource);
        gst::debug!(CAT, imp = self, "answer:\n{}", session.answer);
        let fatal = AttemptError::Fatal;
        let (codec, pt) = answered_codec(&session.answer).map_err(fatal)?;
        let answer = gst_sdp::SDPMessage::parse_buffer(session.answer.as_bytes())
            .map_err(|_| fatal("the server's answer is not valid SDP".into()))?;
        gst::info!(
            CAT,
            imp = self,
            "the answer chose {} (payload {pt})",
            codec.encoding_name()
        );
        let desc = gst_webrtc::WebRTCSessionDescription::new(WebRTCSDPType::Answer, answer);
        let promise = gst::Promise::new();
        webrtcbin.emit_by_name::<()>("set-remote-description", &[&desc, &promise]);
        promise.wait();
        self.watch_rtcp(&webrtcbin);
        Ok((codec, pt))
    }

    /// The answer of the current attempt is applied: media may flow once connected.
    fn answered(&self, conn: &mut Conn, codec: Codec, pt: u32) {
        let (webrtcbin, built, current) = {
            let state = self.state.lock().unwrap();
            (
                state.webrtcbin.clone(),
                state.chain.is_some(),
                state.chain.as_ref().map(|c| c.codec),
            )
        };
        let Some(webrtcbin) = webrtcbin else {
            return self.give_up(conn, "not started".into());
        };
        let linked = if !built {
            let caps = self.state.lock().unwrap().input_caps.clone();
            match caps {
                Some(caps) => self.build_chain(&webrtcbin, &caps, codec, pt),
                None => Err("no caps".into()),
            }
        } else if current != Some(codec) || pt != codec.payload_type() as u32 {
            Err(format!(
                "the server now answers {} (payload type {}) instead of {} (payload type {})",
                codec.encoding_name(),
                pt,
                current.map(|c| c.encoding_name()).unwrap_or("?"),
                codec.payload_type()
            ))
        } else {
            self.relink_chain(&webrtcbin)
        };
        if let Err(e) = linked {
            return self.give_up(conn, e);
        }
        gst::debug!(
            CAT,
            imp = self,
            "answer applied ({})",
            codec.encoding_name()
        );
        conn.phase = Phase::Connecting {
            deadline: Instant::now() + self.connect_timeout(conn),
        };
    }

    fn connected(&self, conn: &mut Conn) {
        let now = Instant::now();
        conn.phase = Phase::Connected;
        conn.was_connected = true;
        conn.pace_known = false;
        conn.backoff = Backoff::new();
        if let Some(lost) = conn.lost_at.take() {
            gst::info!(
                CAT,
                imp = self,
                "call restored {} ms after it was lost",
                now.duration_since(lost).as_millis()
            );
        }
        *self.liveness.lock().unwrap() = Some(Liveness::new(now));
        self.release_chain();
        self.set_connection_state(ConnectionState::Connected);
    }

    /// The call was lost: hold the media and try again, within `reconnect-timeout`.
    fn lost(&self, conn: &mut Conn, reason: String) {
        let now = Instant::now();
        gst::warning!(CAT, imp = self, "connection lost: {reason}");
        *self.liveness.lock().unwrap() = None;
        self.hold_chain();
        let lost_at = *conn.lost_at.get_or_insert(now);
        if !self.reconnect_limit().allows(lost_at, now) {
            return self.give_up(
                conn,
                format!(
                    "the connection to the call was lost ({reason}) and reconnect-timeout is 0"
                ),
            );
        }
        if !conn.was_connected {
            // Never connected: this was the first attempt, which fails the element.
            return self.give_up(conn, reason);
        }
        self.set_connection_state(ConnectionState::Reconnecting);
        conn.phase = Phase::Waiting {
            at: now + conn.backoff.next_delay(),
        };
    }

    fn attempt_failed(&self, conn: &mut Conn, e: AttemptError) {
        let now = Instant::now();
        match e {
            AttemptError::Abandoned => (),
            AttemptError::Fatal(m) => self.give_up(conn, m),
            AttemptError::Retry(m) if !conn.was_connected => self.give_up(conn, m),
            AttemptError::Retry(m) => {
                let lost_at = *conn.lost_at.get_or_insert(now);
                if !self.reconnect_limit().allows(lost_at, now) {
                    return self.give_up(
                        conn,
                        format!(
                            "the connection to the call was lost and could not be restored within reconnect-timeout ({} attempts): {m}",
                            conn.backoff.attempts()
                        ),
                    );
                }
                let delay = conn.backoff.next_delay();
                gst::info!(
                    CAT,
                    imp = self,
                    "publishing again failed ({m}); next attempt in {} ms",
                    delay.as_millis()
                );
                conn.phase = Phase::Waiting { at: now + delay };
            }
        }
    }

    fn reconnect_limit(&self) -> ReconnectLimit {
        ReconnectLimit::from_seconds(self.settings.lock().unwrap().reconnect_timeout)
    }

    /// End of stream handled: leave the call and let the pipeline finish.
    fn finish(&self, conn: &mut Conn) {
        conn.phase = Phase::Ended;
        self.leave_call();
        self.set_connection_state(ConnectionState::Closed);
        gst::info!(CAT, imp = self, "end of stream: call left, posting EOS");
        let mut eos = gst::message::Eos::builder().src(&*self.obj());
        if let Some(seqnum) = conn.eos_seqnum {
            eos = eos.seqnum(seqnum);
        }
        let _ = self.obj().post_message(eos.build());
    }

    /// Fails the element with `msg` after leaving the call.
    fn give_up(&self, conn: &mut Conn, msg: String) {
        conn.phase = Phase::Ended;
        self.leave_call();
        gst::error!(CAT, imp = self, "{msg}");
        self.fail(msg);
    }

    /// Ends the WHIP session, if there is one, within LEAVE_TIMEOUT; any attempt still
    /// running is abandoned.
    pub(super) fn leave_call(&self) {
        self.next_generation();
        let resource = self.state.lock().unwrap().resource.take();
        *self.liveness.lock().unwrap() = None;
        if let Some(r) = resource {
            self.delete(&r);
        }
    }

    fn delete(&self, resource: &str) {
        let client = self.state.lock().unwrap().client.clone();
        if let Some(client) = client {
            match client.delete(resource, LEAVE_TIMEOUT) {
                Ok(()) => gst::info!(CAT, imp = self, "session {resource} ended"),
                Err(e) => gst::info!(CAT, imp = self, "DELETE {resource}: {e}"),
            }
        }
    }

    /// Notes every RTCP packet that comes from the receiver (reports, congestion feedback,
    /// NACKs, keyframe requests) for the liveness check.
    fn watch_rtcp(&self, webrtcbin: &gst::Element) {
        let pad = webrtcbin
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name("rtpbin"))
            .and_then(|r| r.static_pad("recv_rtcp_sink_0"));
        let Some(pad) = pad else {
            gst::warning!(
                CAT,
                imp = self,
                "cannot watch RTCP: a silent receiver will not be noticed"
            );
            return;
        };
        let weak = self.obj().downgrade();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                if let Some(obj) = weak.upgrade() {
                    gst::trace!(CAT, obj = obj, "RTCP from the receiver");
                    if let Some(l) = obj.imp().liveness.lock().unwrap().as_mut() {
                        l.rtcp_received(Instant::now());
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// Swaps in a new webrtcbin for the next attempt (a new generation); the encoding
    /// chain stays, held.
    fn replace_webrtcbin(&self) -> Result<Option<gst::Element>, String> {
        let mut settings = self.settings.lock().unwrap().clone();
        let generation = self.next_generation();
        let (old, endpoint) = {
            let mut state = self.state.lock().unwrap();
            settings.ice_servers.extend(state.link_ice_servers.clone());
            (
                state.webrtcbin.take(),
                state.endpoint.clone().ok_or("not started")?,
            )
        };
        self.hold_chain();
        if let Some(src) = self.chain_end()
            && let Some(peer) = src.peer()
        {
            let _ = src.unlink(&peer);
        }
        if let Some(old) = old {
            let _ = old.set_state(gst::State::Null);
            let _ = self.obj().remove(&old);
        }
        let webrtcbin = self.make_webrtcbin(&settings, &endpoint, generation)?;
        self.obj().add(&webrtcbin).map_err(|e| e.to_string())?;
        webrtcbin
            .sync_state_with_parent()
            .map_err(|e| e.to_string())?;
        self.state.lock().unwrap().webrtcbin = Some(webrtcbin.clone());
        Ok(Some(webrtcbin))
    }

    /// Links the held encoding chain to the current webrtcbin's new transceiver.
    fn relink_chain(&self, webrtcbin: &gst::Element) -> Result<(), String> {
        let src = self.chain_end().ok_or("not publishing")?;
        let sinkpad = webrtcbin
            .sink_pads()
            .into_iter()
            .find(|p| !p.is_linked())
            .ok_or("webrtcbin gave no sink pad")?;
        src.link(&sinkpad)
            .map_err(|e| format!("cannot link to webrtcbin: {e:?}"))?;
        Ok(())
    }

    /// The src pad of the last element of the encoding chain.
    fn chain_end(&self) -> Option<gst::Pad> {
        self.state
            .lock()
            .unwrap()
            .chain
            .as_ref()
            .and_then(EncodingChain::end)
    }

    /// Drops what the chain sends while the call is down (nothing waits for it).
    fn hold_chain(&self) {
        let Some(src) = self.chain_end() else { return };
        let mut state = self.state.lock().unwrap();
        if state.hold.is_none() {
            state.hold = src.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Drop,
            );
        }
    }

    fn release_chain(&self) {
        let Some(src) = self.chain_end() else { return };
        if let Some(id) = self.state.lock().unwrap().hold.take() {
            src.remove_probe(id);
        }
    }
}

/// The supervisor's loop. See the module documentation.
fn supervise(weak: glib::WeakRef<super::CallSink>, rx: mpsc::Receiver<Msg>) {
    let mut conn = Conn {
        phase: Phase::Idle,
        codecs: vec![],
        backoff: Backoff::new(),
        lost_at: None,
        was_connected: false,
        eos_seqnum: None,
        pace_known: false,
    };
    loop {
        let msg = match conn.wait(Instant::now()) {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let Some(obj) = weak.upgrade() else { return };
        let imp = obj.imp();
        match msg {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if conn.phase != Phase::Ended {
                    imp.leave_call();
                }
                imp.next_generation();
                // Sessions a worker reported before the generation moved on.
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Answered {
                        result: Ok(session),
                        ..
                    } = msg
                    {
                        imp.delete(&session.resource);
                    }
                }
                return;
            }
            Ok(msg) => imp.handle(&mut conn, msg),
            Err(mpsc::RecvTimeoutError::Timeout) => imp.tick(&mut conn),
        }
    }
}

/// A worker's publishing attempt: delete the lost session, offer, POST; report the answer
/// if the run is still at this attempt's generation, otherwise delete the new session.
fn work(job: Job) {
    let result = attempt(&job);
    let gate = job.gate.lock().unwrap();
    if *gate == job.generation {
        let _ = job.tx.send(Msg::Answered {
            generation: job.generation,
            result,
        });
        return;
    }
    drop(gate);
    if let Ok(session) = result {
        gst::debug!(
            CAT,
            obj = job.webrtcbin,
            "attempt abandoned: deleting its session {}",
            session.resource
        );
        let _ = job.client.delete(&session.resource, LEAVE_TIMEOUT);
    }
}

fn attempt(job: &Job) -> Result<whip::Session, AttemptError> {
    if let Some(old) = &job.old {
        // Servers that allow one session per endpoint would refuse the new one.
        if let Err(e) = job.client.delete(old, LEAVE_TIMEOUT) {
            gst::debug!(
                CAT,
                obj = job.webrtcbin,
                "DELETE of the lost session {old}: {e}"
            );
        }
    }
    let sdp = offer(&job.webrtcbin, &job.codecs, job.ssrc)?;
    Ok(job.client.publish(&sdp, job.post_timeout)?)
}

/// Offers `codecs` on a new sendonly transceiver of `webrtcbin` and returns the offer
/// once ICE gathering is complete (or after GATHERING_TIMEOUT).
fn offer(webrtcbin: &gst::Element, codecs: &[Codec], ssrc: u32) -> Result<String, AttemptError> {
    let fatal = AttemptError::Fatal;
    let mut prefs = gst::Caps::new_empty();
    {
        let prefs = prefs.get_mut().expect("new caps are writable");
        for c in codecs {
            prefs.append_structure(c.offer_caps(ssrc));
        }
    }
    let trans = webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
        "add-transceiver",
        &[&gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly, &prefs],
    );
    trans.set_property("do-nack", true);

    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    let offer = match promise.wait() {
        gst::PromiseResult::Replied => promise
            .get_reply()
            .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("offer").ok())
            .ok_or_else(|| fatal("webrtcbin made no offer".into()))?,
        other => return Err(fatal(format!("webrtcbin made no offer ({other:?})"))),
    };
    let (gathered_tx, gathered) = mpsc::channel::<()>();
    let handler = webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        if bin.property::<WebRTCICEGatheringState>("ice-gathering-state")
            == WebRTCICEGatheringState::Complete
        {
            let _ = gathered_tx.send(());
        }
    });
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("set-local-description", &[&offer, &promise]);
    promise.wait();
    if webrtcbin.property::<WebRTCICEGatheringState>("ice-gathering-state")
        != WebRTCICEGatheringState::Complete
        && gathered.recv_timeout(GATHERING_TIMEOUT).is_err()
    {
        gst::info!(
            CAT,
            obj = webrtcbin,
            "ICE gathering not complete after {GATHERING_TIMEOUT:?}: offering what was gathered"
        );
    }
    webrtcbin.disconnect(handler);
    let local = webrtcbin
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| fatal("webrtcbin has no local description".into()))?;
    let sdp = local.sdp().as_text().map_err(|e| fatal(e.to_string()))?;
    gst::debug!(CAT, obj = webrtcbin, "offer:\n{sdp}");
    Ok(sdp)
}
