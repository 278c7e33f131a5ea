// SPDX-License-Identifier: MPL-2.0
//! The forwarding core of the call server, in sans-IO style: it owns one `str0m::Rtc` per
//! peer, takes requests (publish, subscribe, trickle, leave), datagrams and time, and hands
//! back datagrams to send. No sockets, threads or clocks in here, so it runs the same in the
//! server's I/O loop and in unit tests with in-memory peers.
//!
//! Media is forwarded frame by frame without decoding: a publisher's depacketized frames are
//! written to each subscriber's `Rtc`, which packetizes, encrypts and retransmits (NACK/RTX)
//! on its own leg. Keyframe requests (PLI/FIR) from subscribers go to the publisher,
//! rate-limited, and a subscriber that connects mid-stream asks for one.
//!
//! Liveness: every session runs full ICE (not ICE-lite), so the server itself checks each
//! peer's candidate pair with a STUN binding request every 3 s, which every ICE stack
//! answers. An ICE-lite server would depend on the peer's own requests instead, and libnice
//! (webrtcbin, whipclientsink, whepclientsrc) sends none once connected: it keeps the pair
//! up with binding *indications* every 25 s, which str0m's lite agent does not count, so
//! such peers were dropped 15 s into every call. A peer from which nothing at all (STUN
//! answer, media, RTCP) arrives for [`SfuConfig::peer_timeout`] is dropped.
//!
//! Subscribers watch a publisher by its uid, not by its session: when a publisher goes away
//! (it left, lost its connection, or reconnects with the same uid) its subscribers wait for
//! a publisher with that uid for [`SfuConfig::rejoin_grace`] and continue with it, their
//! media timeline unbroken.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::CAT;
use super::Limits;
use super::bitstream;
use super::layers::{self, Fit, Layer, Quality, Take};
use super::sdp::{self, OfferError};
use super::stun;
use super::udp::Batcher;
use crate::codec::Codec as VideoCodec;
use crate::rate::Rate;

/// Minimum time between two keyframe requests sent to one publisher.
const KEYFRAME_REQUEST_SPACING: Duration = Duration::from_millis(100);
/// A keyframe request not answered after this long is sent again; until then, new requests
/// wait for the keyframe already asked for.
const KEYFRAME_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// A session that has not connected after this long is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of [`SfuConfig::peer_timeout`]: three connectivity checks unanswered.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`SfuConfig::rejoin_grace`].
pub const DEFAULT_REJOIN_GRACE: Duration = Duration::from_secs(30);

/// Why a request was refused; each maps to an HTTP status and carries a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuError {
    Offer(OfferError),
    NotFound(String),
    NotAcceptable(String),
    BadRequest(String),
    /// 422: the request is understood but not done (an ICE restart, RFC 9725 §4.3.1).
    Unprocessable(String),
    /// A server-wide limit is reached (503): try again later.
    Busy(String),
    /// A limit for one client is reached (429): try again later.
    TooMany(String),
}

impl SfuError {
    pub fn status(&self) -> u16 {
        match self {
            SfuError::Offer(e) => e.status(),
            SfuError::NotFound(_) => 404,
            SfuError::NotAcceptable(_) => 406,
            SfuError::BadRequest(_) => 400,
            SfuError::Unprocessable(_) => 422,
            SfuError::Busy(_) => 503,
            SfuError::TooMany(_) => 429,
        }
    }
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::Offer(e) => e.fmt(f),
            SfuError::NotFound(s)
            | SfuError::NotAcceptable(s)
            | SfuError::BadRequest(s)
            | SfuError::Unprocessable(s)
            | SfuError::Busy(s)
            | SfuError::TooMany(s) => f.write_str(s),
        }
    }
}

impl From<OfferError> for SfuError {
    fn from(e: OfferError) -> Self {
        SfuError::Offer(e)
    }
}

/// What the server tells about one publisher (`/api/channels`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PublisherInfo {
    pub uid: String,
    pub state: &'static str,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Received media bitrate over the last second, bit/s.
    pub bitrate: u64,
    pub packets: u64,
    pub frames: u64,
    pub packets_lost: u64,
    pub nacks: u64,
    pub plis: u64,
    pub subscribers: usize,
    /// Simulcast layers (RFC 8853), smallest first; empty for a single stream.
    pub layers: Vec<LayerInfo>,
}

/// One simulcast layer of a publisher.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerInfo {
    pub rid: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frames: u64,
}

/// What the server tells about one subscriber.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubscriberInfo {
    /// Its resource id: whoever holds it controls the session, so the API does not tell it.
    #[serde(skip)]
    pub id: String,
    pub publisher: String,
    pub state: &'static str,
    pub packets: u64,
    pub bitrate: u64,
    /// The layer it asked for (`high`, `medium`, `low`).
    pub quality: &'static str,
    /// The publisher's simulcast layer it gets, if the publisher sends layers.
    pub layer: Option<String>,
    /// The server's bandwidth estimate of its link, bits/s (subscribers of a simulcast
    /// publisher, once there is one).
    pub estimate: Option<u64>,
    /// The largest layer its link carries, when that is not the largest one.
    pub ceiling: Option<String>,
}

/// One channel: its publishers and subscribers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelInfo {
    pub name: String,
    pub publishers: Vec<PublisherInfo>,
    pub subscribers: Vec<SubscriberInfo>,
}

/// A session created by publish or subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Resource id (the last path segment of the `Location`).
    pub id: String,
    pub answer: String,
}

/// Whether a keyframe request may go to a publisher now: a keyframe arrived since the last
/// request (a subscriber that joined just after it gets the next one at once) and the
/// requests stay KEYFRAME_REQUEST_SPACING apart, or the last request went unanswered for
/// KEYFRAME_REQUEST_TIMEOUT.
fn keyframe_request_due(
    now: Instant,
    last_request: Option<Instant>,
    last_keyframe: Option<Instant>,
) -> bool {
    let Some(asked) = last_request else {
        return true;
    };
    let since = now.saturating_duration_since(asked);
    let answered = last_keyframe.is_some_and(|k| k >= asked);
    (answered && since >= KEYFRAME_REQUEST_SPACING) || since >= KEYFRAME_REQUEST_TIMEOUT
}

#[derive(Debug, Default)]
struct Publisher {
    /// Media sections the publisher sends (mid, kind).
    tracks: Vec<(Mid, MediaKind)>,
    /// Video codecs accepted in the answer, in order.
    codecs: Vec<VideoCodec>,
    /// The codec of the frames it sends.
    codec: Option<VideoCodec>,
    size: Option<(u32, u32)>,
    frames: u64,
    packets: u64,
    packets_lost: u64,
    nacks: u64,
    plis: u64,
    rate: Rate,
    /// A subscriber needs a keyframe.
    keyframe_wanted: bool,
    /// Subscribers were waiting for it when it joined.
    has_subscribers: bool,
    last_keyframe_request: Option<Instant>,
    last_keyframe: Option<Instant>,
    /// Simulcast layers, in the order they first sent.
    layers: Vec<Layer>,
    /// Its offer sends simulcast (`a=simulcast:send`).
    simulcast: bool,
}

#[derive(Debug, Default)]
struct Subscriber {
    /// The uid of the publisher it watches, in the session's channel.
    publisher_uid: String,
    /// The publisher's current session; `None` while the publisher is away.
    publisher: Option<u64>,
    /// Since when the publisher is away.
    waiting_since: Option<Instant>,
    /// Video codecs of the subscriber's answer.
    codecs: Vec<VideoCodec>,
    /// Keeps the subscriber's media time continuous across publisher sessions.
    timeline: Timeline,
    /// Payload types of the answer's media sections.
    answered_pts: Vec<u8>,
    /// Media sections the subscriber receives (mid, kind).
    outs: Vec<(Mid, MediaKind)>,
    packets: u64,
    rate: Rate,
    /// Which simulcast layer it asks for, and the one it gets.
    quality: Quality,
    layer: Option<Rid>,
    /// The layers its link carries (subscribers of a simulcast publisher).
    fit: Fit,
    /// The bitrate its bandwidth estimator probes for, bits/s.
    desired: u64,
}

/// Maps the media time of the publisher sessions a subscriber is fed from onto one
/// continuous timeline: when the source session changes (the publisher reconnected), the
/// next frame is placed after the last one sent by the wall-clock time in between, so the
/// receiver sees a pause rather than a jump of the RTP timestamps.
#[derive(Debug, Default)]
struct Timeline {
    /// The publisher session and its layer.
    source: Option<(u64, Option<Rid>)>,
    /// Added to the source's time, in ticks of its clock.
    offset: i128,
    /// The last time written, and when.
    last: Option<(MediaTime, Instant)>,
}

impl Timeline {
    fn map(&mut self, source: (u64, Option<Rid>), time: MediaTime, now: Instant) -> MediaTime {
        if self.source != Some(source) {
            self.source = Some(source);
            self.offset = match self.last {
                Some((last, at)) if last.frequency() == time.frequency() => {
                    let elapsed = MediaTime::from(now.saturating_duration_since(at))
                        .rebase(time.frequency())
                        .numer()
                        .max(1);
                    last.numer() as i128 + elapsed as i128 - time.numer() as i128
                }
                _ => 0,
            };
        }
        let numer = (time.numer() as i128 + self.offset).clamp(0, u64::MAX as i128) as u64;
        let out = MediaTime::new(numer, time.frequency());
        self.last = Some((out, now));
        out
    }
}

#[derive(Debug)]
enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

