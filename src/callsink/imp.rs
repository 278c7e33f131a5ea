// SPDX-License-Identifier: MPL-2.0
//! `callsink` implementation: a bin around `webrtcbin`.
//!
//! ```text
//! sink ─> queue (newest wins) ─┬─ raw:     videoconvert ─> encoder ─> [caps] ─┐
//!                              └─ encoded: [parser] ──────────────────────────┴─> payloader ─> webrtcbin
//! ```
//!
//! The queue's output is held until the call is set up: on the first caps a publishing
//! thread offers the codecs (one sendonly transceiver), POSTs the offer to the WHIP endpoint,
//! applies the answer, and only then builds the encoding chain for the codec the answer
//! chose and lets media flow. Stopping sends the WHIP DELETE.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_webrtc::{WebRTCICETransportPolicy, WebRTCPeerConnectionState};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::cc::{Bitrates, Congestion, TrackHints};
use super::chain::{
    ChainConfig, EncodingChain, KeyframePacer, KeyframeRequest, LayerPlan, LowLayer,
};
use super::codec::{Codec, Encoder};
use super::connection::{Msg, Supervisor};
use super::liveness::Liveness;
use super::net;
use super::stats::{self, SendStats};
use super::whip;
use super::{CodecChoice, ConnectionState, LayerSpec, Simulcast};
use crate::server::CallServer;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "callsink",
        gst::DebugColorFlags::empty(),
        Some("Publish video to a call over WHIP"),
    )
});

const DEFAULT_CHANNEL: &str = "demo";
const DEFAULT_PORT: u32 = 8080;
const DEFAULT_KEYFRAME_INTERVAL: u32 = 2;
const DEFAULT_TIMEOUT: u32 = 10;
/// Keep trying to restore a lost call for as long as the pipeline runs.
const DEFAULT_RECONNECT_TIMEOUT: i32 = -1;
#[derive(Debug, Clone)]
pub(super) struct Settings {
    server: Option<String>,
    channel: String,
    uid: Option<String>,
    token: Option<String>,
    whip_url: Option<String>,
    port: u32,
    codec: CodecChoice,
    start_bitrate: u32,
    min_bitrate: u32,
    max_bitrate: u32,
    keyframe_interval: u32,
    pub(super) ice_servers: Vec<String>,
    ice_transport_policy: WebRTCICETransportPolicy,
    pub(super) timeout: u32,
    pub(super) reconnect_timeout: i32,
    congestion_control: bool,
    simulcast: Simulcast,
    low: LowLayer,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            channel: DEFAULT_CHANNEL.into(),
            uid: None,
            token: None,
            whip_url: None,
            port: DEFAULT_PORT,
            codec: CodecChoice::Auto,
            start_bitrate: 0,
            min_bitrate: 0,
            max_bitrate: 0,
            keyframe_interval: DEFAULT_KEYFRAME_INTERVAL,
            ice_servers: vec![],
            ice_transport_policy: WebRTCICETransportPolicy::All,
            timeout: DEFAULT_TIMEOUT,
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            congestion_control: true,
            simulcast: Simulcast::None,
            low: LowLayer::default(),
        }
    }
}

/// One run's state (READY→PAUSED until PAUSED→READY).
#[derive(Default)]
pub(super) struct State {
    pub(super) webrtcbin: Option<gst::Element>,
    pub(super) client: Option<Arc<whip::Client>>,
    /// The WHIP session resource of the current call.
    pub(super) resource: Option<String>,
    /// The embedded server this run publishes to, kept running while it does.
    server: Option<Arc<CallServer>>,
    pub(super) endpoint: Option<String>,
    /// ICE servers from the WHIP server's Link headers (used when publishing again).
    pub(super) link_ice_servers: Vec<String>,
    pub(super) ssrc: u32,
    caps_seen: bool,
    pub(super) input_caps: Option<gst::Caps>,
    hints: TrackHints,
    /// The encoding chain, once the answer chose the codec.
    pub(super) chain: Option<EncodingChain>,
    /// Holds the input queue until the chain is built.
    block: Option<gst::PadProbeId>,
    /// Drops what the chain sends while the call is down.
    pub(super) hold: Option<gst::PadProbeId>,
    /// The congestion controller webrtcbin was given (`rtpgccbwe`).
    cc: Option<gst::Element>,
    congestion: Congestion,
    /// What the last answer accepted (simulcast, header extensions).
    pub(super) answered: AnsweredMedia,
    /// Congestion control holds the top simulcast layer back.
    top_held: bool,
}

/// What an SDP answer says about the video section beyond the codec: whether it receives
/// simulcast, and the ids of the header extensions it accepted.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct AnsweredMedia {
    /// `a=simulcast:recv ...`.
    pub simulcast: bool,
    /// The MID extension's id and the section's MID.
    pub mid: Option<(u32, String)>,
    /// The RTP stream id extension's id.
    pub rid_ext: Option<u32>,
}

impl AnsweredMedia {
    pub fn parse(answer: &str) -> AnsweredMedia {
        let mut media = AnsweredMedia::default();
        let (mut mid_ext, mut mid) = (None, None);
        let mut in_video = false;
        for line in answer.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                if in_video {
                    break;
                }
                in_video = m.starts_with("video ");
                continue;
            }
            if !in_video {
                continue;
            }
            if let Some(v) = line.strip_prefix("a=simulcast:") {
                media.simulcast = v.trim_start().starts_with("recv");
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                mid = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("a=extmap:") {
                let mut parts = v.split_whitespace();
                let id = parts
                    .next()
                    .and_then(|id| id.split('/').next()?.parse::<u32>().ok());
                match (id, parts.next()) {
                    (Some(id), Some(super::codec::MID_URI)) => mid_ext = Some(id),
                    (Some(id), Some(super::codec::RID_URI)) => media.rid_ext = Some(id),
                    _ => (),
                }
            }
        }
        media.mid = mid_ext.zip(mid);
        media
    }
}

