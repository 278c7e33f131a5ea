// SPDX-License-Identifier: MPL-2.0
//! callsink's connection to the call: one supervisor thread per run (READY→PAUSED until
//! PAUSED→READY) feeds what happens to the call's [`Session`] (its rules, in `session.rs`)
//! and carries out the steps it decides:
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
use gst_webrtc::WebRTCPeerConnectionState;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::ConnectionState;
use super::chain::EncodingChain;
use super::codec::Codec;
use super::imp::{CAT, CallSink, answered_codec, check_answer};
use super::liveness::{Liveness, ReconnectLimit};
use super::session::{Phase, Session, Step};
use super::whip;

/// Bound of the DELETE that leaves the call (at EOS, when stopping, before publishing again):
/// a server that is gone must not hold the pipeline.
pub const LEAVE_TIMEOUT: Duration = Duration::from_millis(750);
/// Bound of a WHIP POST while restoring a lost call (the first one uses `timeout`).
const RETRY_POST_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for ICE and DTLS to connect after the answer, while restoring a lost call.
const RETRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Simulcast rids offered, lowest first (empty: one stream).
    rids: Vec<&'static str>,
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

/// The supervisor's own state: the call's lifecycle and what it carries along.
struct Conn {
    session: Session,
    codecs: Vec<Codec>,
    /// Simulcast rids to offer, lowest first (empty: one stream).
    rids: Vec<&'static str>,
    eos_seqnum: Option<gst::Seqnum>,
    /// The liveness check learnt the receiver's pace (logged once per connection).
    pace_known: bool,
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
            conn.session.phase
        );
        let now = Instant::now();
        let step = match msg {
            Msg::Caps(caps) => match conn.session.caps() {
                Step::Attempt => match self.codecs_for(&caps) {
                    Ok(codecs) => {
                        conn.codecs = codecs;
                        conn.rids = self.simulcast_rids(&caps);
                        self.set_connection_state(ConnectionState::Connecting);
                        Step::Attempt
                    }
                    Err(e) => conn.session.fail(e),
                },
                other => other,
            },
            Msg::Answered { generation, result } => {
                if self.generation() != generation || conn.session.phase != Phase::Offering {
                    if let Ok(session) = result {
                        // Too late: the call was left meanwhile.
                        self.delete(&session.resource);
                    }
                    return;
                }
                let applied = result
                    .and_then(|session| self.apply_answer(session))
                    .and_then(|(codec, pt)| {
                        self.link_answered(codec, pt).map_err(AttemptError::Fatal)
                    });
                match applied {
                    Ok(()) => {
                        conn.session
                            .answered(now, self.connect_timeout(&conn.session));
                        Step::Nothing
                    }
                    Err(AttemptError::Abandoned) => Step::Nothing,
                    Err(AttemptError::Fatal(m)) => {
                        conn.session.failed(now, m, false, self.reconnect_limit())
                    }
                    Err(AttemptError::Retry(m)) => {
                        self.log_retry(&m, &conn.session, now);
                        conn.session.failed(now, m, true, self.reconnect_limit())
                    }
                }
            }
            Msg::Peer { generation, state } => {
                if self.generation() != generation {
                    return;
                }
                match state {
                    WebRTCPeerConnectionState::Connected => {
                        if let Some(away) = conn.session.connected(now) {
                            gst::info!(
                                CAT,
                                imp = self,
                                "call restored {} ms after it was lost",
                                away.as_millis()
                            );
                        }
                        if conn.session.phase == Phase::Connected {
                            conn.pace_known = false;
                            *self.liveness.lock().unwrap() = Some(Liveness::new(now));
                            self.release_chain();
                            self.set_connection_state(ConnectionState::Connected);
                        }
                        Step::Nothing
                    }
                    WebRTCPeerConnectionState::Failed
                    | WebRTCPeerConnectionState::Disconnected
                    | WebRTCPeerConnectionState::Closed => {
                        let nick = glib::EnumValue::from_value(&state.to_value())
                            .map(|(_, v)| v.nick().to_owned())
                            .unwrap_or_default();
                        conn.session.lost(
                            now,
                            format!("the WebRTC connection is {nick}"),
                            self.reconnect_limit(),
                        )
                    }
                    _ => Step::Nothing,
                }
            }
            Msg::Eos(seqnum) => {
                conn.eos_seqnum = Some(seqnum);
                conn.session.eos(now)
            }
            Msg::Drained => conn.session.drained(),
            Msg::Stop => unreachable!("handled by the loop"),
        };
        self.carry_out(conn, step);
    }

    /// Time passed: check the receiver, deadlines, the backoff.
    fn tick(&self, conn: &mut Conn) {
        let now = Instant::now();
        let mut silence = None;
        if conn.session.phase == Phase::Connected {
            let liveness = self.liveness.lock().unwrap();
            if let Some(l) = liveness.as_ref() {
                gst::trace!(CAT, imp = self, "liveness {l:?}");
                if !conn.pace_known && l.learned() {
                    conn.pace_known = true;
                    gst::debug!(
                        CAT,
                        imp = self,
                        "the receiver's RTCP pace is known: silence over {} ms while sending means it is gone",
                        l.allowed_silence().as_millis()
                    );
                }
                silence = l.lost(now).map(|s| (s, l.allowed_silence()));
            }
        }
        if matches!(conn.session.phase, Phase::Draining { deadline } if now >= deadline) {
            gst::debug!(CAT, imp = self, "the encoder did not drain in time");
        }
        let step = conn.session.tick(
            now,
            silence,
            self.connect_timeout(&conn.session),
            self.reconnect_limit(),
        );
        self.carry_out(conn, step);
    }

    /// Does what the session decided.
    fn carry_out(&self, conn: &mut Conn, step: Step) {
        match step {
            Step::Nothing => (),
            Step::Attempt => self.start_attempt(conn),
            Step::Reconnect { reason } => {
                gst::warning!(CAT, imp = self, "connection lost: {reason}");
                *self.liveness.lock().unwrap() = None;
                self.hold_chain();
                self.set_connection_state(ConnectionState::Reconnecting);
            }
            Step::Finish => {
                self.leave_call();
                self.set_connection_state(ConnectionState::Closed);
                gst::info!(CAT, imp = self, "end of stream: call left, posting EOS");
                let mut eos = gst::message::Eos::builder().src(&*self.obj());
                if let Some(seqnum) = conn.eos_seqnum {
                    eos = eos.seqnum(seqnum);
                }
                let _ = self.obj().post_message(eos.build());
            }
            Step::GiveUp(msg) => {
                self.leave_call();
                gst::error!(CAT, imp = self, "{msg}");
                self.fail(msg);
            }
        }
    }

    fn log_retry(&self, reason: &str, session: &Session, now: Instant) {
        if let Phase::Waiting { at } = session.phase {
            gst::info!(
                CAT,
                imp = self,
                "publishing again failed ({reason}); next attempt in {} ms",
                at.saturating_duration_since(now).as_millis()
            );
        }
    }

    fn connect_timeout(&self, session: &Session) -> Duration {
        let configured = Duration::from_secs(self.settings.lock().unwrap().timeout.max(1) as u64);
        if session.was_connected {
            configured.min(RETRY_CONNECT_TIMEOUT)
        } else {
            configured
        }
    }

    /// Starts a publishing attempt on a worker thread: the first with the webrtcbin made at
    /// start, later ones with a new webrtcbin (the old session is deleted first).
    fn start_attempt(&self, conn: &mut Conn) {
        let retry = conn.session.was_connected;
        let webrtcbin = if retry {
            match self.replace_webrtcbin() {
                Ok(w) => w,
                Err(e) => {
                    let step = conn.session.fail(e);
                    return self.carry_out(conn, step);
                }
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
            let step = conn.session.fail("not started".into());
            return self.carry_out(conn, step);
        };
        let post_timeout = if retry {
            self.connect_timeout(&conn.session).min(RETRY_POST_TIMEOUT)
        } else {
            self.connect_timeout(&conn.session)
        };
        if retry {
            gst::info!(
                CAT,
                imp = self,
                "publishing again (attempt {})",
                conn.session.attempts()
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
            rids: conn.rids.clone(),
            old,
            post_timeout,
        };
        let spawned = std::thread::Builder::new()
            .name("callsink-offer".into())
            .spawn(move || work(job));
        match spawned {
            Ok(_) => conn.session.offering(),
            Err(e) => {
                let step = conn.session.fail(format!("cannot start publishing: {e}"));
                self.carry_out(conn, step)
            }
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
        gst::info!(
            CAT,
            imp = self,
            "the answer chose {} (payload {pt})",
            codec.encoding_name()
        );
        self.state.lock().unwrap().answered = super::imp::AnsweredMedia::parse(&session.answer);
        super::net::set_answer(&webrtcbin, &session.answer).map_err(fatal)?;
        self.watch_rtcp(&webrtcbin);
        Ok((codec, pt))
    }

    /// Links the encoding chain (built now, for the first answer) to the current
    /// webrtcbin, which has the answer: media may flow once connected.
    fn link_answered(&self, codec: Codec, pt: u32) -> Result<(), String> {
        let (webrtcbin, current, caps) = {
            let state = self.state.lock().unwrap();
            (
                state.webrtcbin.clone(),
                state.chain.as_ref().map(|c| c.codec),
                state.input_caps.clone(),
            )
        };
        let webrtcbin = webrtcbin.ok_or("not started")?;
        match current {
            None => self.build_chain(&webrtcbin, &caps.ok_or("no caps")?, codec, pt)?,
            Some(c) if c == codec && pt == codec.payload_type() as u32 => {
                self.relink_chain(&webrtcbin)?
            }
            Some(c) => {
                return Err(format!(
                    "the server now answers {} (payload type {pt}) instead of {} (payload type {})",
                    codec.encoding_name(),
                    c.encoding_name(),
                    c.payload_type()
                ));
            }
        }
        gst::debug!(
            CAT,
            imp = self,
            "answer applied ({})",
            codec.encoding_name()
        );
        Ok(())
    }

    fn reconnect_limit(&self) -> ReconnectLimit {
        ReconnectLimit::from_seconds(self.settings.lock().unwrap().reconnect_timeout)
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
        session: Session::default(),
        codecs: vec![],
        rids: vec![],
        eos_seqnum: None,
        pace_known: false,
    };
    loop {
        let msg = match conn.session.wait(Instant::now()) {
            Some(d) => rx.recv_timeout(d),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let Some(obj) = weak.upgrade() else { return };
        let imp = obj.imp();
        match msg {
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if conn.session.phase != Phase::Ended {
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
    let sdp = offer(&job.webrtcbin, &job.codecs, job.ssrc, &job.rids)?;
    let session = job.client.publish(&sdp, job.post_timeout)?;
    if let Err(e) = check_answer(&sdp, &session.answer) {
        let _ = job.client.delete(&session.resource, LEAVE_TIMEOUT);
        return Err(AttemptError::Fatal(format!(
            "{} answered with an unusable SDP answer: {e}",
            job.client.endpoint()
        )));
    }
    Ok(session)
}

/// Offers `codecs` on a new sendonly transceiver of `webrtcbin` (with simulcast layers
/// `rids`, if any) and returns the offer once ICE gathering is complete (see
/// `net::local_offer`).
fn offer(
    webrtcbin: &gst::Element,
    codecs: &[Codec],
    ssrc: u32,
    rids: &[&str],
) -> Result<String, AttemptError> {
    let fatal = AttemptError::Fatal;
    let mut prefs = gst::Caps::new_empty();
    {
        let prefs = prefs.get_mut().expect("new caps are writable");
        for (i, c) in codecs.iter().enumerate() {
            prefs.append_structure(if rids.is_empty() {
                c.offer_caps(ssrc)
            } else {
                c.simulcast_offer_caps(rids, i == 0)
            });
        }
    }
    let trans = webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
        "add-transceiver",
        &[&gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly, &prefs],
    );
    trans.set_property("do-nack", true);

    super::net::local_offer(webrtcbin).map_err(fatal)
}