struct Session {
    id: String,
    channel: String,
    uid: String,
    rtc: Rtc,
    role: Role,
    created: Instant,
    /// When the peer last sent anything (STUN, DTLS, media, RTCP).
    last_heard: Instant,
    connected: bool,
    /// ICE lost every candidate pair (it may find one again).
    ice_disconnected: bool,
    /// When the `Rtc` wants time to advance next.
    next_timeout: Instant,
    /// Polled since it last got input.
    dirty: bool,
    /// ICE username fragment of the remote peer (from its offer).
    remote_ufrag: Option<String>,
    /// The server's ICE username fragment for this session (from the answer).
    local_ufrag: Option<String>,
    /// The candidate addresses the peer gave (offer and trickle).
    remote_addresses: Vec<SocketAddr>,
    /// The HTTP client that made the session.
    client: IpAddr,
    /// Its processing panicked: it is dropped without touching its `Rtc` again.
    failed: bool,
    /// Tests make a session's processing panic with this.
    #[cfg(test)]
    explode: bool,
}

impl Session {
    fn state(&self) -> &'static str {
        let waiting = matches!(&self.role, Role::Subscriber(sub) if sub.publisher.is_none());
        match (self.rtc.is_alive(), self.connected, self.ice_disconnected) {
            (false, _, _) => "closed",
            (true, _, _) if waiting => "waiting",
            (true, true, false) => "connected",
            (true, true, true) => "disconnected",
            (true, false, _) => "connecting",
        }
    }

    fn publisher_mut(&mut self) -> Option<&mut Publisher> {
        match &mut self.role {
            Role::Publisher(p) => Some(p),
            Role::Subscriber(_) => None,
        }
    }

    fn subscriber_mut(&mut self) -> Option<&mut Subscriber> {
        match &mut self.role {
            Role::Subscriber(s) => Some(s),
            Role::Publisher(_) => None,
        }
    }
}

/// What `insert` needs to know about a new session.
struct NewSession<'a> {
    id: &'a str,
    channel: &'a str,
    uid: String,
    client: IpAddr,
    offer: &'a str,
    answer: &'a str,
}

/// Configuration of the forwarding core.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates every peer is given (the server's one UDP socket).
    pub candidates: Vec<SocketAddr>,
    /// A peer from which nothing arrives for this long is dropped. Healthy peers answer the
    /// server's connectivity checks (every 3 s) even when they send no media.
    pub peer_timeout: Duration,
    /// How long the subscribers of a publisher that went away wait for a publisher with the
    /// same uid before their sessions end.
    pub rejoin_grace: Duration,
    /// How many sessions, channels, publishers and subscribers the server takes on.
    pub limits: Limits,
    /// Threads that share the work of many sessions at once (a frame forwarded to every
    /// subscriber, their output, their timers); 1: all on the media loop's thread.
    pub threads: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            candidates: vec![],
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            rejoin_grace: DEFAULT_REJOIN_GRACE,
            limits: Limits::default(),
            threads: 1,
        }
    }
}

/// What a session resource tells its holder (`GET /resource/{id}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceInfo {
    /// `publisher` or `subscriber`.
    pub kind: &'static str,
    pub channel: String,
    /// The publisher's uid (for a subscriber, the uid it watches).
    pub uid: String,
    /// `connecting`, `connected`, `disconnected`, `waiting` (a subscriber whose publisher is
    /// away) or `closed`.
    pub state: &'static str,
}