/// Lock order: `supervisor`, then `settings`, then `state`; `liveness`, `stats`,
/// `keyframes` and `connection` are leaves taken on their own (the pad probes take only
/// them). No lock is held while calling into elements or posting messages.
pub struct CallSink {
    pub(super) settings: Mutex<Settings>,
    pub(super) state: Mutex<State>,
    connection: Mutex<ConnectionState>,
    stats: Mutex<SendStats>,
    keyframes: Mutex<KeyframePacer>,
    /// The connection supervisor of the current run (see `connection.rs`).
    pub(super) supervisor: Mutex<Option<Supervisor>>,
    /// The generation: identifies the current webrtcbin and publishing attempt, bumped for
    /// each new one, when the call is left and when the element stops, so that late news
    /// from an older one is recognised (shared with the attempts' worker threads).
    pub(super) gate: Arc<Mutex<u64>>,
    /// Whether the receiver still answers, while connected.
    pub(super) liveness: Mutex<Option<Liveness>>,
    queue: gst::Element,
    ghost: gst::GhostPad,
}

/// Below this target (kbit/s) the top simulcast layer is held back; it comes back at 5/4 of
/// it.
const HOLD_TOP_LAYER_BELOW: u32 = 300;

/// Whether congestion control holds the top layer of `layers` back at `target` kbit/s
/// (`held`: it does now). Never with fewer than two layers.
fn hold_top_layer(layers: &[super::chain::Layer], target: u32, held: bool) -> bool {
    if layers.len() < 2 {
        return false;
    }
    if held {
        target < HOLD_TOP_LAYER_BELOW * 5 / 4
    } else {
        target < HOLD_TOP_LAYER_BELOW
    }
}

/// The payload type and codec the answer chose for the video section.
pub(super) fn answered_codec(answer: &str) -> Result<(Codec, u32), String> {
    let sections = crate::server::sdp::media_sections(answer);
    let video = sections
        .iter()
        .find(|s| s.kind == "video")
        .ok_or("the SDP answer has no video section")?;
    if video.port == 0 {
        return Err("the server rejected the video section (port 0 in the answer)".into());
    }
    video
        .formats
        .iter()
        .find_map(|pt| {
            let codec = Codec::from_encoding_name(video.encoding(*pt)?)?;
            Some((codec, u32::from(*pt)))
        })
        .ok_or_else(|| "the SDP answer accepts none of the offered video codecs".into())
}

/// Checks that the answer chose a video codec the offer proposed, under the same payload
/// type: a server that answers with anything else is not answering this offer.
pub(crate) fn check_answer(offer: &str, answer: &str) -> Result<(Codec, u32), String> {
    let (codec, pt) = answered_codec(answer)?;
    let offered = crate::server::sdp::media_sections(offer)
        .into_iter()
        .find(|s| s.kind == "video")
        .and_then(|s| {
            let pt = u8::try_from(pt).ok()?;
            s.formats
                .contains(&pt)
                .then(|| s.encoding(pt).map(str::to_owned))
                .flatten()
        });
    match offered {
        Some(name) if Codec::from_encoding_name(&name) == Some(codec) => Ok((codec, pt)),
        _ => Err(format!(
            "the SDP answer chose {} as payload type {pt}, which the offer did not propose",
            codec.encoding_name()
        )),
    }
}

impl CallSink {
    pub(super) fn set_connection_state(&self, new: ConnectionState) {
        {
            let mut c = self.connection.lock().unwrap();
            if *c == new {
                return;
            }
            *c = new;
        }
        gst::info!(CAT, imp = self, "connection state {new:?}");
        if new == ConnectionState::Connected {
            self.force_keyframe();
        }
        self.obj().notify("connection-state");
        let nick = glib::EnumValue::from_value(&new.to_value())
            .map(|(_, v)| v.nick().to_owned())
            .unwrap_or_default();
        let s = gst::Structure::builder("callsink-connection-state")
            .field("state", nick)
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }

    pub(super) fn fail(&self, msg: String) {
        self.set_connection_state(ConnectionState::Failed);
        gst::element_imp_error!(self, gst::ResourceError::OpenWrite, ("{}", msg));
    }

    /// The codecs to offer for input `caps`.
    pub(super) fn codecs_for(&self, caps: &gst::CapsRef) -> Result<Vec<Codec>, String> {
        if let Some(c) = Codec::from_caps(caps) {
            if !c.can_payload() {
                return Err(format!(
                    "encoded {} input cannot be published: its payloader or parser is not installed",
                    c.encoding_name()
                ));
            }
            return Ok(vec![c]);
        }
        let Some(c) = self.settings.lock().unwrap().codec.codec() else {
            let all: Vec<Codec> = Codec::ALL.into_iter().filter(|c| c.can_encode()).collect();
            if all.is_empty() {
                return Err(
                    "no video encoder is installed (vp8enc, x264enc, vp9enc, av1enc)".into(),
                );
            }
            return Ok(all);
        };
        if !c.can_encode() {
            return Err(format!(
                "codec {} cannot be published: its encoder or payloader is not installed",
                c.encoding_name()
            ));
        }
        Ok(vec![c])
    }

    /// The simulcast layers for input `caps`: those of the `simulcast` property for raw
    /// input, none for encoded input (it is sent as it comes).
    fn layers_for(&self, caps: &gst::CapsRef) -> &'static [LayerSpec] {
        if Codec::from_caps(caps).is_some() {
            return &[];
        }
        self.settings.lock().unwrap().simulcast.layers()
    }

    /// The simulcast rids to offer for input `caps`, lowest first.
    pub(super) fn simulcast_rids(&self, caps: &gst::CapsRef) -> Vec<&'static str> {
        if Codec::from_caps(caps).is_some()
            && self.settings.lock().unwrap().simulcast != Simulcast::None
        {
            gst::warning!(
                CAT,
                imp = self,
                "simulcast needs raw input: encoded input is sent as one stream"
            );
        }
        self.layers_for(caps).iter().map(|l| l.rid).collect()
    }

    /// The answer did not take the simulcast offered: tell the application.
    fn post_simulcast_fallback(&self, reason: &str) {
        gst::warning!(CAT, imp = self, "{reason}");
        let s = gst::Structure::builder("callsink-simulcast-fallback")
            .field("layers", 1u32)
            .field("reason", reason)
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        gst::element_imp_warning!(self, gst::StreamError::Format, ("{}", reason));
    }

    fn bitrates(&self) -> Bitrates {
        let (start, min, max) = {
            let s = self.settings.lock().unwrap();
            (s.start_bitrate, s.min_bitrate, s.max_bitrate)
        };
        let hints = self.state.lock().unwrap().hints;
        Bitrates::new(start, min, max, &hints)
    }

    /// Builds the encoding chain for `codec` (payload type `pt`), links it between the
    /// input queue and `webrtcbin`, and lets the input flow.
    pub(super) fn build_chain(
        &self,
        webrtcbin: &gst::Element,
        caps: &gst::Caps,
        codec: Codec,
        pt: u32,
    ) -> Result<(), String> {
        let obj = self.obj();
        // One lock at a time: a guard in a struct literal lives to the end of the statement.
        let (ssrc, answered) = {
            let state = self.state.lock().unwrap();
            (state.ssrc, state.answered.clone())
        };
        let (keyframe_interval, low) = {
            let s = self.settings.lock().unwrap();
            (s.keyframe_interval, s.low)
        };
        let specs = self.layers_for(caps);
        let layers = match (specs.is_empty(), answered.simulcast, answered.rid_ext) {
            (true, _, _) => vec![],
            (false, true, Some(rid_ext)) => specs
                .iter()
                .enumerate()
                .map(|(i, &spec)| LayerPlan {
                    spec,
                    // The top layer keeps the run's SSRC.
                    ssrc: if i + 1 == specs.len() {
                        ssrc
                    } else {
                        crate::random::ssrc()
                    },
                    rid_ext,
                })
                .collect(),
            (false, simulcast, _) => {
                self.post_simulcast_fallback(if simulcast {
                    "simulcast: the server's answer accepted no RTP stream id extension; sending one layer (the full size)"
                } else {
                    "simulcast: the server's answer has no a=simulcast:recv (it does not receive simulcast); sending one layer (the full size)"
                });
                vec![]
            }
        };
        let config = ChainConfig {
            codec,
            pt,
            ssrc,
            start_kbps: self.bitrates().start,
            keyframe_interval,
            mid: answered.mid.clone(),
            layers,
            low,
        };
        let chain = EncodingChain::build(caps, &config)?;
        if !chain.layers.is_empty() {
            gst::info!(
                CAT,
                imp = self,
                "simulcast: {} layers ({})",
                chain.layers.len(),
                chain
                    .layers
                    .iter()
                    .map(|l| format!("{} 1/{} {}%", l.spec.rid, l.spec.divider, l.spec.share))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if chain.encoder.is_some() && chain.videorate.is_none() {
            gst::info!(
                CAT,
                imp = self,
                "variable frame rate input: congestion lowers its resolution only"
            );
        }
        obj.add_many(&chain.elements).map_err(|e| e.to_string())?;
        chain.link()?;
        // add-transceiver made the transceiver's sink pad already.
        let sinkpad = webrtcbin
            .sink_pads()
            .into_iter()
            .find(|p| !p.is_linked())
            .or_else(|| webrtcbin.request_pad_simple("sink_%u"))
            .ok_or("webrtcbin gave no sink pad for the video transceiver")?;
        let end = chain.end().ok_or("the encoding chain has no end")?;
        end.link(&sinkpad)
            .map_err(|e| format!("cannot link to webrtcbin: {e:?}"))?;
        // EOS stops at the end of the chain (webrtcbin has nothing to do with it): once it
        // is there, every frame before it went out, and the call can be left.
        let weak = self.obj().downgrade();
        end.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match &info.data {
                Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos => {
                    if let Some(obj) = weak.upgrade() {
                        obj.imp().send(Msg::Drained);
                    }
                    // Handled, not Drop: a dropped event makes GStreamer 1.22 unref the
                    // pointer gstreamer-rs took (NULL), a critical warning.
                    gst::PadProbeReturn::Handled
                }
                _ => gst::PadProbeReturn::Ok,
            },
        );
        self.queue
            .link(&chain.elements[0])
            .map_err(|e| format!("cannot link the queue: {e}"))?;
        for e in &chain.elements {
            e.sync_state_with_parent().map_err(|e| e.to_string())?;
        }
        self.watch_frames(&chain);
        if let Some(enc) = &chain.encoder {
            self.watch_encoder(enc);
        }
        let mut state = self.state.lock().unwrap();
        state.chain = Some(chain);
        if let Some(id) = state.block.take() {
            self.queue.static_pad("src").unwrap().remove_probe(id);
        }
        gst::info!(CAT, imp = self, "media flows ({})", codec.encoding_name());
        Ok(())
    }

    /// Measures the encode delay: the time between a frame entering the encoder and the
    /// encoded frame with the same timestamp leaving it.
    fn watch_encoder(&self, enc: &gst::Element) {
        for (pad, entering) in [("sink", true), ("src", false)] {
            let weak = self.obj().downgrade();
            enc.static_pad(pad)
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if let (Some(obj), Some(pts)) =
                        (weak.upgrade(), info.buffer().and_then(|b| b.pts()))
                    {
                        let mut stats = obj.imp().stats.lock().unwrap();
                        if entering {
                            stats.encoder_in(Instant::now(), pts);
                        } else {
                            stats.encoder_out(Instant::now(), pts);
                        }
                    }
                    gst::PadProbeReturn::Ok
                });
        }
    }

    /// Counts what every payloader of `chain` sends (see [`Self::count_sent`]), and paces
    /// keyframe requests travelling up from webrtcbin to the top layer's encoder.
    fn watch_frames(&self, chain: &EncodingChain) {
        let pays = chain.payloaders();
        self.stats.lock().unwrap().set_layers(pays.len());
        for (i, pay) in pays.iter().enumerate() {
            self.count_sent(pay, i, i + 1 == pays.len());
        }
        self.pace_keyframe_requests(&chain.payloader);
    }

    /// Counts frames entering payloader `layer` (lowest simulcast layer first) and the RTP
    /// leaving it (stats, liveness); notes the keyframes of the `top` one.
    fn count_sent(&self, pay: &gst::Element, layer: usize, top: bool) {
        let weak = self.obj().downgrade();
        pay.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(obj) = weak.upgrade() {
                    let now = Instant::now();
                    obj.imp().stats.lock().unwrap().frame_sent(now, layer);
                    if top
                        && info
                            .buffer()
                            .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
                    {
                        obj.imp().keyframes.lock().unwrap().keyframe_sent(now);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        let weak = self.obj().downgrade();
        pay.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let bytes = crate::rate::probed_bytes(info);
                if let Some(obj) = weak.upgrade() {
                    let now = Instant::now();
                    obj.imp().stats.lock().unwrap().rtp_sent(now, layer, bytes);
                    if let Some(l) = obj.imp().liveness.lock().unwrap().as_mut() {
                        l.rtp_sent(now);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// Paces the keyframe requests reaching payloader `pay` from webrtcbin (see
    /// [`KeyframePacer`]).
    fn pace_keyframe_requests(&self, pay: &gst::Element) {
        let weak = self.obj().downgrade();
        pay.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_UPSTREAM,
            move |_, info| {
                let Some(gst::PadProbeData::Event(ev)) = &info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                if gst_video::UpstreamForceKeyUnitEvent::parse(ev).is_err() {
                    return gst::PadProbeReturn::Ok;
                }
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let decision = obj.imp().keyframes.lock().unwrap().request(Instant::now());
                match decision {
                    KeyframeRequest::Forward => {
                        gst::debug!(CAT, obj = obj, "keyframe requested by the receiver");
                        gst::PadProbeReturn::Ok
                    }
                    KeyframeRequest::Coming => {
                        gst::debug!(CAT, obj = obj, "keyframe request: one is on its way");
                        gst::PadProbeReturn::Handled
                    }
                    KeyframeRequest::After(wait) => {
                        if obj.imp().keyframes.lock().unwrap().defer() {
                            gst::debug!(CAT, obj = obj, "keyframe request served in {wait:?}");
                            obj.imp().force_keyframe_after(wait);
                        }
                        gst::PadProbeReturn::Handled
                    }
                }
            },
        );
    }

    /// Asks the encoder (ours, or the one upstream for encoded input) for a keyframe after
    /// `wait`, on the system clock's thread.
    fn force_keyframe_after(&self, wait: Duration) {
        let clock = gst::SystemClock::obtain();
        let at = clock.time() + gst::ClockTime::from_nseconds(wait.as_nanos() as u64);
        let weak = self.obj().downgrade();
        let scheduled = clock.new_single_shot_id(at).wait_async(move |_, _, _| {
            if let Some(obj) = weak.upgrade() {
                obj.imp().force_keyframe();
            }
        });
        if scheduled.is_err() {
            self.force_keyframe();
        }
    }

    /// Asks the encoder for a keyframe now: when the connection is up (what was encoded
    /// before could not be sent) and for deferred requests.
    fn force_keyframe(&self) {
        self.keyframes.lock().unwrap().forced(Instant::now());
        let pays = self
            .state
            .lock()
            .unwrap()
            .chain
            .as_ref()
            .map(|c| c.payloaders())
            .unwrap_or_default();
        for pay in pays {
            gst::debug!(CAT, obj = pay, "forcing a keyframe");
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            let _ = pay.static_pad("sink").unwrap().push_event(event);
        }
    }

    /// Congestion control: webrtcbin asks for an element to put in front of the network;
    /// `rtpgccbwe` (Google congestion control over TWCC feedback) estimates the bandwidth.
    fn make_cc(&self) -> Option<gst::Element> {
        let cc = gst::ElementFactory::make("rtpgccbwe").build().ok()?;
        gst::debug!(CAT, imp = self, "congestion control with rtpgccbwe");
        let b = self.bitrates();
        cc.set_property("min-bitrate", b.min.saturating_mul(1000));
        cc.set_property("max-bitrate", b.max.saturating_mul(1000));
        cc.set_property("estimated-bitrate", b.start.saturating_mul(1000));
        let weak = self.obj().downgrade();
        cc.connect_notify(Some("estimated-bitrate"), move |cc, _| {
            let Some(obj) = weak.upgrade() else { return };
            let bps = cc.property::<u32>("estimated-bitrate");
            obj.imp().state.lock().unwrap().congestion.estimate = Some(bps / 1000);
            obj.imp().adapt();
        });
        self.state.lock().unwrap().cc = Some(cc.clone());
        Some(cc)
    }

    /// Applies the estimate: encoder bitrate within [min, max], and the degradation the
    /// optimization mode prefers.
    fn adapt(&self) {
        let bitrates = self.bitrates();
        let mut state = self.state.lock().unwrap();
        let target = bitrates.target(state.congestion.estimate);
        let mode = state.hints.mode;
        let Some(chain) = state.chain.as_ref() else {
            return;
        };
        if !chain.layers.is_empty() {
            let layers = chain.layers.clone();
            let held = state.top_held;
            let hold = hold_top_layer(&layers, target, held);
            state.top_held = hold;
            drop(state);
            let low_kbps = self.settings.lock().unwrap().low.kbps;
            return self.adapt_layers(&layers, target, low_kbps, held, hold);
        }
        let (encoder, scale_caps, videorate) = (
            chain.encoder.clone(),
            chain.scale_caps.clone(),
            chain.videorate.clone(),
        );
        let input = state
            .input_caps
            .as_ref()
            .and_then(|c| c.structure(0).map(|s| s.to_owned()));
        let changed = state
            .congestion
            .replan(mode, target, bitrates.max, videorate.is_some());
        drop(state);
        if let Some(enc) = &encoder
            && let Some(spec) = Encoder::of_element(enc)
        {
            spec.set_bitrate(enc, target);
        }
        let (Some(wanted), Some(scale_caps), Some(input)) = (changed, scale_caps, input) else {
            return;
        };
        gst::info!(
            CAT,
            imp = self,
            "estimate {target} kbit/s: scale {}%, frame rate / {}",
            wanted.scale,
            wanted.fps_divider
        );
        scale_caps.set_property("caps", wanted.scale_caps(&input));
        if let Some(rate) = videorate {
            rate.set_property("max-rate", wanted.max_rate(&input));
        }
    }

    /// Simulcast congestion control: the target is shared over the layers by their shares;
    /// under [`hold_top_layer`]'s threshold the top layer is held back (its valve drops its
    /// input) and the others share everything, and it comes back with a keyframe.
    /// `low_kbps` (non-zero) is the lowest layer's fixed bitrate, taken off the target first.
    fn adapt_layers(
        &self,
        layers: &[super::chain::Layer],
        target: u32,
        low_kbps: u32,
        was: bool,
        hold: bool,
    ) {
        let mut sending = if hold {
            &layers[..layers.len() - 1]
        } else {
            layers
        };
        let mut target = target;
        if low_kbps > 0 && sending.len() > 1 {
            sending = &sending[1..];
            target = target.saturating_sub(low_kbps);
        }
        let total: u32 = sending.iter().map(|l| l.spec.share).sum::<u32>().max(1);
        for l in sending {
            if let Some(spec) = Encoder::of_element(&l.encoder) {
                spec.set_bitrate(&l.encoder, (target * l.spec.share / total).max(30));
            }
        }
        if was == hold {
            return;
        }
        let Some(top) = layers.last() else { return };
        gst::info!(
            CAT,
            imp = self,
            "estimate {target} kbit/s: simulcast layer {} {}",
            top.spec.rid,
            if hold { "held back" } else { "sent again" }
        );
        top.valve.set_property("drop", hold);
        if !hold {
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            let _ = top.payloader.static_pad("sink").unwrap().push_event(event);
        }
    }

    fn endpoint(&self, settings: &Settings) -> Result<(String, Option<Arc<CallServer>>), String> {
        if let Some(url) = settings.whip_url.as_ref().filter(|u| !u.is_empty()) {
            return Ok((url.clone(), None));
        }
        let uid = settings
            .uid
            .as_ref()
            .map(|u| format!("?uid={u}"))
            .unwrap_or_default();
        if let Some(server) = settings.server.as_ref().filter(|u| !u.is_empty()) {
            return Ok((
                format!(
                    "{}/whip/{}{uid}",
                    server.trim_end_matches('/'),
                    settings.channel
                ),
                None,
            ));
        }
        let port = u16::try_from(settings.port)
            .map_err(|_| format!("port {} is out of range", settings.port))?;
        let server = net::embedded_server(port)
            .map_err(|e| format!("cannot start the embedded call server on port {port}: {e}"))?;
        Ok((
            format!("{}{uid}", server.whip_url(&settings.channel)),
            Some(server),
        ))
    }

    /// A webrtcbin set up for publishing to `endpoint`.
    /// A webrtcbin set up for publishing to `endpoint`, reporting its connection state to
    /// the supervisor as `generation`.
    pub(super) fn make_webrtcbin(
        &self,
        settings: &Settings,
        endpoint: &str,
        generation: u64,
    ) -> Result<gst::Element, String> {
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .map_err(|_| {
                "webrtcbin is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-nice)"
                    .to_string()
            })?;
        webrtcbin.set_property("ice-transport-policy", settings.ice_transport_policy);
        net::set_ice_servers(&webrtcbin, &settings.ice_servers);
        net::configure_ice(&webrtcbin, endpoint);
        let weak = self.obj().downgrade();
        let congestion_control = settings.congestion_control;
        webrtcbin.connect("request-aux-sender", false, move |_| {
            let obj = weak.upgrade()?;
            let cc = congestion_control.then(|| obj.imp().make_cc()).flatten();
            if !congestion_control {
                gst::info!(
                    CAT,
                    obj = obj,
                    "no congestion control: a fixed bitrate, no pacing"
                );
            } else if cc.is_none() {
                gst::warning!(
                    CAT,
                    obj = obj,
                    "rtpgccbwe is not available: no congestion control"
                );
            }
            if let Some(cc) = &cc {
                // webrtcbin adds what it gets to a bin, which sinks a floating reference
                // and otherwise takes one of its own: the reference handed over with the
                // return value would never be released (and with it the element).
                // SAFETY: marks a live object floating; the bin sinks that reference.
                unsafe { glib::gobject_ffi::g_object_force_floating(cc.as_ptr() as *mut _) };
            }
            Some(cc.to_value())
        });
        let weak = self.obj().downgrade();
        webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
            let Some(obj) = weak.upgrade() else { return };
            let state = bin.property::<WebRTCPeerConnectionState>("connection-state");
            obj.imp().send(Msg::Peer { generation, state });
        });
        Ok(webrtcbin)
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (endpoint, server) = self
            .endpoint(&settings)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("{}", e)))?;
        let client = whip::Client::new(&endpoint, settings.token.clone())
            .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ("{}", e)))?;

        let generation = self.next_generation();
        let webrtcbin = self
            .make_webrtcbin(&settings, &endpoint, generation)
            .map_err(|e| gst::error_msg!(gst::CoreError::MissingPlugin, ("{}", e)))?;
        self.obj()
            .add(&webrtcbin)
            .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ("{}", e)))?;

        if let Some(server) = &server {
            let url = server.viewer_url(&settings.channel);
            gst::info!(CAT, imp = self, "embedded call server: watch at {url}");
            let s = gst::Structure::builder("callsink-viewer")
                .field("url", &url)
                .field("channel", &settings.channel)
                .field("whip-url", &endpoint)
                .build();
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
        let mut state = self.state.lock().unwrap();
        state.ssrc = crate::random::ssrc();
        state.webrtcbin = Some(webrtcbin);
        state.client = Some(Arc::new(client));
        state.server = server;
        state.endpoint = Some(endpoint);
        let id = self.queue.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        );
        state.block = id;
        drop(state);
        self.start_supervisor()
            .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ("{}", e)))
    }

    /// Removes what the run added (the supervisor has stopped and left the call).
    fn stop(&self) {
        // Generations keep counting across runs: news from an old run stays old.
        self.next_generation();
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        *self.liveness.lock().unwrap() = None;
        let obj = self.obj();
        if let Some(id) = state.block {
            self.queue.static_pad("src").unwrap().remove_probe(id);
        }
        let elements = state.chain.iter().flat_map(|c| c.elements.iter());
        for e in elements.chain(state.webrtcbin.iter()) {
            let _ = e.set_state(gst::State::Null);
            let _ = obj.remove(e);
        }
        *self.stats.lock().unwrap() = SendStats::default();
        *self.keyframes.lock().unwrap() = KeyframePacer::default();
        self.set_connection_state(ConnectionState::Closed);
    }

    fn on_sink_event(&self, event: &gst::EventRef) {
        match event.view() {
            gst::EventView::Caps(c) => {
                let caps = c.caps_owned();
                let first = {
                    let mut state = self.state.lock().unwrap();
                    let first = !state.caps_seen;
                    state.caps_seen = true;
                    state.input_caps = Some(caps.clone());
                    first
                };
                if first {
                    self.send(Msg::Caps(caps));
                }
            }
            gst::EventView::Tag(t) => {
                let tags = t.tag();
                let mut state = self.state.lock().unwrap();
                if let Some(v) = tags.get::<gst::tags::MinimumBitrate>() {
                    state.hints.min_kbps = Some(v.get() / 1000);
                }
                if let Some(v) = tags.get::<gst::tags::MaximumBitrate>() {
                    state.hints.max_kbps = Some(v.get() / 1000);
                }
                let cc = state.cc.clone();
                drop(state);
                if let Some(cc) = cc {
                    let b = self.bitrates();
                    cc.set_property("min-bitrate", b.min.saturating_mul(1000));
                    cc.set_property("max-bitrate", b.max.saturating_mul(1000));
                }
                self.adapt();
            }
            gst::EventView::CustomDownstreamSticky(_) => {
                if let Some(mode) = crate::events::parse_optimization_mode(event) {
                    self.state.lock().unwrap().hints.mode = mode;
                    self.adapt();
                }
            }
            // The frames before it still go out; the supervisor leaves the call once they
            // did (or at once when the call is not up) and posts EOS.
            gst::EventView::Eos(_) => self.send(Msg::Eos(event.seqnum())),
            _ => (),
        }
    }

    fn stats(&self) -> gst::Structure {
        let now = Instant::now();
        let (webrtcbin, codec, encoder, caps, estimate, degradation, layers, simulcast) = {
            let s = self.state.lock().unwrap();
            let chain = s.chain.as_ref();
            let layers =
                chain.map_or(0, |c| c.layers.len().max(1) - usize::from(s.top_held)) as u32;
            // Each simulcast layer's rid, encoder, and whether it is sent (the top one is
            // not while congestion control holds it back).
            let simulcast: Vec<(&'static str, gst::Element, bool)> = chain
                .map(|c| {
                    c.layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            let held = s.top_held && i + 1 == c.layers.len();
                            (l.spec.rid, l.encoder.clone(), !held)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let encoder = chain.and_then(|c| c.encoder.clone());
            // What is sent: the encoder's input (after any degradation), or the input as it
            // comes for encoded input.
            let caps = encoder
                .as_ref()
                .and_then(|e| e.static_pad("sink"))
                .and_then(|p| p.current_caps())
                .or_else(|| s.input_caps.clone());
            (
                s.webrtcbin.clone(),
                chain.map(|c| c.codec),
                encoder,
                caps,
                s.congestion.estimate,
                s.congestion.degradation,
                layers,
                simulcast,
            )
        };
        let mut b = gst::Structure::builder("callsink-stats")
            .field("connection-state", {
                let c = *self.connection.lock().unwrap();
                glib::EnumValue::from_value(&c.to_value())
                    .map(|(_, v)| v.nick().to_owned())
                    .unwrap_or_default()
            })
            .field("codec", codec.map(|c| c.encoding_name()).unwrap_or(""))
            .field("simulcast-layers", layers)
            .field("resolution-scale", degradation.scale)
            .field("frame-rate-divider", degradation.fps_divider);
        // What the encoders say before taking the stats lock, which the probes take in
        // the streaming threads.
        let per_layer: Vec<_> = simulcast
            .iter()
            .map(|(rid, enc, active)| {
                let l = gst::Structure::builder("callsink-layer")
                    .field("rid", *rid)
                    .field("active", *active);
                let caps = enc.static_pad("sink").and_then(|p| p.current_caps());
                target_bitrate_field(enc, size_fields(caps.as_ref(), l))
            })
            .collect();
        let per_layer: Vec<gst::Structure> = {
            let counts = self.stats.lock().unwrap();
            b = counts.fields(now, b);
            per_layer
                .into_iter()
                .enumerate()
                .map(|(i, l)| counts.layer_fields(now, i, l).build())
                .collect()
        };
        if let Some(e) = estimate {
            b = b.field("estimated-bitrate", e as u64 * 1000);
        }
        b = size_fields(caps.as_ref(), b);
        if let Some(enc) = &encoder {
            b = target_bitrate_field(enc, b);
        }
        if !per_layer.is_empty() {
            b = b.field("layers", gst::List::new(per_layer));
        }
        if let Some(wb) = webrtcbin {
            b = stats::webrtc_fields(&wb, b);
        }
        b.build()
    }
}

/// Adds the `width` and `height` of `caps` to `b`.
fn size_fields(
    caps: Option<&gst::Caps>,
    mut b: gst::structure::Builder,
) -> gst::structure::Builder {
    if let Some(s) = caps.and_then(|c| c.structure(0)) {
        if let Ok(w) = s.get::<i32>("width") {
            b = b.field("width", w);
        }
        if let Ok(h) = s.get::<i32>("height") {
            b = b.field("height", h);
        }
    }
    b
}

/// Adds encoder `enc`'s bitrate setting to `b` as `target-bitrate` (bit/s).
fn target_bitrate_field(enc: &gst::Element, b: gst::structure::Builder) -> gst::structure::Builder {
    match Encoder::of_element(enc) {
        Some(spec) => b.field("target-bitrate", u64::from(spec.bitrate(enc)) * 1000),
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_decides_the_codec() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103\r\na=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\n";
        assert_eq!(answered_codec(sdp).unwrap(), (Codec::H264, 102));
        let audio = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(answered_codec(audio).unwrap_err().contains("no video"));
        let refused = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(answered_codec(refused).unwrap_err().contains("port 0"));
    }

    #[test]
    fn the_answer_says_whether_it_receives_simulcast() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\n\
                      a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                      a=extmap:3/recvonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
                      a=rid:q recv\r\na=rid:f recv\r\na=simulcast:recv q;f\r\n";
        assert_eq!(
            AnsweredMedia::parse(answer),
            AnsweredMedia {
                simulcast: true,
                mid: Some((2, "video0".into())),
                rid_ext: Some(3),
            }
        );
        let plain = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
        assert_eq!(AnsweredMedia::parse(plain), AnsweredMedia::default());
        // Another section's attributes do not count.
        let audio = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=simulcast:recv q;f\r\n";
        assert!(!AnsweredMedia::parse(audio).simulcast);
    }

    #[test]
    fn the_top_layer_is_held_back_under_a_low_estimate() {
        gst::init().unwrap();
        let layer = |spec| super::super::chain::Layer {
            spec,
            encoder: gst::ElementFactory::make("identity").build().unwrap(),
            payloader: gst::ElementFactory::make("identity").build().unwrap(),
            valve: gst::ElementFactory::make("valve").build().unwrap(),
        };
        let three: Vec<_> = Simulcast::Three
            .layers()
            .iter()
            .map(|&s| layer(s))
            .collect();
        assert!(!hold_top_layer(&three, 2500, false));
        assert!(hold_top_layer(&three, 299, false));
        // Hysteresis: back at 375 kbit/s.
        assert!(hold_top_layer(&three, 360, true));
        assert!(!hold_top_layer(&three, 375, true));
        assert!(
            !hold_top_layer(&three[2..], 100, false),
            "never the only layer"
        );
    }

    #[test]
    fn the_answer_must_choose_what_the_offer_proposed() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        let answer = |pt: &str, name: &str| {
            format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF {pt}\r\na=rtpmap:{pt} {name}/90000\r\n")
        };
        assert_eq!(
            check_answer(offer, &answer("102", "H264")).unwrap(),
            (Codec::H264, 102)
        );
        for (pt, name) in [
            ("97", "VP8"),
            ("96", "H264"),
            ("300", "VP8"),
            ("18446744073709551616", "VP8"),
        ] {
            let e = check_answer(offer, &answer(pt, name)).unwrap_err();
            assert!(
                e.contains("did not propose") || e.contains("none of"),
                "{pt} {name}: {e}"
            );
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for CallSink {
    const NAME: &'static str = "GstCallSink";
    type Type = super::CallSink;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let queue = gst::ElementFactory::make("queue")
            .name("input")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 3u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .build()
            .expect("queue is in GStreamer core");
        let templ = klass.pad_template("sink").expect("sink template");
        let ghost = gst::GhostPad::builder_from_template(&templ)
            .name("sink")
            .event_function(|pad, parent, event| {
                CallSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| {
                        imp.on_sink_event(&event);
                        gst::Pad::event_default(pad, parent, event)
                    },
                )
            })
            .build();
        CallSink {
            settings: Mutex::default(),
            state: Mutex::default(),
            connection: Mutex::new(ConnectionState::New),
            supervisor: Mutex::default(),
            gate: Arc::default(),
            liveness: Mutex::default(),
            stats: Mutex::default(),
            keyframes: Mutex::default(),
            queue,
            ghost,
        }
    }
}

impl ObjectImpl for CallSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("server")
                    .nick("Call server")
                    .blurb("Base URL of a call server (e.g. http://host:8080); the track is published to <server>/whip/<channel>?uid=<uid>. Unset (with whip-url unset): the embedded call server of this process")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("channel")
                    .nick("Channel")
                    .blurb("Channel (room) to publish into")
                    .default_value(Some(DEFAULT_CHANNEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("uid")
                    .nick("User id")
                    .blurb("Publisher id in the channel; unset: the server assigns one")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("token")
                    .nick("Token")
                    .blurb("Bearer token sent with every WHIP request (Authorization: Bearer <token>)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("whip-url")
                    .nick("WHIP URL")
                    .blurb("Any WHIP endpoint (RFC 9725), e.g. a Janus, LiveKit or MediaMTX WHIP URL; takes precedence over server/channel/uid")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("port")
                    .nick("Embedded server port")
                    .blurb("HTTP and media port of the embedded call server (started on demand when neither server nor whip-url is set; shared by every callsink of the process); 0 picks a free port")
                    .maximum(65535)
                    .default_value(DEFAULT_PORT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder::<CodecChoice>("codec")
                    .nick("Codec")
                    .blurb("Video codec for raw input: auto offers every codec that can be encoded here (VP8, H.264, VP9, AV1) and lets the server's answer decide. Encoded input is sent as it is")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("start-bitrate")
                    .nick("Start bitrate")
                    .blurb("Encoder bitrate at start in kbit/s; 0: the maximum bitrate")
                    .maximum(100_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-bitrate")
                    .nick("Minimum bitrate")
                    .blurb("Lowest encoder bitrate in kbit/s; 0: the track's minimum-bitrate tag, else 100")
                    .maximum(100_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-bitrate")
                    .nick("Maximum bitrate")
                    .blurb("Highest encoder bitrate in kbit/s; 0: the track's maximum-bitrate tag, else 2500")
                    .maximum(100_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keyframe-interval")
                    .nick("Keyframe interval")
                    .blurb("Seconds between keyframes (receivers also get one when they ask with PLI/FIR: at once, or when 200 ms have passed since the last one)")
                    .minimum(1)
                    .maximum(60)
                    .default_value(DEFAULT_KEYFRAME_INTERVAL)
                    .mutable_ready()
                    .build(),
                net::ice_servers_pspec(""),
                glib::ParamSpecEnum::builder_with_default("ice-transport-policy", WebRTCICETransportPolicy::All)
                    .nick("ICE transport policy")
                    .blurb("all, or relay to send through TURN only")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb("Seconds to wait for the WHIP server to answer")
                    .minimum(1)
                    .maximum(300)
                    .default_value(DEFAULT_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("congestion-control")
                    .nick("Congestion control")
                    .blurb("Estimate the bandwidth (Google congestion control over TWCC feedback, rtpgccbwe) and fit the encoder to it; its pacer sends at the estimate, which delays the last packets of each frame by up to a frame interval. false: the encoder keeps start-bitrate (else max-bitrate) and packets leave as they are made, for links known to carry that bitrate")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder::<Simulcast>("simulcast")
                    .nick("Simulcast")
                    .blurb("Send raw input in several layers (RFC 8853) on one track: none, dual (full size and a quarter of the width and height) or three (full, half, quarter), each its own encoder and SSRC with its rid (q, h, f) in the RTP stream id extension; the server forwards one layer to each viewer. Congestion control shares the estimate over the layers and holds the top layer back under 300 kbit/s. A server whose answer has no a=simulcast:recv gets the full layer only (a callsink-simulcast-fallback element message and a warning say so)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("low-width")
                    .nick("Low layer width")
                    .blurb("Width of the lowest simulcast layer (like Agora's setLowStreamParameter); 0: a quarter of the input's, or from low-height keeping the aspect ratio")
                    .maximum(7680)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("low-height")
                    .nick("Low layer height")
                    .blurb("Height of the lowest simulcast layer; 0: a quarter of the input's, or from low-width keeping the aspect ratio")
                    .maximum(4320)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("low-framerate")
                    .nick("Low layer frame rate")
                    .blurb("Frames per second of the lowest simulcast layer (frames are dropped, for input with a frame rate above it); 0: the input's")
                    .maximum(240)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("low-bitrate")
                    .nick("Low layer bitrate")
                    .blurb("Fixed bitrate of the lowest simulcast layer in kbit/s, taken off the estimate before the other layers share it; 0: its share of the estimate")
                    .maximum(100_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("reconnect-timeout")
                    .nick("Reconnect timeout")
                    .blurb("Seconds to keep trying to publish again after the call was lost (server restarted or gone, network change): -1 keeps trying for as long as the pipeline runs, 0 fails at once")
                    .minimum(-1)
                    .default_value(DEFAULT_RECONNECT_TIMEOUT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder::<ConnectionState>("connection-state")
                    .nick("Connection state")
                    .blurb("State of the connection to the call (also posted on the bus as callsink-connection-state element messages)")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Send statistics: connection-state, codec, simulcast-layers (how many are sent), width, height (as sent), frames-sent, fps (last second), average-fps, encode-delay-ms, freeze-time-ms, target-bitrate (bit/s), estimated-bitrate, bitrate (bit/s over the last second, every simulcast layer together), packets-sent, bytes-sent, nacks, plis, firs, packets-lost (all streams together), rtt-ms, jitter-ms, fraction-lost (the worst stream's), resolution-scale, frame-rate-divider, local-candidate, remote-candidate. With simulcast, width, height, frames-sent, fps, average-fps, encode-delay-ms, freeze-time-ms and target-bitrate are the top layer's, and layers lists one callsink-layer structure per layer, lowest first: rid, width, height, target-bitrate (its encoder's setting), bitrate and fps (last second), frames-sent, active (false while congestion control holds the layer back) (see the README)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let string = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
        };
        match pspec.name() {
            "server" => s.server = string(),
            "channel" => s.channel = string().unwrap_or_else(|| DEFAULT_CHANNEL.into()),
            "uid" => s.uid = string(),
            "token" => s.token = string(),
            "whip-url" => s.whip_url = string(),
            "port" => s.port = value.get().expect("type checked upstream"),
            "codec" => s.codec = value.get().expect("type checked upstream"),
            "start-bitrate" => s.start_bitrate = value.get().expect("type checked upstream"),
            "min-bitrate" => s.min_bitrate = value.get().expect("type checked upstream"),
            "max-bitrate" => s.max_bitrate = value.get().expect("type checked upstream"),
            "keyframe-interval" => {
                s.keyframe_interval = value.get().expect("type checked upstream")
            }
            "ice-servers" => s.ice_servers = net::ice_servers_from(value),
            "congestion-control" => {
                s.congestion_control = value.get().expect("type checked upstream")
            }
            "ice-transport-policy" => {
                s.ice_transport_policy = value.get().expect("type checked upstream")
            }
            "timeout" => s.timeout = value.get().expect("type checked upstream"),
            "reconnect-timeout" => {
                s.reconnect_timeout = value.get().expect("type checked upstream")
            }
            "simulcast" => s.simulcast = value.get().expect("type checked upstream"),
            "low-width" => s.low.width = value.get().expect("type checked upstream"),
            "low-height" => s.low.height = value.get().expect("type checked upstream"),
            "low-framerate" => s.low.fps = value.get().expect("type checked upstream"),
            "low-bitrate" => s.low.kbps = value.get().expect("type checked upstream"),
            name => unimplemented!("property {name}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "connection-state" => return self.connection.lock().unwrap().to_value(),
            "stats" => return self.stats().to_value(),
            _ => (),
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "server" => s.server.to_value(),
            "channel" => s.channel.to_value(),
            "uid" => s.uid.to_value(),
            "token" => s.token.to_value(),
            "whip-url" => s.whip_url.to_value(),
            "port" => s.port.to_value(),
            "codec" => s.codec.to_value(),
            "start-bitrate" => s.start_bitrate.to_value(),
            "min-bitrate" => s.min_bitrate.to_value(),
            "max-bitrate" => s.max_bitrate.to_value(),
            "keyframe-interval" => s.keyframe_interval.to_value(),
            "ice-servers" => net::ice_servers_value(&s.ice_servers),
            "ice-transport-policy" => s.ice_transport_policy.to_value(),
            "congestion-control" => s.congestion_control.to_value(),
            "timeout" => s.timeout.to_value(),
            "reconnect-timeout" => s.reconnect_timeout.to_value(),
            "simulcast" => s.simulcast.to_value(),
            "low-width" => s.low.width.to_value(),
            "low-height" => s.low.height.to_value(),
            "low-framerate" => s.low.fps.to_value(),
            "low-bitrate" => s.low.kbps.to_value(),
            name => unimplemented!("property {name}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        net::prepare_dtls_identity();
        let obj = self.obj();
        obj.add(&self.queue).expect("add queue");
        self.ghost
            .set_target(Some(&self.queue.static_pad("sink").unwrap()))
            .expect("ghost target");
        obj.add_pad(&self.ghost).expect("add ghost pad");
        obj.set_element_flags(gst::ElementFlags::SINK);
        obj.set_suppressed_flags(gst::ElementFlags::SINK | gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for CallSink {}

impl ElementImpl for CallSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Call sink",
                "Sink/Network/WebRTC",
                "Publishes the video that reaches it to a call over WebRTC (WHIP, RFC 9725); by default into the process's embedded call server",
                "gst-plugin-customvideo developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut caps = gst::Caps::builder("video/x-raw").build();
            {
                let caps = caps.get_mut().unwrap();
                caps.append_structure(
                    gst::Structure::builder("video/x-h264")
                        .field("stream-format", gst::List::new(["byte-stream", "avc"]))
                        .field("alignment", "au")
                        .build(),
                );
                caps.append_structure(gst::Structure::new_empty("video/x-vp8"));
                caps.append_structure(gst::Structure::new_empty("video/x-vp9"));
                caps.append_structure(gst::Structure::new_empty("video/x-av1"));
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            super::register_rtp_elements();
            if let Err(e) = self.start() {
                self.post_error_message(e);
                return Err(gst::StateChangeError);
            }
            self.set_connection_state(ConnectionState::New);
        }
        if transition == gst::StateChange::PausedToReady {
            // Leave the call (bounded) before the elements stop.
            self.stop_supervisor();
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        ret
    }
}

impl BinImpl for CallSink {}