/// Runs one step of a session's processing. A panic in it (a bug, reached by what a peer
/// sent) marks the session failed, to be dropped at the next poll, instead of ending the
/// media loop and every call with it.
fn guarded<T>(s: &mut Session, what: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| f(s))) {
        Ok(v) => Some(v),
        Err(panic) => {
            gst::error!(
                CAT,
                "session {} ({} in {}) failed on {what}: {}; dropping it",
                s.id,
                s.uid,
                s.channel,
                panic_message(&*panic)
            );
            s.failed = true;
            None
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Candidate addresses indexed per session, and sessions per indexed address.
const MAX_INDEXED_CANDIDATES: usize = 32;
const MAX_SESSIONS_PER_CANDIDATE: usize = 4;

/// A request that forwards work between sessions, collected while polling.
enum Forward {
    Media(u64, Box<MediaData>),
    /// A subscriber needs a keyframe of the publisher (of one simulcast layer).
    Keyframe(u64, Option<Rid>),
}

/// The forwarding core. See the module documentation.
pub struct Sfu {
    config: SfuConfig,
    /// One DTLS certificate for every session: generating one per peer costs more than
    /// the rest of setting the peer up.
    cert: Option<str0m::config::DtlsCert>,
    sessions: HashMap<u64, Session>,
    /// Where datagrams come from: the session that last took one from that address.
    by_source: HashMap<SocketAddr, u64>,
    /// Sessions by resource id.
    by_id: HashMap<String, u64>,
    /// Sessions by the server's ICE ufrag: a binding request from a new address names its
    /// session in its USERNAME.
    by_ufrag: HashMap<String, u64>,
    /// Sessions by the candidate addresses their peers gave: answers to the server's own
    /// checks come from there.
    by_candidate: HashMap<SocketAddr, Vec<u64>>,
    next_key: u64,
    /// Sessions asked whether they take a datagram (tests count the work per datagram).
    #[cfg(test)]
    asked: std::cell::Cell<u64>,
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Sfu {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        Sfu {
            config,
            cert,
            sessions: HashMap::new(),
            by_source: HashMap::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_candidate: HashMap::new(),
            next_key: 1,
            #[cfg(test)]
            asked: Default::default(),
        }
    }

    /// A peer; `bwe`: with a bandwidth estimator (and the pacer it drives) on what it sends.
    fn new_rtc(&self, now: Instant, bwe: bool) -> Rtc {
        let mut builder = Rtc::builder();
        if let Some(cert) = &self.cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        if bwe {
            builder = builder.enable_bwe(Some(BWE_START));
        }
        let mut rtc = builder
            .clear_codecs()
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_h264(true)
            .enable_av1(true)
            .enable_opus(true, false)
            .set_ice_lite(false)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        for addr in &self.config.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => gst::warning!(CAT, "cannot use {addr} as a candidate: {e}"),
            }
        }
        rtc
    }

    /// A key for a new session and its resource id: 128 random bits from the kernel, so
    /// that one id tells nothing about any other.
    fn new_session_key(&mut self) -> (u64, String) {
        let key = self.next_key;
        self.next_key += 1;
        loop {
            let id = format!("{:016x}{:016x}", crate::random::u64(), crate::random::u64());
            if !self.by_id.contains_key(&id) {
                return (key, id);
            }
        }
    }

    /// A new peer for `offer`, and the answer. The offer is checked and parsed before the
    /// peer (and its DTLS context) is made: an offer that is refused costs little.
    fn accept(&self, now: Instant, offer: &str, bwe: bool) -> Result<(Rtc, String), SfuError> {
        sdp::check_offer(offer)?;
        let malformed = |e: String| SfuError::Offer(OfferError::Malformed(e));
        catch_unwind(AssertUnwindSafe(|| {
            let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| {
                // str0m's parse errors name a memory address, which tells a client nothing
                // it can use (and something about the server's memory it should not know).
                let e = e.to_string();
                malformed(match e.find(" at PointerOffset") {
                    Some(i) => format!("{}: a line does not follow RFC 8866", &e[..i]),
                    None => e,
                })
            })?;
            let mut rtc = self.new_rtc(now, bwe);
            let answer: SdpAnswer = rtc
                .sdp_api()
                .accept_offer(parsed)
                .map_err(|e| malformed(e.to_string()))?;
            Ok((rtc, answer.to_sdp_string()))
        }))
        .unwrap_or_else(|panic| {
            gst::error!(
                CAT,
                "an offer made the SDP stack fail: {}",
                panic_message(&*panic)
            );
            Err(malformed(
                "the server could not process this offer".to_owned(),
            ))
        })
    }

    /// Whether one more session may start, within the server-wide and per-client limits.
    fn admit(&self, client: IpAddr) -> Result<(), SfuError> {
        let limits = &self.config.limits;
        if self.sessions.len() >= limits.sessions {
            return Err(SfuError::Busy(format!(
                "the server has {} sessions, its limit (--max-sessions)",
                self.sessions.len()
            )));
        }
        let connecting = self
            .sessions
            .values()
            .filter(|s| s.client == client && !s.connected)
            .count();
        if connecting >= limits.connecting_per_address {
            return Err(SfuError::TooMany(format!(
                "{client} has {connecting} sessions still connecting, the limit for one address \
                 (--max-connecting)"
            )));
        }
        Ok(())
    }

    /// Whether `uid` may publish in `channel`, within the channel limits. A publisher that
    /// replaces its own earlier session takes no new place.
    fn admit_publisher(&self, channel: &str, uid: Option<&str>) -> Result<(), SfuError> {
        let limits = &self.config.limits;
        let mut channels: Vec<&str> = self.sessions.values().map(|s| s.channel.as_str()).collect();
        channels.sort_unstable();
        channels.dedup();
        if !channels.contains(&channel) && channels.len() >= limits.channels {
            return Err(SfuError::Busy(format!(
                "the server has {} channels, its limit (--max-channels)",
                channels.len()
            )));
        }
        let publishers = self
            .sessions
            .values()
            .filter(|s| {
                s.channel == channel
                    && matches!(s.role, Role::Publisher(_))
                    && uid.is_none_or(|u| u != s.uid)
            })
            .count();
        if publishers >= limits.publishers_per_channel {
            return Err(SfuError::Busy(format!(
                "channel \"{channel}\" has {publishers} publishers, its limit (--max-publishers)"
            )));
        }
        Ok(())
    }

    /// WHIP: a publisher joins `channel` with an SDP offer. A publisher with the same uid in
    /// the channel is replaced (a client that reconnects takes its place).
    pub fn publish(
        &mut self,
        now: Instant,
        client: IpAddr,
        channel: &str,
        uid: Option<&str>,
        offer: &str,
    ) -> Result<Created, SfuError> {
        let uid = uid.filter(|u| !u.is_empty());
        self.admit(client)?;
        self.admit_publisher(channel, uid)?;
        let (rtc, answer) = self.accept(now, offer, false)?;
        let codecs = sdp::video_codecs(&answer);
        if codecs.is_empty() {
            return Err(SfuError::Offer(OfferError::UnsupportedCodecs(
                sdp::offered_video_codecs(offer),
            )));
        }
        let (key, id) = self.new_session_key();
        let uid = uid
            .map(str::to_owned)
            .unwrap_or_else(|| format!("publisher-{key}"));
        if let Some(old) = self
            .sessions
            .iter()
            .find(|(_, s)| {
                s.channel == channel && s.uid == uid && matches!(s.role, Role::Publisher(_))
            })
            .map(|(k, _)| *k)
        {
            gst::info!(
                CAT,
                "publisher {uid} in {channel} reconnected, replacing its old session"
            );
            self.close(old, now);
        }
        gst::info!(CAT, "publisher {uid} joins {channel} ({})", names(&codecs));
        self.insert(
            key,
            NewSession {
                id: &id,
                channel,
                uid,
                client,
                offer,
                answer: &answer,
            },
            rtc,
            Role::Publisher(Publisher {
                codecs,
                simulcast: sdp::sends_simulcast(offer),
                ..Default::default()
            }),
            now,
        );
        self.attach_waiting(key);
        Ok(Created { id, answer })
    }

    /// WHEP: a subscriber asks for the track of publisher `uid` in `channel`.
    pub fn subscribe(
        &mut self,
        now: Instant,
        client: IpAddr,
        channel: &str,
        uid: &str,
        offer: &str,
    ) -> Result<Created, SfuError> {
        self.admit(client)?;
        let (pub_key, pub_codecs, simulcast) = self
            .sessions
            .iter()
            .find_map(|(k, s)| match &s.role {
                Role::Publisher(p) if s.channel == channel && s.uid == uid && s.rtc.is_alive() => {
                    Some((*k, p.codecs.clone(), p.simulcast))
                }
                _ => None,
            })
            .ok_or_else(|| {
                if self.sessions.values().any(|s| s.channel == channel) {
                    SfuError::NotFound(format!("no publisher \"{uid}\" in channel \"{channel}\""))
                } else {
                    SfuError::NotFound(format!("no channel \"{channel}\""))
                }
            })?;
        let wanted = sdp::offered_video_codecs(offer);
        let accepted = sdp::video_codecs(offer);
        if sdp::has_video(offer) && !accepted.iter().any(|c| pub_codecs.contains(c)) {
            return Err(SfuError::NotAcceptable(format!(
                "publisher \"{uid}\" sends {} but the offer accepts only {}",
                names(&pub_codecs).replace(", ", "/"),
                if wanted.is_empty() {
                    "no video codec".to_owned()
                } else {
                    wanted.join(", ")
                }
            )));
        }
        let subscribers = self
            .sessions
            .values()
            .filter(|s| {
                s.channel == channel
                    && matches!(&s.role, Role::Subscriber(sub) if sub.publisher_uid == uid)
            })
            .count();
        if subscribers >= self.config.limits.subscribers_per_publisher {
            return Err(SfuError::Busy(format!(
                "publisher \"{uid}\" has {subscribers} subscribers, its limit (--max-subscribers)"
            )));
        }
        // The layer a subscriber of a simulcast publisher gets follows its link: the server
        // estimates it (an estimator sends probes and padding: worth it where there is a
        // layer to choose).
        let (rtc, answer) = self.accept(now, offer, simulcast)?;
        let (key, id) = self.new_session_key();
        gst::info!(CAT, "subscriber {id} joins {channel} for {uid}");
        gst::trace!(CAT, "subscriber offer:\n{offer}\nanswer:\n{answer}");
        let role = Role::Subscriber(Subscriber {
            publisher_uid: uid.to_owned(),
            publisher: Some(pub_key),
            codecs: sdp::video_codecs(&answer),
            answered_pts: sdp::payload_types(&answer),
            ..Default::default()
        });
        let new = NewSession {
            id: &id,
            channel,
            uid: id.clone(),
            client,
            offer,
            answer: &answer,
        };
        self.insert(key, new, rtc, role, now);
        Ok(Created { id, answer })
    }

    fn insert(&mut self, key: u64, new: NewSession, rtc: Rtc, role: Role, now: Instant) {
        let local_ufrag = sdp::ice_ufrag(new.answer);
        if let Some(u) = &local_ufrag {
            self.by_ufrag.insert(u.clone(), key);
        }
        self.by_id.insert(new.id.to_owned(), key);
        let mut session = Session {
            id: new.id.to_owned(),
            channel: new.channel.to_owned(),
            uid: new.uid,
            rtc,
            role,
            created: now,
            last_heard: now,
            connected: false,
            ice_disconnected: false,
            next_timeout: now,
            dirty: true,
            remote_ufrag: sdp::ice_ufrag(new.offer),
            local_ufrag,
            remote_addresses: vec![],
            client: new.client,
            failed: false,
            #[cfg(test)]
            explode: false,
        };
        let candidates = new
            .offer
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a="))
            .filter(|l| l.starts_with("candidate:"));
        for c in candidates {
            if let Ok(c) = Candidate::from_sdp_string(c) {
                self.index_candidate(key, &mut session, c.addr());
            }
        }
        self.sessions.insert(key, session);
    }

    /// Notes that answers to the server's checks for session `key` may come from `addr`.
    fn index_candidate(&mut self, key: u64, session: &mut Session, addr: SocketAddr) {
        if session.remote_addresses.len() >= MAX_INDEXED_CANDIDATES
            || session.remote_addresses.contains(&addr)
        {
            return;
        }
        session.remote_addresses.push(addr);
        let keys = self.by_candidate.entry(addr).or_default();
        if keys.len() >= MAX_SESSIONS_PER_CANDIDATE {
            keys.remove(0);
        }
        keys.push(key);
    }

    fn key_of(&self, id: &str) -> Result<u64, SfuError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| SfuError::NotFound(format!("no session \"{id}\"")))
    }

    /// What the holder of resource `id` may know about its session.
    pub fn resource(&self, id: &str) -> Result<ResourceInfo, SfuError> {
        let s = &self.sessions[&self.key_of(id)?];
        let (kind, uid) = match &s.role {
            Role::Publisher(_) => ("publisher", s.uid.clone()),
            Role::Subscriber(sub) => ("subscriber", sub.publisher_uid.clone()),
        };
        Ok(ResourceInfo {
            kind,
            channel: s.channel.clone(),
            uid,
            state: s.state(),
        })
    }

    /// Which simulcast layer subscriber `id` asks for; it moves to it at that layer's next
    /// keyframe (asked for at once).
    pub fn set_quality(&mut self, id: &str, quality: Quality) -> Result<(), SfuError> {
        let key = self.key_of(id)?;
        match self.sessions.get_mut(&key).map(|s| &mut s.role) {
            Some(Role::Subscriber(sub)) => {
                sub.quality = quality;
                Ok(())
            }
            _ => Err(SfuError::BadRequest(format!(
                "session \"{id}\" is not a subscriber: only subscribers choose a quality"
            ))),
        }
    }

    /// Trickle ICE: remote candidates for session `id` (a PATCH body).
    pub fn trickle(&mut self, id: &str, fragment: &str) -> Result<(), SfuError> {
        let key = self.key_of(id)?;
        let frag = sdp::parse_fragment(fragment).map_err(SfuError::BadRequest)?;
        let Some(mut session) = self.sessions.remove(&key) else {
            return Err(SfuError::NotFound(format!("no session \"{id}\"")));
        };
        let added = self.add_candidates(key, &mut session, &frag);
        self.sessions.insert(key, session);
        added
    }

    fn add_candidates(
        &mut self,
        key: u64,
        session: &mut Session,
        frag: &sdp::Fragment,
    ) -> Result<(), SfuError> {
        if let Some(ufrag) = &frag.ice_ufrag
            && session.remote_ufrag.as_ref().is_some_and(|c| c != ufrag)
        {
            return Err(SfuError::Unprocessable(
                "ICE restart is not supported: start a new session".into(),
            ));
        }
        let mut candidates = vec![];
        for c in &frag.candidates {
            let cand = Candidate::from_sdp_string(c)
                .map_err(|e| SfuError::BadRequest(format!("bad candidate {c:?}: {e}")))?;
            candidates.push(cand);
        }
        for cand in candidates {
            self.index_candidate(key, session, cand.addr());
            guarded(session, "a trickled candidate", |s| {
                s.rtc.add_remote_candidate(cand)
            });
        }
        session.dirty = true;
        Ok(())
    }

    /// Ends session `id` (a DELETE). The subscribers of a publisher wait for it to come
    /// back (see [`SfuConfig::rejoin_grace`]).
    pub fn leave(&mut self, id: &str, now: Instant) -> Result<(), SfuError> {
        let key = self.key_of(id)?;
        self.close(key, now);
        Ok(())
    }

    fn close(&mut self, key: u64, now: Instant) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        gst::info!(CAT, "session {} ({} in {}) closed", s.id, s.uid, s.channel);
        if !s.failed {
            guarded(&mut s, "closing", |s| s.rtc.disconnect());
        }
        self.by_source.retain(|_, k| *k != key);
        self.by_id.remove(&s.id);
        if let Some(u) = &s.local_ufrag
            && self.by_ufrag.get(u) == Some(&key)
        {
            self.by_ufrag.remove(u);
        }
        for addr in &s.remote_addresses {
            if let Some(keys) = self.by_candidate.get_mut(addr) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.by_candidate.remove(addr);
                }
            }
        }
        if matches!(s.role, Role::Publisher(_)) {
            for sub in self
                .sessions
                .values_mut()
                .filter_map(Session::subscriber_mut)
            {
                if sub.publisher == Some(key) {
                    sub.publisher = None;
                    sub.layer = None;
                    sub.waiting_since = Some(now);
                }
            }
        }
    }

    /// Gives the subscribers waiting for the uid of publisher `key` back their publisher;
    /// those whose answer has none of its codecs end.
    fn attach_waiting(&mut self, key: u64) {
        let Some((channel, uid, codecs)) = self.sessions.get(&key).and_then(|s| match &s.role {
            Role::Publisher(p) => Some((s.channel.clone(), s.uid.clone(), p.codecs.clone())),
            Role::Subscriber(_) => None,
        }) else {
            return;
        };
        let mut attached = false;
        for s in self.sessions.values_mut() {
            let Role::Subscriber(sub) = &mut s.role else {
                continue;
            };
            if s.channel != channel || sub.publisher_uid != uid || sub.publisher.is_some() {
                continue;
            }
            if sub.codecs.iter().any(|c| codecs.contains(c)) {
                gst::info!(CAT, "subscriber {} continues with the new {uid}", s.id);
                sub.publisher = Some(key);
                sub.layer = None;
                sub.waiting_since = None;
                attached = true;
            } else {
                gst::info!(
                    CAT,
                    "subscriber {} cannot take the new {uid}'s {}: ending it",
                    s.id,
                    names(&codecs)
                );
                s.rtc.disconnect();
            }
        }
        if let Some(p) = self.sessions.get_mut(&key).and_then(Session::publisher_mut) {
            p.has_subscribers = attached;
        }
    }

    /// Channels with their publishers and subscribers, sorted by name.
    pub fn channels(&self, now: Instant) -> Vec<ChannelInfo> {
        let mut channels: Vec<ChannelInfo> = Vec::new();
        let mut keys: Vec<&u64> = self.sessions.keys().collect();
        keys.sort();
        for key in keys {
            let s = &self.sessions[key];
            let idx = match channels.iter().position(|c| c.name == s.channel) {
                Some(i) => i,
                None => {
                    channels.push(ChannelInfo {
                        name: s.channel.clone(),
                        publishers: vec![],
                        subscribers: vec![],
                    });
                    channels.len() - 1
                }
            };
            match &s.role {
                Role::Publisher(p) => channels[idx].publishers.push(PublisherInfo {
                    uid: s.uid.clone(),
                    state: s.state(),
                    codec: p
                        .codec
                        .or_else(|| p.codecs.first().copied())
                        .map(|c| c.encoding_name().to_owned()),
                    width: p.size.map(|s| s.0),
                    height: p.size.map(|s| s.1),
                    bitrate: p.rate.per_second(now) * 8,
                    packets: p.packets,
                    frames: p.frames,
                    packets_lost: p.packets_lost,
                    nacks: p.nacks,
                    plis: p.plis,
                    layers: {
                        let mut layers: Vec<&Layer> = p.layers.iter().collect();
                        layers.sort_by_key(|l| l.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h)));
                        layers
                            .into_iter()
                            .map(|l| LayerInfo {
                                rid: l.rid.to_string(),
                                width: l.size.map(|s| s.0),
                                height: l.size.map(|s| s.1),
                                frames: l.frames,
                            })
                            .collect()
                    },
                    subscribers: self
                        .sessions
                        .values()
                        .filter(|o| {
                            matches!(&o.role, Role::Subscriber(sub) if sub.publisher == Some(*key))
                        })
                        .count(),
                }),
                Role::Subscriber(sub) => channels[idx].subscribers.push(SubscriberInfo {
                    id: s.id.clone(),
                    publisher: sub.publisher_uid.clone(),
                    state: s.state(),
                    packets: sub.packets,
                    bitrate: sub.rate.per_second(now) * 8,
                    quality: sub.quality.name(),
                    layer: sub.layer.map(|r| r.to_string()),
                    estimate: sub.fit.estimate(now),
                    ceiling: sub.fit.ceiling.map(|r| r.to_string()),
                }),
            }
        }
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        channels
    }

    /// Hands a received datagram to the peer it belongs to. Returns false when no peer
    /// accepts it (a stray packet).
    ///
    /// The work per datagram does not grow with the number of sessions: the session is
    /// found by the datagram's source address, else by the ufrag its STUN binding request
    /// names, else among the few sessions whose peers gave that address as a candidate.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        let Ok(contents) = datagram.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let Some(key) = self.route(source, datagram, &input) else {
            return false;
        };
        self.by_source.insert(source, key);
        let Some(session) = self.sessions.get_mut(&key) else {
            return false;
        };
        session.last_heard = now;
        if let Some(Err(e)) = guarded(session, "a datagram", |s| s.rtc.handle_input(input)) {
            gst::warning!(
                CAT,
                "session {} failed on input, disconnecting: {e}",
                session.id
            );
            session.rtc.disconnect();
        }
        session.dirty = true;
        true
    }

    /// The session a datagram is for (see [`Sfu::receive`]).
    fn route(&self, source: SocketAddr, datagram: &[u8], input: &Input) -> Option<u64> {
        let takes = |k: &u64| {
            #[cfg(test)]
            self.asked.set(self.asked.get() + 1);
            self.sessions
                .get(k)
                .is_some_and(|s| !s.failed && s.rtc.accepts(input))
        };
        if let Some(k) = self.by_source.get(&source).filter(|k| takes(k)) {
            return Some(*k);
        }
        if let Some(ufrag) = stun::request_ufrag(datagram) {
            let ufrag = std::str::from_utf8(ufrag).ok()?;
            return self.by_ufrag.get(ufrag).filter(|k| takes(k)).copied();
        }
        self.by_candidate
            .get(&source)?
            .iter()
            .find(|k| takes(k))
            .copied()
    }

    /// Advances time for the peers that asked for it, and drops silent peers and the
    /// subscribers that waited too long for their publisher.
    pub fn timeout(&mut self, now: Instant) {
        let (silence, grace) = (self.config.peer_timeout, self.config.rejoin_grace);
        let sessions: Vec<&mut Session> = self.sessions.values_mut().collect();
        shared(sessions, self.config.threads, |s, _| {
            if !s.connected && now.duration_since(s.created) > CONNECT_TIMEOUT && s.rtc.is_alive() {
                gst::info!(
                    CAT,
                    "session {} did not connect within {CONNECT_TIMEOUT:?}, dropping it",
                    s.id
                );
                s.rtc.disconnect();
            }
            if s.connected && now.duration_since(s.last_heard) > silence && s.rtc.is_alive() {
                gst::info!(
                    CAT,
                    "session {} ({} in {}) sent nothing for {silence:?}, dropping it",
                    s.id,
                    s.uid,
                    s.channel
                );
                s.rtc.disconnect();
            }
            if let Role::Subscriber(sub) = &s.role
                && sub
                    .waiting_since
                    .is_some_and(|t| now.duration_since(t) > grace)
                && s.rtc.is_alive()
            {
                gst::info!(
                    CAT,
                    "subscriber {}: {} did not come back within {grace:?}, ending it",
                    s.id,
                    sub.publisher_uid
                );
                s.rtc.disconnect();
            }
            if s.next_timeout <= now && !s.failed {
                let ticked = guarded(s, "a timeout", |s| s.rtc.handle_input(Input::Timeout(now)));
                if let Some(Err(e)) = ticked {
                    gst::warning!(
                        CAT,
                        "session {} failed on timeout, disconnecting: {e}",
                        s.id
                    );
                    s.rtc.disconnect();
                }
                s.dirty = true;
            }
        });
    }

    /// Drains every peer that has work, forwarding media and keyframe requests between
    /// them, and hands each datagram to `send(source, destination, bytes)`. Returns when the
    /// next call to [`Sfu::timeout`] is due.
    pub fn poll(&mut self, now: Instant, send: &SendTo<'_>) -> Instant {
        let mut forwards: Vec<Forward> = Vec::new();
        loop {
            let dirty: Vec<(u64, &mut Session)> = self
                .sessions
                .iter_mut()
                .filter(|(_, s)| s.dirty && !s.failed)
                .map(|(k, s)| (*k, s))
                .collect();
            forwards.extend(shared(dirty, self.config.threads, |(key, s), forwards| {
                s.dirty = false;
                guarded(s, "its output", |s| drain(*key, s, now, send, forwards));
            }));
            if forwards.is_empty() {
                break;
            }
            for f in forwards.drain(..) {
                match f {
                    Forward::Media(from, data) => self.forward_media(now, from, *data),
                    Forward::Keyframe(publisher, rid) => self.want_keyframe(publisher, rid),
                }
            }
            self.request_keyframes(now);
        }
        self.request_keyframes(now);
        let dead: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.failed || !s.rtc.is_alive())
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.close(k, now);
        }
        self.sessions
            .values()
            .map(|s| s.next_timeout)
            .min()
            .unwrap_or(now + Duration::from_millis(100))
            .min(now + Duration::from_millis(100))
    }

    fn forward_media(&mut self, now: Instant, from: u64, data: MediaData) {
        let Some((kind, layers)) = self.sessions.get_mut(&from).and_then(|s| {
            let p = s.publisher_mut()?;
            let kind = p
                .tracks
                .iter()
                .find(|(m, _)| *m == data.mid)
                .map(|(_, k)| *k)?;
            // The layers matter only for frames of a layer.
            let layers = if data.rid.is_some() {
                layers::live(&p.layers, now)
            } else {
                vec![]
            };
            Some((kind, layers))
        }) else {
            return;
        };
        let keyframe = data.rid.is_some() && data.is_keyframe();
        let watchers: Vec<&mut Session> = self
            .sessions
            .values_mut()
            .filter(|s| {
                matches!(&s.role, Role::Subscriber(sub) if sub.publisher == Some(from))
                    && s.connected
                    && !s.failed
            })
            .collect();
        let wanted = shared(watchers, self.config.threads, |s, forwards| {
            if let (Some(rid), Role::Subscriber(sub)) = (data.rid, &mut s.role) {
                sub.fit.update(&layers, now);
                probe_for(&mut s.rtc, sub, &layers);
                let target = layers::target(&layers, sub.quality, sub.fit.ceiling);
                let take = layers::take(sub.layer, target, rid, keyframe);
                if take == Take::Switch {
                    gst::debug!(CAT, "subscriber {} now gets layer {rid}", s.id);
                    sub.layer = Some(rid);
                }
                // Not on its layer yet: a keyframe of that layer is what moves it.
                if target.is_some() && sub.layer != target {
                    forwards.push(Forward::Keyframe(from, target));
                }
                if take == Take::Skip {
                    return;
                }
            }
            guarded(s, "forwarding a frame", |s| {
                forward_to(s, from, kind, &data, now)
            });
        });
        for f in wanted {
            if let Forward::Keyframe(p, rid) = f {
                self.want_keyframe(p, rid);
            }
        }
    }

    /// Notes that a subscriber needs a keyframe of publisher session `publisher` (of layer
    /// `rid`); [`Sfu::request_keyframes`] asks for it when due. Of a simulcast publisher, a
    /// keyframe of no layer in particular is not asked for: each subscriber asks for its own
    /// layer's with the next frame it is forwarded.
    fn want_keyframe(&mut self, publisher: u64, rid: Option<Rid>) {
        let Some(p) = self
            .sessions
            .get_mut(&publisher)
            .and_then(Session::publisher_mut)
        else {
            return;
        };
        match rid {
            Some(rid) => {
                if let Some(l) = p.layers.iter_mut().find(|l| l.rid == rid) {
                    l.keyframe_wanted = true;
                }
            }
            None if p.layers.is_empty() => p.keyframe_wanted = true,
            None => (),
        }
    }

    /// Sends the keyframe requests that are due (see `keyframe_request_due`), for the
    /// publisher's stream or per simulcast layer; the others stay pending.
    fn request_keyframes(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.failed {
                continue;
            }
            let Role::Publisher(p) = &s.role else {
                continue;
            };
            if p.keyframe_wanted
                && keyframe_request_due(now, p.last_keyframe_request, p.last_keyframe)
            {
                guarded(s, "a keyframe request", |s| request_keyframe(s, None, now));
            }
            let Role::Publisher(p) = &s.role else {
                continue;
            };
            let due: Vec<Rid> = p
                .layers
                .iter()
                .filter(|l| {
                    l.keyframe_wanted
                        && keyframe_request_due(now, l.last_keyframe_request, l.last_keyframe)
                })
                .map(|l| l.rid)
                .collect();
            for rid in due {
                guarded(s, "a keyframe request", |s| {
                    request_keyframe(s, Some(rid), now)
                });
            }
        }
    }

    /// Number of live sessions (publishers and subscribers).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Asks publisher session `s` for a keyframe (of simulcast layer `rid`).
fn request_keyframe(s: &mut Session, rid: Option<Rid>, now: Instant) {
    let Role::Publisher(p) = &mut s.role else {
        return;
    };
    let Some(mid) = p
        .tracks
        .iter()
        .find(|(_, k)| *k == MediaKind::Video)
        .map(|(m, _)| *m)
    else {
        return;
    };
    if let Some(mut w) = s.rtc.writer(mid) {
        // PLI, which every sender takes: webrtcbin ignores a FIR from a peer it has had no
        // RTCP from yet (the first seconds of a session). FIR for senders that only
        // negotiated FIR.
        let asked = w
            .request_keyframe(rid, KeyframeRequestKind::Pli)
            .or_else(|_| w.request_keyframe(rid, KeyframeRequestKind::Fir));
        let layer = rid.map(|r| format!(" (layer {r})")).unwrap_or_default();
        match asked {
            Ok(()) => gst::debug!(CAT, "asked {} for a keyframe{layer}", s.uid),
            Err(e) => gst::debug!(CAT, "keyframe request to {}{layer} failed: {e}", s.uid),
        }
        match rid.and_then(|rid| p.layers.iter_mut().find(|l| l.rid == rid)) {
            Some(l) => {
                l.keyframe_wanted = false;
                l.last_keyframe_request = Some(now);
            }
            None => {
                p.keyframe_wanted = false;
                p.last_keyframe_request = Some(now);
            }
        }
        s.dirty = true;
    }
}

/// Where a subscriber's bandwidth estimator starts (it probes up from there within its first
/// second).
const BWE_START: Bitrate = Bitrate::kbps(1000);

/// Has the bandwidth estimator of subscriber `sub` (peer `rtc`) probe for twice the bitrate
/// of the largest of `layers` (moving up needs headroom over it): a subscriber on a smaller
/// layer finds out when its link carries more.
fn probe_for(rtc: &mut Rtc, sub: &mut Subscriber, layers: &[Layer]) {
    let top = layers.iter().map(|l| l.bitrate).max().unwrap_or(0);
    let desired = top * 2;
    // Set again only when it moved by a tenth: setting it reconfigures the pacer.
    if desired.abs_diff(sub.desired) > sub.desired / 10 {
        sub.desired = desired;
        rtc.bwe().set_desired_bitrate(Bitrate::bps(desired));
    }
}

/// Writes a frame of publisher session `from` to subscriber session `s`.
fn forward_to(s: &mut Session, from: u64, kind: MediaKind, data: &MediaData, now: Instant) {
    let Role::Subscriber(sub) = &mut s.role else {
        return;
    };
    let Some(mid) = sub.outs.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m) else {
        return;
    };
    let Some(writer) = s.rtc.writer(mid) else {
        return;
    };
    // The exact format when the subscriber offered it; otherwise the same codec with other
    // parameters (e.g. an H.264 packetization mode): depacketizers take both. Only payload
    // types that the answer gave the subscriber.
    let codec = data.params.spec().codec;
    let allowed = &sub.answered_pts;
    let Some(pt) = writer
        .match_params(data.params)
        .filter(|pt| allowed.contains(&**pt))
        .or_else(|| {
            writer
                .payload_params()
                .find(|p| p.spec().codec == codec && allowed.contains(&*p.pt()))
                .map(|p| p.pt())
        })
    else {
        return;
    };
    let len = data.data.len() as u64;
    let time = sub.timeline.map((from, data.rid), data.time, now);
    if let Err(e) = writer.write(pt, data.network_time, time, data.data.clone()) {
        gst::warning!(CAT, "subscriber {} failed, disconnecting: {e}", s.id);
        s.rtc.disconnect();
        return;
    }
    sub.packets += 1;
    sub.rate.add(now, len);
    s.dirty = true;
}

/// Where the sessions' datagrams go: `send(destination, datagrams)`, datagrams of the first
/// one's size (the last one may be shorter: a batch for one UDP GSO send), from any of the
/// threads that share the work.
pub type SendTo<'a> = dyn Fn(SocketAddr, &[Vec<u8>]) + Sync + 'a;

/// Below this many sessions to work on, the loop's thread does the work alone: handing
/// it out costs more than it saves.
const SHARED_MIN: usize = 16;

/// Does `work` on every item, shared among `threads` threads (the calling one included)
/// when there are enough items; returns the forwards the work produced.
fn shared<T: Send>(
    mut items: Vec<T>,
    threads: usize,
    work: impl Fn(&mut T, &mut Vec<Forward>) + Sync,
) -> Vec<Forward> {
    let mut forwards = Vec::new();
    if threads <= 1 || items.len() < SHARED_MIN {
        for item in &mut items {
            work(item, &mut forwards);
        }
        return forwards;
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks = items.chunks_mut(per_thread);
    let mine = chunks.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let work = &work;
        let helpers: Vec<_> = chunks
            .map(|chunk| {
                scope.spawn(move || {
                    let mut forwards = Vec::new();
                    for item in chunk {
                        work(item, &mut forwards);
                    }
                    forwards
                })
            })
            .collect();
        for item in mine {
            work(item, &mut forwards);
        }
        for h in helpers {
            // The work is guarded per session; a helper cannot fail on its own.
            if let Ok(f) = h.join() {
                forwards.extend(f);
            }
        }
    });
    forwards
}

/// Polls one peer until it has nothing more to say.
fn drain(key: u64, s: &mut Session, now: Instant, send: &SendTo<'_>, forwards: &mut Vec<Forward>) {
    #[cfg(test)]
    if s.explode {
        panic!("session {} explodes", s.id);
    }
    // The packets of a frame leave together: one batch per run of one size to the peer.
    let mut batch = Batcher::default();
    let mut flush = |dst: SocketAddr, datagrams: &[Vec<u8>]| send(dst, datagrams);
    loop {
        if !s.rtc.is_alive() {
            break;
        }
        let output = match s.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                gst::warning!(CAT, "session {} failed, disconnecting: {e}", s.id);
                s.rtc.disconnect();
                break;
            }
        };
        match output {
            Output::Timeout(t) => {
                s.next_timeout = t;
                break;
            }
            Output::Transmit(t) => batch.push(t.destination, t.contents.into(), &mut flush),
            Output::Event(e) => on_event(key, s, now, e, forwards),
        }
    }
    batch.flush(&mut flush);
}

/// The project's name for a video codec str0m depacketized.
fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::H264 => Some(VideoCodec::H264),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// Codec names for logs and messages.
fn names(codecs: &[VideoCodec]) -> String {
    codecs
        .iter()
        .map(|c| c.encoding_name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn on_event(key: u64, s: &mut Session, now: Instant, event: Event, forwards: &mut Vec<Forward>) {
    match event {
        Event::Connected => {
            gst::info!(
                CAT,
                "session {} ({} in {}) connected",
                s.id,
                s.uid,
                s.channel
            );
            s.connected = true;
            match &s.role {
                // A subscriber joining mid-stream needs a keyframe to start from.
                Role::Subscriber(Subscriber {
                    publisher: Some(p), ..
                }) => forwards.push(Forward::Keyframe(*p, None)),
                // So do the subscribers that waited for a publisher that comes back. (Not
                // without subscribers: webrtcbin ignores a request that comes within two
                // round trips of the previous one, and a viewer may join right after.)
                Role::Publisher(p) if p.has_subscribers => {
                    forwards.push(Forward::Keyframe(key, None))
                }
                Role::Publisher(_) => (),
                Role::Subscriber(_) => (),
            }
        }
        Event::IceConnectionStateChange(state) => {
            // A pair can fail and recover; the session ends when the peer falls silent.
            gst::debug!(CAT, "session {} ICE {state:?}", s.id);
            s.ice_disconnected = state == IceConnectionState::Disconnected;
        }
        Event::MediaAdded(m) => match &mut s.role {
            Role::Publisher(p) => p.tracks.push((m.mid, m.kind)),
            Role::Subscriber(sub) => sub.outs.push((m.mid, m.kind)),
        },
        Event::MediaData(data) => {
            if let Role::Publisher(p) = &mut s.role {
                p.rate.add(now, data.data.len() as u64);
                if p.tracks
                    .iter()
                    .any(|(m, k)| *m == data.mid && *k == MediaKind::Video)
                {
                    p.frames += 1;
                    let codec = data.params.spec().codec;
                    p.codec = video_codec(codec).or(p.codec);
                    let keyframe = data.is_keyframe();
                    let size = if keyframe {
                        match codec {
                            Codec::Vp8 => bitstream::vp8_resolution(&data.data),
                            Codec::H264 => bitstream::h264_resolution(&data.data),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    match data.rid {
                        // A simulcast layer: its own keyframes and size; the publisher's size
                        // is its largest layer's.
                        Some(rid) => {
                            let i = match p.layers.iter().position(|l| l.rid == rid) {
                                Some(i) => i,
                                None => {
                                    gst::info!(CAT, "{} sends simulcast layer {rid}", s.uid);
                                    p.layers.push(Layer::new(rid, now));
                                    p.layers.len() - 1
                                }
                            };
                            let layer = &mut p.layers[i];
                            layer.count(now, data.data.len());
                            layer.frames += 1;
                            layer.last_frame = now;
                            if keyframe {
                                gst::debug!(CAT, "keyframe from {} layer {rid}", s.uid);
                                layer.last_keyframe = Some(now);
                                layer.size = size.or(layer.size);
                            }
                            if !data.contiguous {
                                layer.keyframe_wanted = true;
                            }
                            p.size = p
                                .layers
                                .iter()
                                .filter_map(|l| l.size)
                                .max_by_key(|(w, h)| u64::from(*w) * u64::from(*h));
                        }
                        None => {
                            if keyframe {
                                gst::debug!(CAT, "keyframe from {}", s.uid);
                                p.last_keyframe = Some(now);
                                p.size = size.or(p.size);
                            }
                            if !data.contiguous {
                                p.keyframe_wanted = true;
                            }
                        }
                    }
                }
                forwards.push(Forward::Media(key, Box::new(data)));
            }
        }
        Event::MediaIngressStats(st) => {
            if let Role::Publisher(p) = &mut s.role
                && p.tracks
                    .iter()
                    .any(|(m, k)| *m == st.mid && *k == MediaKind::Video)
            {
                p.packets = st.packets;
                p.nacks = st.nacks;
                p.plis = st.plis;
                p.packets_lost = st
                    .loss
                    .map(|l| (l as f64 * st.packets as f64) as u64)
                    .unwrap_or(p.packets_lost);
            }
        }
        Event::MediaEgressStats(st) => {
            if let (Role::Subscriber(sub), Some(loss)) = (&mut s.role, st.loss) {
                gst::trace!(CAT, "subscriber {}: loss {loss}", s.id);
                sub.fit.lost(loss, now);
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            if let Role::Subscriber(sub) = &mut s.role {
                gst::trace!(CAT, "subscriber {}: estimate {estimate}", s.id);
                sub.fit.estimated(estimate.as_u64(), now);
            }
        }
        Event::KeyframeRequest(_) => {
            if let Role::Subscriber(Subscriber {
                publisher: Some(p),
                layer,
                ..
            }) = &s.role
            {
                forwards.push(Forward::Keyframe(*p, *layer));
            }
        }
        _ => (),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use str0m::media::Direction;
    use str0m::net::Protocol;

    const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn sfu() -> Sfu {
        Sfu::new(SfuConfig {
            candidates: vec![SERVER],
            ..Default::default()
        })
    }

    /// An in-memory str0m peer on its own address.
    struct Peer {
        rtc: Rtc,
        addr: SocketAddr,
        mid: Option<Mid>,
        received: Vec<MediaData>,
        keyframe_requests: usize,
        connected: bool,
        /// Once connected, sends no STUN binding requests of its own (as libnice does: it
        /// keeps a pair up with binding indications, which need no answer).
        quiet_ice: bool,
        /// Sends nothing at all (the peer is gone).
        mute: bool,
    }

    /// Whether a datagram is a STUN binding request.
    fn is_binding_request(b: &[u8]) -> bool {
        b.len() >= 20 && b[0..2] == [0x00, 0x01] && b[4..8] == [0x21, 0x12, 0xa4, 0x42]
    }

    impl Peer {
        fn new(now: Instant, port: u16) -> Peer {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let mut rtc = Rtc::builder().build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            Peer {
                rtc,
                addr,
                mid: None,
                received: vec![],
                keyframe_requests: 0,
                connected: false,
                quiet_ice: false,
                mute: false,
            }
        }

        fn offer(&mut self, dir: Direction) -> (String, str0m::change::SdpPendingOffer) {
            let mut api = self.rtc.sdp_api();
            self.mid = Some(api.add_media(MediaKind::Video, dir, None, None, None));
            let (offer, pending) = api.apply().unwrap();
            (offer.to_sdp_string(), pending)
        }

        fn answer(&mut self, pending: str0m::change::SdpPendingOffer, answer: &str) {
            let answer = SdpAnswer::from_sdp_string(answer).unwrap();
            self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        }
    }

    /// One round: peers talk to the server and the server to the peers, in memory; then
    /// 5 ms pass.
    fn step(sfu: &mut Sfu, peers: &mut [&mut Peer], now: &mut Instant) {
        let mut to_server: Vec<(SocketAddr, Vec<u8>)> = vec![];
        for p in peers.iter_mut() {
            loop {
                match p.rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        let quiet = p.quiet_ice && p.connected && is_binding_request(&t.contents);
                        if !quiet && !p.mute {
                            to_server.push((t.source, t.contents.to_vec()))
                        }
                    }
                    Output::Event(Event::Connected) => p.connected = true,
                    Output::Event(Event::MediaData(d)) => p.received.push(d),
                    Output::Event(Event::KeyframeRequest(_)) => p.keyframe_requests += 1,
                    Output::Event(_) => (),
                }
            }
        }
        for (source, bytes) in to_server {
            sfu.receive(*now, source, SERVER, &bytes);
        }
        let to_peers: std::sync::Mutex<Vec<(SocketAddr, Vec<u8>)>> = Default::default();
        sfu.poll(*now, &|dst, datagrams| {
            let datagrams = datagrams.iter().map(|d| (dst, d.clone()));
            to_peers.lock().unwrap().extend(datagrams);
        });
        for (dst, bytes) in to_peers.into_inner().unwrap() {
            if let Some(p) = peers.iter_mut().find(|p| p.addr == dst) {
                let r = Receive {
                    proto: Protocol::Udp,
                    source: SERVER,
                    destination: dst,
                    contents: bytes.as_slice().try_into().unwrap(),
                };
                p.rtc.handle_input(Input::Receive(*now, r)).unwrap();
            }
        }
        *now += Duration::from_millis(5);
        for p in peers.iter_mut() {
            p.rtc.handle_input(Input::Timeout(*now)).unwrap();
        }
        sfu.timeout(*now);
    }

    /// Steps until `done`, at most `steps` times.
    fn run(
        sfu: &mut Sfu,
        peers: &mut [&mut Peer],
        now: &mut Instant,
        steps: usize,
        done: impl Fn(&[&mut Peer]) -> bool,
    ) {
        for _ in 0..steps {
            step(sfu, peers, now);
            if done(peers) {
                return;
            }
        }
        panic!("condition not reached in {steps} steps");
    }

    #[test]
    fn shared_work_reaches_every_item_once_on_several_threads() {
        for (n, threads) in [(3, 4), (16, 2), (101, 3), (400, 8)] {
            let mut items: Vec<(u64, u32, Option<std::thread::ThreadId>)> =
                (0..n).map(|k| (k, 0, None)).collect();
            let forwards = shared(items.iter_mut().collect(), threads, |item, forwards| {
                item.1 += 1;
                item.2 = Some(std::thread::current().id());
                forwards.push(Forward::Keyframe(item.0, None));
            });
            assert!(
                items.iter().all(|i| i.1 == 1),
                "{n} items, {threads} threads"
            );
            let mut keys: Vec<u64> = forwards
                .iter()
                .map(|f| match f {
                    Forward::Keyframe(k, _) => *k,
                    Forward::Media(..) => unreachable!(),
                })
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, (0..n).collect::<Vec<_>>());
            let used: std::collections::HashSet<_> = items.iter().filter_map(|i| i.2).collect();
            let want = if (n as usize) < SHARED_MIN {
                1
            } else {
                threads
            };
            assert_eq!(used.len(), want, "{n} items, {threads} threads");
        }
    }

    #[test]
    fn keyframe_requests_wait_for_the_keyframe_already_asked_for() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(keyframe_request_due(t0, None, None));
        // Asked, not answered yet: wait.
        assert!(!keyframe_request_due(ms(200), Some(t0), None));
        // Answered at 40 ms: the next request goes at 100 ms, not before.
        assert!(!keyframe_request_due(ms(60), Some(t0), Some(ms(40))));
        assert!(keyframe_request_due(ms(100), Some(t0), Some(ms(40))));
        // Unanswered for the timeout: ask again.
        assert!(keyframe_request_due(ms(500), Some(t0), None));
    }

    /// A VP8 key frame of 320x240 whose payload bytes are all `n`.
    fn vp8_keyframe(n: u8) -> Vec<u8> {
        let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        f.extend(std::iter::repeat_n(n, 3000));
        f
    }

    fn connected_publisher(sfu: &mut Sfu, now: &mut Instant, port: u16) -> (Peer, Created) {
        let mut publisher = Peer::new(*now, port);
        let (offer, pending) = publisher.offer(Direction::SendOnly);
        let created = sfu
            .publish(*now, CLIENT, "room", Some("alice"), &offer)
            .unwrap();
        publisher.answer(pending, &created.answer);
        run(sfu, &mut [&mut publisher], now, 400, |p| p[0].connected);
        (publisher, created)
    }

    #[test]
    fn a_session_that_panics_is_dropped_and_the_others_go_on() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50000);
        let (mut viewer, _) = connected_viewer(&mut sfu, &mut publisher, &mut now);
        let mut doomed = Peer::new(now, 50101);
        let (offer, pending) = doomed.offer(Direction::RecvOnly);
        let sub = sfu.subscribe(now, CLIENT, "room", "alice", &offer).unwrap();
        doomed.answer(pending, &sub.answer);
        let peers = &mut [&mut publisher, &mut viewer, &mut doomed];
        run(&mut sfu, peers, &mut now, 400, |p| p[2].connected);
        let key = sfu.by_id[&sub.id];
        sfu.sessions.get_mut(&key).unwrap().explode = true;
        write_frame(peers[0], now, 1, 0);
        run(&mut sfu, peers, &mut now, 50, |_| true);
        for _ in 0..50 {
            step(&mut sfu, peers, &mut now);
        }
        assert!(
            sfu.resource(&sub.id).is_err(),
            "the session that failed is gone"
        );
        assert_eq!(sfu.len(), 2);
        for n in 2..12u8 {
            write_frame(peers[0], now, n, 3000 * u64::from(n));
            step(&mut sfu, peers, &mut now);
        }
        run(&mut sfu, peers, &mut now, 100, |p| {
            p[1].received.len() >= 10
        });
        assert!(peers[2].received.is_empty());
    }

    #[test]
    fn the_work_per_datagram_does_not_grow_with_the_sessions() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        // Many sessions that never connect, from many addresses.
        for n in 0..300u16 {
            let mut p = Peer::new(now, 20000 + n);
            let (offer, _) = p.offer(Direction::SendOnly);
            sfu.publish(
                now,
                IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
                &format!("c{}", n % 50),
                Some(&format!("u{n}")),
                &offer,
            )
            .unwrap();
        }
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50000);
        let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
        sfu.asked.set(0);
        for b in [0x00u8, 0x16, 0x80, 0x90] {
            let mut d = vec![b; 60];
            d[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            assert!(!sfu.receive(now, stranger, SERVER, &d));
        }
        assert!(sfu.asked.get() <= 4, "asked {} sessions", sfu.asked.get());
        sfu.asked.set(0);
        for n in 0..20u8 {
            write_frame(&mut publisher, now, n, 3000 * u64::from(n));
            step(&mut sfu, &mut [&mut publisher], &mut now);
        }
        let frames = sfu
            .channels(now)
            .iter()
            .flat_map(|c| c.publishers.clone())
            .find(|p| p.uid == "alice")
            .unwrap()
            .frames;
        assert!(frames >= 15, "{frames}");
        // One question per datagram: the session it came from last time.
        let asked = sfu.asked.get();
        assert!(
            asked < 200,
            "asked {asked} sessions for 20 frames among 301 sessions"
        );
    }

    #[test]
    fn many_viewers_get_every_frame_when_threads_share_the_work() {
        let mut now = Instant::now();
        let mut sfu = Sfu::new(SfuConfig {
            candidates: vec![SERVER],
            threads: 3,
            ..Default::default()
        });
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50000);
        let mut viewers: Vec<Peer> = (0..2 * SHARED_MIN as u16)
            .map(|n| {
                let mut viewer = Peer::new(now, 51000 + n);
                let (offer, pending) = viewer.offer(Direction::RecvOnly);
                let sub = sfu.subscribe(now, CLIENT, "room", "alice", &offer).unwrap();
                viewer.answer(pending, &sub.answer);
                viewer
            })
            .collect();
        let mut peers: Vec<&mut Peer> = std::iter::once(&mut publisher)
            .chain(viewers.iter_mut())
            .collect();
        // Connected on both sides: the server forwards only to the sessions it saw connect.
        let mut steps = 0;
        while !(peers.iter().all(|p| p.connected) && sfu.sessions.values().all(|s| s.connected)) {
            assert!(steps < 600, "not all connected");
            step(&mut sfu, &mut peers, &mut now);
            steps += 1;
        }
        for n in 1..=10u8 {
            write_frame(peers[0], now, n, 3000 * u64::from(n));
            step(&mut sfu, &mut peers, &mut now);
        }
        run(&mut sfu, &mut peers, &mut now, 200, |p| {
            p[1..].iter().all(|v| v.received.len() >= 10)
        });
        for (i, v) in peers[1..].iter().enumerate() {
            let frames: Vec<u8> = v.received.iter().map(|d| d.data[20]).collect();
            assert_eq!(frames, (1..=10).collect::<Vec<u8>>(), "viewer {i}");
            assert!(
                v.received
                    .iter()
                    .all(|d| *d.data == *vp8_keyframe(d.data[20]))
            );
        }
    }

    /// A VP8 frame of `w`x`h` (a key frame) or an inter frame, its payload bytes all `n`.
    fn vp8_frame(w: u16, h: u16, key: bool, n: u8) -> Vec<u8> {
        let mut f = if key {
            let (w, h) = (w.to_le_bytes(), h.to_le_bytes());
            vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, w[0], w[1], h[0], h[1]]
        } else {
            vec![0x51, 0x42, 0x00]
        };
        f.extend(std::iter::repeat_n(n, 1500));
        f
    }

    #[test]
    fn each_viewer_gets_the_simulcast_layer_it_asks_for_and_moves_at_a_keyframe() {
        use str0m::media::{Simulcast, SimulcastLayer};
        let mut now = Instant::now();
        let mut sfu = sfu();
        let mut publisher = Peer::new(now, 50000);
        let mut simulcast = Simulcast::new();
        for rid in ["q", "f"] {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        let mut api = publisher.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        publisher.mid = Some(mid);
        let (offer, pending) = api.apply().unwrap();
        let created = sfu
            .publish(now, CLIENT, "room", Some("alice"), &offer.to_sdp_string())
            .unwrap();
        assert!(
            created.answer.contains("a=simulcast:recv"),
            "{}",
            created.answer
        );
        publisher.answer(pending, &created.answer);
        let mut viewers = vec![];
        let mut ids = vec![];
        for port in [50100, 50101] {
            let mut viewer = Peer::new(now, port);
            let (offer, pending) = viewer.offer(Direction::RecvOnly);
            let sub = sfu.subscribe(now, CLIENT, "room", "alice", &offer).unwrap();
            viewer.answer(pending, &sub.answer);
            viewers.push(viewer);
            ids.push(sub.id);
        }
        sfu.set_quality(&ids[1], Quality::Low).unwrap();
        let [high, low] = &mut viewers[..] else {
            unreachable!()
        };
        let peers = &mut [&mut publisher, high, low];
        let mut steps = 0;
        while !(peers.iter().all(|p| p.connected) && sfu.sessions.values().all(|s| s.connected)) {
            assert!(steps < 600, "not all connected");
            step(&mut sfu, peers, &mut now);
            steps += 1;
        }
        let pt = {
            let writer = peers[0].rtc.writer(mid).unwrap();
            writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .unwrap()
                .pt()
        };
        // Layer q is 320x180 (bytes n), layer f 1280x720 (bytes 100 + n).
        let write = |peers: &mut [&mut Peer; 3], now: Instant, n: u8, key_q: bool, key_f: bool| {
            let time = MediaTime::from_90khz(3000 * u64::from(n));
            for (rid, w, h, key, byte) in
                [("q", 320, 180, key_q, n), ("f", 1280, 720, key_f, 100 + n)]
            {
                peers[0]
                    .rtc
                    .writer(mid)
                    .unwrap()
                    .rid(Rid::from(rid))
                    .write(pt, now, time, vp8_frame(w, h, key, byte))
                    .unwrap();
            }
        };
        for n in 1..=5u8 {
            write(peers, now, n, n == 1, n == 1);
            for _ in 0..4 {
                step(&mut sfu, peers, &mut now);
            }
        }
        // (The viewers' legs pace what they get: they have a bandwidth estimator.)
        run(&mut sfu, peers, &mut now, 400, |p| {
            p[1].received.last().map(|d| d.data[20]) == Some(105) && p[2].received.len() >= 5
        });
        let bytes = |p: &Peer| -> Vec<u8> { p.received.iter().map(|d| d.data[20]).collect() };
        // Layer q's first keyframe came before f had sent anything: the high viewer started
        // with it, and moved to f at f's first keyframe.
        let high = bytes(peers[1]);
        assert!(
            high.ends_with(&[101, 102, 103, 104, 105]) && high.len() <= 6,
            "high gets layer f: {high:?}"
        );
        assert_eq!(bytes(peers[2]), [1, 2, 3, 4, 5], "low gets layer q");
        let info = sfu.channels(now);
        let layers: Vec<_> = info[0].publishers[0]
            .layers
            .iter()
            .map(|l| (l.rid.as_str(), l.width, l.height))
            .collect();
        assert_eq!(
            layers,
            [("q", Some(320), Some(180)), ("f", Some(1280), Some(720))]
        );
        assert_eq!(
            (info[0].publishers[0].width, info[0].publishers[0].height),
            (Some(1280), Some(720))
        );
        let mut subs: Vec<_> = info[0]
            .subscribers
            .iter()
            .map(|s| (s.quality, s.layer.clone()))
            .collect();
        subs.sort();
        assert_eq!(
            subs,
            [("high", Some("f".into())), ("low", Some("q".into()))]
        );

        // The high viewer asks for low: it keeps layer f until a keyframe of q, which the
        // server asks the publisher for.
        sfu.set_quality(&ids[0], Quality::Low).unwrap();
        let asked = peers[0].keyframe_requests;
        for n in 6..=7u8 {
            write(peers, now, n, false, false);
            for _ in 0..4 {
                step(&mut sfu, peers, &mut now);
            }
        }
        assert!(
            peers[0].keyframe_requests > asked,
            "no keyframe asked of layer q"
        );
        write(peers, now, 8, true, false);
        write(peers, now, 9, false, false);
        run(&mut sfu, peers, &mut now, 200, |p| {
            p.iter()
                .skip(1)
                .all(|v| v.received.last().is_some_and(|d| d.data[20] == 9))
        });
        let high = bytes(peers[1]);
        assert!(
            high.ends_with(&[101, 102, 103, 104, 105, 106, 107, 8, 9]),
            "{high:?}"
        );
        assert_eq!(bytes(peers[2]), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn forwards_media_and_keyframe_requests_between_real_peers() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50000);

        let mut viewer = Peer::new(now, 50001);
        let (offer, pending) = viewer.offer(Direction::RecvOnly);
        let sub = sfu.subscribe(now, CLIENT, "room", "alice", &offer).unwrap();
        viewer.answer(pending, &sub.answer);
        run(
            &mut sfu,
            &mut [&mut publisher, &mut viewer],
            &mut now,
            400,
            |p| p[1].connected,
        );
        // The subscriber's arrival asks the publisher for a keyframe.
        run(
            &mut sfu,
            &mut [&mut publisher, &mut viewer],
            &mut now,
            200,
            |p| p[0].keyframe_requests > 0,
        );

        let mid = publisher.mid.unwrap();
        for n in 0..20u8 {
            let writer = publisher.rtc.writer(mid).unwrap();
            let pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .unwrap()
                .pt();
            let time = str0m::media::MediaTime::from_90khz(3000 * n as u64);
            writer.write(pt, now, time, vp8_keyframe(n)).unwrap();
            step(&mut sfu, &mut [&mut publisher, &mut viewer], &mut now);
        }
        run(
            &mut sfu,
            &mut [&mut publisher, &mut viewer],
            &mut now,
            200,
            |p| p[1].received.len() >= 20,
        );
        // Frames arrive whole and in order, bytes unchanged.
        for (n, d) in viewer.received.iter().enumerate() {
            assert_eq!(&d.data[..], &vp8_keyframe(n as u8)[..]);
        }
        let info = sfu.channels(now);
        assert_eq!(info.len(), 1);
        let p = &info[0].publishers[0];
        assert_eq!(p.uid, "alice");
        assert_eq!(p.codec.as_deref(), Some("VP8"));
        assert_eq!((p.width, p.height), (Some(320), Some(240)));
        assert_eq!(p.frames, 20);
        assert_eq!(p.subscribers, 1);
        assert_eq!(info[0].subscribers.len(), 1);
        assert_eq!(info[0].subscribers[0].publisher, "alice");
    }

    #[test]
    fn unknown_publisher_is_404() {
        let now = Instant::now();
        let mut sfu = sfu();
        let mut viewer = Peer::new(now, 50002);
        let (offer, _) = viewer.offer(Direction::RecvOnly);
        let err = sfu
            .subscribe(now, CLIENT, "nowhere", "bob", &offer)
            .unwrap_err();
        assert_eq!(err.status(), 404);
        assert!(err.to_string().contains("nowhere"));
    }

    /// Writes VP8 key frame `n` (payload bytes all `n`) from `publisher`.
    fn write_frame(publisher: &mut Peer, now: Instant, n: u8, time: u64) {
        let writer = publisher.rtc.writer(publisher.mid.unwrap()).unwrap();
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        writer
            .write(pt, now, MediaTime::from_90khz(time), vp8_keyframe(n))
            .unwrap();
    }

    fn connected_viewer(sfu: &mut Sfu, publisher: &mut Peer, now: &mut Instant) -> (Peer, Created) {
        let mut viewer = Peer::new(*now, 50100);
        let (offer, pending) = viewer.offer(Direction::RecvOnly);
        let sub = sfu
            .subscribe(*now, CLIENT, "room", "alice", &offer)
            .unwrap();
        viewer.answer(pending, &sub.answer);
        run(sfu, &mut [publisher, &mut viewer], now, 400, |p| {
            p[1].connected
        });
        (viewer, sub)
    }

    fn publisher_state(sfu: &Sfu, now: Instant) -> Option<&'static str> {
        sfu.channels(now)
            .first()
            .and_then(|c| c.publishers.first().map(|p| p.state))
    }

    #[test]
    fn a_peer_that_sends_no_binding_requests_stays_connected() {
        // libnice, once connected, sends STUN binding indications every 25 s and no binding
        // requests. The server checks the pair itself; the call lasts.
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50010);
        publisher.quiet_ice = true;
        let (mut viewer, _) = connected_viewer(&mut sfu, &mut publisher, &mut now);
        viewer.quiet_ice = true;
        let start = now;
        let mut n = 0u8;
        while now.duration_since(start) < Duration::from_secs(60) {
            // A frame every 100 ms, time passing in 5 ms steps.
            write_frame(&mut publisher, now, n, 9000 * n as u64);
            n = n.wrapping_add(1);
            for _ in 0..20 {
                step(&mut sfu, &mut [&mut publisher, &mut viewer], &mut now);
            }
            assert_eq!(
                publisher_state(&sfu, now),
                Some("connected"),
                "publisher dropped after {:?}",
                now.duration_since(start)
            );
        }
        assert_eq!(sfu.len(), 2);
        assert!(viewer.received.len() >= 590, "{}", viewer.received.len());
    }

    #[test]
    fn a_silent_peer_is_dropped() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut publisher, _) = connected_publisher(&mut sfu, &mut now, 50011);
        publisher.mute = true;
        let start = now;
        while sfu.len() == 1 && now.duration_since(start) < Duration::from_secs(30) {
            step(&mut sfu, &mut [&mut publisher], &mut now);
        }
        let gone_after = now.duration_since(start);
        assert!(sfu.is_empty(), "still there after {gone_after:?}");
        assert!(
            gone_after >= DEFAULT_PEER_TIMEOUT
                && gone_after < DEFAULT_PEER_TIMEOUT + Duration::from_secs(1),
            "dropped after {gone_after:?}"
        );
    }

    #[test]
    fn subscribers_wait_for_their_publisher_and_continue_with_its_new_session() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut first, created) = connected_publisher(&mut sfu, &mut now, 50012);
        let (mut viewer, sub) = connected_viewer(&mut sfu, &mut first, &mut now);
        write_frame(&mut first, now, 1, 90_000);
        run(
            &mut sfu,
            &mut [&mut first, &mut viewer],
            &mut now,
            100,
            |p| p[1].received.len() == 1,
        );
        // The publisher leaves: the viewer stays, waiting.
        sfu.leave(&created.id, now).unwrap();
        let info = sfu.channels(now);
        assert!(info[0].publishers.is_empty());
        assert_eq!(info[0].subscribers[0].id, sub.id);
        assert_eq!(info[0].subscribers[0].state, "waiting");
        assert_eq!(info[0].subscribers[0].publisher, "alice");
        for _ in 0..200 {
            step(&mut sfu, &mut [&mut viewer], &mut now);
        }
        // The same uid publishes again, with a timeline of its own: the viewer gets its
        // frames, one second later on the viewer's timeline, and the new publisher is asked
        // for a keyframe.
        let (mut second, _) = connected_publisher(&mut sfu, &mut now, 50013);
        run(
            &mut sfu,
            &mut [&mut second, &mut viewer],
            &mut now,
            200,
            |p| p[0].keyframe_requests > 0,
        );
        let info = sfu.channels(now);
        assert_eq!(info[0].subscribers[0].state, "connected");
        assert_eq!(info[0].publishers[0].subscribers, 1);
        let gap = now;
        write_frame(&mut second, now, 2, 5_000_000);
        run(
            &mut sfu,
            &mut [&mut second, &mut viewer],
            &mut now,
            100,
            |p| p[1].received.len() == 2,
        );
        assert_eq!(&viewer.received[1].data[..], &vp8_keyframe(2)[..]);
        let step_ticks =
            viewer.received[1].time.numer() as i64 - viewer.received[0].time.numer() as i64;
        let wall_ticks = (gap
            .duration_since(start_of(&viewer.received[0]))
            .as_secs_f64()
            * 90_000.0) as i64;
        assert!(
            (step_ticks - wall_ticks).abs() < 9_000,
            "media time moved by {step_ticks} ticks over {wall_ticks} ticks of wall clock"
        );
    }

    fn start_of(d: &MediaData) -> Instant {
        d.network_time
    }

    #[test]
    fn waiting_subscribers_end_after_the_grace() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let (mut publisher, created) = connected_publisher(&mut sfu, &mut now, 50014);
        let (mut viewer, _) = connected_viewer(&mut sfu, &mut publisher, &mut now);
        sfu.leave(&created.id, now).unwrap();
        assert_eq!(sfu.len(), 1);
        let left = now;
        while sfu.len() == 1 && now.duration_since(left) < Duration::from_secs(60) {
            step(&mut sfu, &mut [&mut viewer], &mut now);
        }
        let ended = now.duration_since(left);
        assert!(sfu.is_empty());
        assert!(
            ended >= DEFAULT_REJOIN_GRACE && ended < DEFAULT_REJOIN_GRACE + Duration::from_secs(1),
            "{ended:?}"
        );
        assert!(sfu.channels(now).is_empty());
        assert_eq!(sfu.leave(&created.id, now).unwrap_err().status(), 404);
    }

    #[test]
    fn a_publisher_that_never_connects_is_dropped() {
        let mut now = Instant::now();
        let mut sfu = sfu();
        let mut publisher = Peer::new(now, 50005);
        let (offer, _) = publisher.offer(Direction::SendOnly);
        sfu.publish(now, CLIENT, "room", None, &offer).unwrap();
        assert_eq!(sfu.channels(now)[0].publishers[0].uid, "publisher-1");
        now += CONNECT_TIMEOUT + Duration::from_secs(1);
        sfu.timeout(now);
        sfu.poll(now, &|_, _| ());
        assert!(sfu.is_empty());
    }
}
