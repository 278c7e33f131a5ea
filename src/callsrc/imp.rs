// SPDX-License-Identifier: MPL-2.0
//! The callsrc element: a bin whose `src` pad is an `appsrc` (the output, see `output.rs`)
//! fed by one subscription at a time: a webrtcbin with one receive-only video transceiver,
//! whose stream, once it arrives, goes through depayloader, parser and decoder into an
//! `appsink`.
//!
//! Threads: a worker thread per run (READY → PAUSED until PAUSED → READY) finds the
//! publisher, subscribes (offer, WHEP POST, answer), watches the stream, and when the
//! publisher is gone, subscribes again (to it, or to the channel's next publisher), so a
//! server that is slow or a publisher that is not there never holds a state change. A filler
//! thread repeats the last frame (or black) while the publisher is gone. The receive chain
//! is built on webrtcbin's streaming thread (`pad-added`). Both threads check the `stop` flag
//! of their run. Locks: `settings`, `state`, `stats`, `connection` are never held together,
//! nor while calling into GStreamer elements.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_webrtc::WebRTCPeerConnectionState;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::output::Output;
use super::{ConnectionState, PublisherGone, Quality};
use crate::callsink::{check_answer, net, whip};
use crate::codec::Codec;
use crate::rate::Rate;
use crate::server::CallServer;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "callsrc",
        gst::DebugColorFlags::empty(),
        Some("Watch a publisher of a call (WHEP)"),
    )
});

/// Between two asks for a publisher that is not there yet.
const RETRY: Duration = Duration::from_millis(500);
/// Bound of the DELETE that ends a subscription.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(750);
/// No frame for this long (at least): the publisher is gone.
const GONE_AFTER: Duration = Duration::from_secs(1);
/// Gone this long while the subscription stays up: subscribe again. Our call server gives a
/// subscription back its publisher when it returns; other servers end the stream instead,
/// sometimes without ending the connection.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(3);
/// Between two reads of webrtcbin's RTP statistics.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often the worker looks at the subscription.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct Settings {
    server: Option<String>,
    channel: String,
    uid: Option<String>,
    whep_url: Option<String>,
    token: Option<String>,
    ice_servers: Vec<String>,
    port: u32,
    timeout: u32,
    latency: u32,
    decode: bool,
    gone: PublisherGone,
    quality: Quality,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            channel: "demo".into(),
            uid: None,
            whep_url: None,
            token: None,
            ice_servers: vec![],
            port: 8080,
            timeout: 10,
            latency: 50,
            decode: true,
            gone: PublisherGone::Freeze,
            quality: Quality::High,
        }
    }
}

/// RTP statistics of the current subscription, from webrtcbin.
#[derive(Default, Clone, Copy)]
struct Rtp {
    packets: u64,
    lost: i64,
    jitter_ms: f64,
    nacks: u64,
    plis: u64,
    rtt_ms: Option<f64>,
}

#[derive(Default)]
struct Stats {
    /// Encoded frames received (out of the depayloader and parser).
    received: u64,
    decoded: u64,
    bytes: u64,
    /// RTP bytes over the last second.
    bitrate: Rate,
    /// Frames of the publisher output over the last second.
    rate: Rate,
    /// Encoded frames waiting in the decoder: their timestamps and when they went in.
    decoding: VecDeque<(gst::ClockTime, Instant)>,
    /// Smoothed time a frame spends in the decoder.
    decode_delay: Option<Duration>,
    codec: Option<Codec>,
    width: i32,
    height: i32,
    publisher: Option<String>,
    rtp: Rtp,
}

/// One subscription: its webrtcbin, the receive chain once built, the WHEP session.
struct Leg {
    generation: u64,
    webrtcbin: gst::Element,
    chain: Vec<gst::Element>,
    session: Option<(Arc<whip::Client>, String)>,
    peer: WebRTCPeerConnectionState,
}

/// One run (READY → PAUSED until PAUSED → READY).
#[derive(Default)]
struct State {
    leg: Option<Leg>,
    generation: u64,
    /// Set when the run ends: the worker and the filler stop at their next step.
    stop: Arc<AtomicBool>,
    /// The process's embedded call server, while this run uses it.
    _embedded: Option<Arc<CallServer>>,
}

pub struct CallSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    connection: Mutex<ConnectionState>,
    output: Output,
    ghost: gst::GhostPad,
}

/// What the worker needs to subscribe.
struct Job {
    settings: Settings,
    /// `whep-url`, or the server's base URL.
    base: String,
    stop: Arc<AtomicBool>,
    /// Set while the publisher is gone: the filler outputs stand-in frames.
    gone: Arc<AtomicBool>,
    /// For the server's API (the publishers of the channel).
    agent: ureq::Agent,
}

impl Job {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The elements that receive a codec: depayloader, then (for decoding) an optional parser
/// and the first installed decoder; for encoded output, the parser.
fn receive_chain(codec: Codec, decode: bool) -> Result<Vec<&'static str>, String> {
    let depay = match codec {
        Codec::Vp8 => "rtpvp8depay",
        Codec::Vp9 => "rtpvp9depay",
        Codec::H264 => "rtph264depay",
        Codec::Av1 => "rtpav1depay",
    };
    let parser = match codec {
        Codec::H264 => Some("h264parse"),
        Codec::Av1 => Some("av1parse"),
        Codec::Vp8 | Codec::Vp9 => None,
    };
    let mut chain = vec![depay];
    chain.extend(parser);
    if decode {
        let decoders: &[&str] = match codec {
            Codec::Vp8 => &["vp8dec", "avdec_vp8"],
            Codec::Vp9 => &["vp9dec", "avdec_vp9"],
            Codec::H264 => &["avdec_h264", "openh264dec"],
            Codec::Av1 => &["dav1ddec", "av1dec", "avdec_av1"],
        };
        let decoder = decoders
            .iter()
            .find(|d| gst::ElementFactory::find(d).is_some())
            .ok_or_else(|| {
                format!(
                    "no {} decoder is installed (one of {})",
                    codec.encoding_name(),
                    decoders.join(", ")
                )
            })?;
        chain.extend([*decoder, "videoconvert", "videoscale", "capsfilter"]);
    }
    if let Some(missing) = chain
        .iter()
        .find(|e| gst::ElementFactory::find(e).is_none())
    {
        return Err(format!(
            "{missing} is not installed, needed to receive {}",
            codec.encoding_name()
        ));
    }
    Ok(chain)
}

/// The caps of the receive-only transceiver: every codec this machine can receive.
fn transceiver_caps(decode: bool) -> gst::Caps {
    let mut caps = gst::Caps::new_empty();
    {
        let caps = caps.get_mut().expect("new caps are writable");
        for codec in Codec::ALL {
            if receive_chain(codec, decode).is_err() {
                continue;
            }
            caps.append_structure(codec.rtp_caps());
        }
    }
    caps
}

/// `base` without a trailing slash.
fn trimmed(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// A number field of a statistics structure, whatever its integer or float type.
fn number(s: &gst::StructureRef, field: &str) -> Option<f64> {
    let v = s.value(field).ok()?;
    v.get::<u64>()
        .map(|v| v as f64)
        .or_else(|_| v.get::<i64>().map(|v| v as f64))
        .or_else(|_| v.get::<u32>().map(f64::from))
        .or_else(|_| v.get::<i32>().map(f64::from))
        .or_else(|_| v.get::<f64>())
        .ok()
}

/// The RTP statistics of webrtcbin's `get-stats` reply: the inbound video stream's, and the
/// round trip time when webrtcbin has one (GStreamer 1.22 gives a receiver none: it takes
/// RTCP XR from the sender, which neither webrtcbin nor our server sends).
fn rtp_stats(reply: &gst::StructureRef) -> Option<Rtp> {
    let all: Vec<gst::Structure> = reply
        .iter()
        .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
        .collect();
    let kind = |s: &gst::Structure| s.get::<gst_webrtc::WebRTCStatsType>("type").ok();
    // The video stream's (not the retransmissions').
    let inbound = all
        .iter()
        .filter(|s| kind(s) == Some(gst_webrtc::WebRTCStatsType::InboundRtp))
        .max_by_key(|s| number(s, "packets-received").unwrap_or(0.0) as u64)?;
    let rtt = all
        .iter()
        .filter(|s| {
            matches!(
                kind(s),
                Some(gst_webrtc::WebRTCStatsType::RemoteOutboundRtp)
                    | Some(gst_webrtc::WebRTCStatsType::InboundRtp)
                    | Some(gst_webrtc::WebRTCStatsType::CandidatePair)
            )
        })
        .find_map(|s| number(s, "round-trip-time").or_else(|| number(s, "current-round-trip-time")))
        .filter(|rtt| *rtt > 0.0);
    let count = |f: &str| number(inbound, f).unwrap_or(0.0).max(0.0) as u64;
    Some(Rtp {
        packets: count("packets-received"),
        lost: number(inbound, "packets-lost").unwrap_or(0.0) as i64,
        jitter_ms: number(inbound, "jitter").unwrap_or(0.0) * 1000.0,
        nacks: count("nack-count"),
        plis: count("pli-count"),
        rtt_ms: rtt.map(|s| s * 1000.0),
    })
}

impl CallSrc {
    fn set_connection_state(&self, new: ConnectionState) {
        {
            let mut c = self.connection.lock().unwrap();
            if *c == new {
                return;
            }
            *c = new;
        }
        gst::info!(CAT, imp = self, "connection state {new:?}");
        self.post("callsrc-connection-state", &[("state", new.nick())]);
    }

    /// Posts an element message named `name` with string fields.
    fn post(&self, name: &str, fields: &[(&str, &str)]) {
        let mut s = gst::Structure::new_empty(name);
        for (k, v) in fields {
            s.set(*k, *v);
        }
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }

    fn fail(&self, msg: &str) {
        gst::error!(CAT, imp = self, "{msg}");
        self.set_connection_state(ConnectionState::Failed);
        gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", msg));
    }

    /// Prepares a run; returns what its worker needs.
    fn start(&self) -> Result<Job, String> {
        let settings = self.settings.lock().unwrap().clone();
        let (base, embedded) = match (&settings.whep_url, &settings.server) {
            (Some(url), _) => (url.clone(), None),
            (None, Some(server)) => (trimmed(server).to_owned(), None),
            (None, None) => {
                let port = u16::try_from(settings.port)
                    .map_err(|_| format!("port {} is not a TCP port", settings.port))?;
                let server = net::embedded_server(port).map_err(|e| {
                    format!("cannot start the embedded call server on port {port}: {e}")
                })?;
                (server.url(), Some(server))
            }
        };
        // The same URL rules as WHIP's.
        whip::parse_endpoint(&base).map_err(|e| e.to_string().replacen("WHIP", "WHEP", 1))?;
        if gst::ElementFactory::find("webrtcbin").is_none() {
            return Err(
                "webrtcbin is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-nice)".into(),
            );
        }
        if transceiver_caps(settings.decode).is_empty() {
            return Err(
                "no video codec can be received here (no depayloader or decoder of \
                        VP8, VP9, H.264 or AV1 is installed)"
                    .into(),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        *self.state.lock().unwrap() = State {
            stop: stop.clone(),
            _embedded: embedded,
            ..Default::default()
        };
        *self.stats.lock().unwrap() = Stats::default();
        self.output.reset();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(u64::from(
                settings.timeout.max(1),
            ))))
            .build()
            .into();
        Ok(Job {
            settings,
            base,
            stop,
            gone,
            agent,
        })
    }

    /// Starts the worker and the filler of `job`, once the bin is in PAUSED (webrtcbin makes
    /// no offer before).
    fn spawn_threads(&self, job: Job) -> Result<(), String> {
        let weak = self.obj().downgrade();
        let (stop, gone, mode) = (job.stop.clone(), job.gone.clone(), job.settings.gone);
        let fills = job.settings.decode && mode != PublisherGone::Eos;
        std::thread::Builder::new()
            .name("callsrc-subscribe".into())
            .spawn(move || {
                let result = supervise(&weak, &job);
                if let (Err(e), Some(obj)) = (result, weak.upgrade())
                    && !job.stopped()
                {
                    obj.imp().fail(&e);
                }
            })
            .map_err(|e| format!("cannot start the subscription thread: {e}"))?;
        if !fills {
            return Ok(());
        }
        let weak = self.obj().downgrade();
        std::thread::Builder::new()
            .name("callsrc-fill".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Some(obj) = weak.upgrade() else { return };
                    let interval = obj.imp().output.interval();
                    if gone.load(Ordering::SeqCst)
                        && let Some(now) = obj.current_running_time()
                    {
                        obj.imp().output.fill(mode, now);
                    }
                    drop(obj);
                    std::thread::sleep(interval);
                }
            })
            .map_err(|e| format!("cannot start the filler thread: {e}"))?;
        Ok(())
    }

    /// Ends the run: the worker and the filler stop, the subscription ends.
    fn stop(&self) {
        let leg = {
            let mut state = self.state.lock().unwrap();
            state.stop.store(true, Ordering::SeqCst);
            let leg = state.leg.take();
            *state = State::default();
            leg
        };
        if let Some(leg) = leg {
            self.end_leg(leg);
        }
        if *self.connection.lock().unwrap() != ConnectionState::Failed {
            self.set_connection_state(ConnectionState::Closed);
        }
    }

    /// Makes the webrtcbin of a new subscription and adds it to the bin (unless the run
    /// ended meanwhile).
    fn new_leg(&self, job: &Job, link_ice: &[String]) -> Result<(gst::Element, u64), String> {
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .property("latency", job.settings.latency)
            .build()
            .map_err(|_| "cannot make webrtcbin".to_owned())?;
        net::set_ice_servers(&webrtcbin, &job.settings.ice_servers);
        net::set_ice_servers(&webrtcbin, link_ice);
        net::configure_ice(&webrtcbin, &job.base);
        let trans = webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[
                &gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly,
                &transceiver_caps(job.settings.decode),
            ],
        );
        trans.set_property("do-nack", true);
        let generation = {
            let mut state = self.state.lock().unwrap();
            if job.stopped() {
                return Err("stopped".into());
            }
            state.generation += 1;
            self.obj()
                .add(&webrtcbin)
                .map_err(|e| format!("cannot add webrtcbin: {e}"))?;
            state.leg = Some(Leg {
                generation: state.generation,
                webrtcbin: webrtcbin.clone(),
                chain: vec![],
                session: None,
                peer: WebRTCPeerConnectionState::New,
            });
            state.generation
        };
        let weak = self.obj().downgrade();
        webrtcbin.connect_pad_added(move |_, pad| {
            if let Some(obj) = weak.upgrade()
                && let Err(e) = obj.imp().link_output(pad, generation)
            {
                obj.imp().fail(&e);
            }
        });
        let weak = self.obj().downgrade();
        webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
            let Some(obj) = weak.upgrade() else { return };
            let peer = bin.property::<WebRTCPeerConnectionState>("connection-state");
            gst::debug!(CAT, obj = obj, "peer connection {peer:?}");
            if let Some(leg) = obj.imp().state.lock().unwrap().leg.as_mut()
                && leg.generation == generation
            {
                leg.peer = peer;
            }
        });
        webrtcbin
            .sync_state_with_parent()
            .map_err(|e| format!("webrtcbin does not start: {e}"))?;
        Ok((webrtcbin, generation))
    }

    /// The state of the current subscription's peer connection, if it is `generation`.
    fn peer(&self, generation: u64) -> Option<WebRTCPeerConnectionState> {
        let state = self.state.lock().unwrap();
        state
            .leg
            .as_ref()
            .filter(|l| l.generation == generation)
            .map(|l| l.peer)
    }

    /// Ends the current subscription of `job`'s run (DELETE, bounded) and removes its
    /// elements; nothing if another run has begun since.
    fn drop_leg(&self, job: &Job) {
        let leg = {
            let mut state = self.state.lock().unwrap();
            if !Arc::ptr_eq(&state.stop, &job.stop) {
                return;
            }
            state.leg.take()
        };
        if let Some(leg) = leg {
            self.leave(&leg);
            // A state change of the bin (the pipeline stopping) would otherwise set the
            // leg's elements back to READY between their NULL and their removal.
            let _locked = StateLock::of(self.obj().upcast_ref());
            self.remove_leg(leg);
        }
    }

    /// Ends the leg's WHEP session (DELETE, bounded).
    fn leave(&self, leg: &Leg) {
        if let Some((client, resource)) = &leg.session {
            match client.delete(resource, LEAVE_TIMEOUT) {
                Ok(()) => gst::info!(CAT, imp = self, "subscription {resource} ended"),
                Err(e) => gst::info!(CAT, imp = self, "ending the subscription: {e}"),
            }
        }
    }

    fn end_leg(&self, leg: Leg) {
        self.leave(&leg);
        self.remove_leg(leg);
    }

    /// Stops the leg's elements and takes them out of the bin.
    fn remove_leg(&self, leg: Leg) {
        for e in std::iter::once(&leg.webrtcbin).chain(&leg.chain) {
            let _ = e.set_state(gst::State::Null);
            let _ = self.obj().remove(e);
        }
    }

    /// The caps the decoded output may have: what downstream takes, at the size the output
    /// keeps when it takes that.
    fn output_caps(&self, size: Option<(i32, i32)>) -> gst::Caps {
        let raw = gst::Caps::new_empty_simple("video/x-raw");
        let allowed = self.ghost.peer_query_caps(Some(&raw)).intersect(&raw);
        let allowed = if allowed.is_empty() { raw } else { allowed };
        let Some((w, h)) = size else { return allowed };
        let sized = allowed.intersect(
            &gst::Caps::builder("video/x-raw")
                .field("width", w)
                .field("height", h)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        if sized.is_empty() { allowed } else { sized }
    }

    /// Links webrtcbin's new `pad` (the publisher's RTP) through the receive chain to an
    /// appsink that hands the frames to the output.
    fn link_output(&self, pad: &gst::Pad, generation: u64) -> Result<(), String> {
        {
            let state = self.state.lock().unwrap();
            match &state.leg {
                Some(leg) if leg.generation == generation && leg.chain.is_empty() => (),
                Some(leg) if leg.generation == generation => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "a second stream from the publisher: unused"
                    );
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let codec = caps
            .structure(0)
            .and_then(|s| s.get::<&str>("encoding-name").ok())
            .and_then(Codec::from_encoding_name)
            .ok_or_else(|| format!("the publisher sends what callsrc cannot receive: {caps}"))?;
        let decode = self.settings.lock().unwrap().decode;
        gst::info!(
            CAT,
            imp = self,
            "receiving {} ({})",
            codec.encoding_name(),
            if decode { "decoded" } else { "encoded" }
        );
        let names = receive_chain(codec, decode)?;
        let mut elements = vec![];
        for name in &names {
            let e = gst::ElementFactory::make(name)
                .build()
                .map_err(|_| format!("cannot make {name}"))?;
            if *name == "h264parse" {
                // Parameter sets with every keyframe: a recording or a decoder that starts
                // late can begin there.
                e.set_property("config-interval", -1i32);
            }
            elements.push(e);
        }
        if decode {
            let capsfilter = elements.last().expect("a decoding chain");
            capsfilter.set_property("caps", self.output_caps(self.output.size()));
        }
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(2)
            .build();
        elements.push(sink.clone().upcast());
        self.obj()
            .add_many(&elements)
            .map_err(|e| format!("cannot add the receive chain: {e}"))?;
        gst::Element::link_many(&elements).map_err(|e| format!("cannot link {names:?}: {e}"))?;
        self.probe_chain(&elements, decode);
        let weak = self.obj().downgrade();
        let latency_known = AtomicBool::new(false);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let Some(obj) = weak.upgrade() else {
                        return Err(gst::FlowError::Flushing);
                    };
                    if !latency_known.swap(true, Ordering::SeqCst) {
                        obj.imp().update_latency(sink);
                    }
                    obj.imp().frame(sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        {
            let mut state = self.state.lock().unwrap();
            match state.leg.as_mut() {
                Some(leg) if leg.generation == generation => leg.chain = elements.clone(),
                _ => {
                    drop(state);
                    for e in &elements {
                        let _ = self.obj().remove(e);
                    }
                    return Ok(());
                }
            }
        }
        for e in &elements {
            let _ = e.sync_state_with_parent();
        }
        let first = elements[0]
            .static_pad("sink")
            .expect("depayloaders have a sink pad");
        pad.link(&first)
            .map_err(|e| format!("cannot link webrtcbin to {}: {e:?}", names[0]))?;
        self.stats.lock().unwrap().codec = Some(codec);
        Ok(())
    }

    /// Counts what goes through the receive chain `elements` (ending in the appsink): RTP
    /// bytes into the depayloader, encoded frames, decoded frames and the time each spends
    /// in the decoder; keeps the size of the first decoded frame.
    fn probe_chain(&self, elements: &[gst::Element], decode: bool) {
        let pad = |i: usize, name: &str| elements[i].static_pad(name).expect("always pads");
        let weak = self.obj().downgrade();
        pad(0, "sink").add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let bytes = crate::rate::probed_bytes(info);
                if let Some(obj) = weak.upgrade() {
                    let mut stats = obj.imp().stats.lock().unwrap();
                    stats.bytes += bytes;
                    stats.bitrate.add(Instant::now(), bytes);
                }
                gst::PadProbeReturn::Ok
            },
        );
        // The last encoded element: the decoder's input, or the output's.
        let encoded = if decode {
            elements.len() - 6
        } else {
            elements.len() - 2
        };
        let weak = self.obj().downgrade();
        pad(encoded, "src").add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let (Some(obj), Some(buffer)) = (weak.upgrade(), info.buffer()) {
                let mut stats = obj.imp().stats.lock().unwrap();
                stats.received += 1;
                if decode && let Some(pts) = buffer.pts() {
                    if stats.decoding.len() >= 64 {
                        stats.decoding.pop_front();
                    }
                    stats.decoding.push_back((pts, Instant::now()));
                }
            }
            gst::PadProbeReturn::Ok
        });
        if !decode {
            return;
        }
        let weak = self.obj().downgrade();
        let capsfilter = elements[elements.len() - 2].clone();
        pad(encoded + 1, "src").add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Remove;
                };
                let imp = obj.imp();
                if let Some(buffer) = info.buffer() {
                    let mut stats = imp.stats.lock().unwrap();
                    stats.decoded += 1;
                    let pts = buffer.pts();
                    while let Some((p, at)) = stats.decoding.front().copied() {
                        if Some(p) > pts {
                            break;
                        }
                        stats.decoding.pop_front();
                        if Some(p) == pts {
                            let d = at.elapsed();
                            stats.decode_delay = Some(match stats.decode_delay {
                                Some(old) => (old * 15 + d) / 16,
                                None => d,
                            });
                        }
                    }
                } else if let Some(gst::EventView::Caps(c)) = info.event().map(|e| e.view())
                    && let Some(s) = c.caps().structure(0)
                    && let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height"))
                {
                    let size = imp.output.keep_size((w, h));
                    let caps = imp.output_caps(Some(size));
                    gst::debug!(CAT, imp = imp, "decoded {w}x{h}, output {caps}");
                    capsfilter.set_property("caps", caps);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// Reports the latency of the receive chain before `sink` (jitter buffer, decoder) as
    /// the output's.
    fn update_latency(&self, sink: &gst_app::AppSink) {
        let mut q = gst::query::Latency::new();
        let pad = sink.static_pad("sink").expect("appsink has a sink pad");
        if pad.peer_query(&mut q) {
            let (_, min, max) = q.result();
            gst::debug!(CAT, imp = self, "receive latency {min} (max {max:?})");
            self.output.set_latency(min, max);
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    /// A frame from the publisher: counted and output.
    fn frame(&self, sample: gst::Sample) {
        {
            let mut stats = self.stats.lock().unwrap();
            stats.rate.add(Instant::now(), 1);
            if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                stats.width = s.get::<i32>("width").unwrap_or(stats.width);
                stats.height = s.get::<i32>("height").unwrap_or(stats.height);
            }
        }
        self.output.push(sample, self.obj().current_running_time());
    }

    /// Reads webrtcbin's RTP statistics (bounded wait).
    fn refresh_rtp_stats(&self, webrtcbin: &gst::Element) {
        let (tx, rx) = std::sync::mpsc::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            if let Ok(Some(reply)) = reply {
                let _ = tx.send(reply.to_owned());
            }
        });
        webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
        if let Ok(reply) = rx.recv_timeout(Duration::from_secs(1)) {
            gst::trace!(CAT, imp = self, "webrtcbin stats: {reply}");
            if let Some(rtp) = rtp_stats(&reply) {
                self.stats.lock().unwrap().rtp = rtp;
            }
        }
    }

    fn stats(&self) -> gst::Structure {
        let state = *self.connection.lock().unwrap();
        let freezes = self.output.freezes();
        let stats = self.stats.lock().unwrap();
        let now = Instant::now();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        gst::Structure::builder("callsrc-stats")
            .field("connection-state", state.nick())
            .field("publisher-uid", stats.publisher.clone().unwrap_or_default())
            .field(
                "codec",
                stats.codec.map(|c| c.encoding_name()).unwrap_or_default(),
            )
            .field("width", stats.width)
            .field("height", stats.height)
            .field("frames-received", stats.received)
            .field("frames-decoded", stats.decoded)
            .field("frames-output", freezes.frames)
            .field("frames-filled", freezes.filled)
            .field("fps", stats.rate.per_second(now) as f64)
            .field("bytes-received", stats.bytes)
            .field("bitrate", stats.bitrate.per_second(now) * 8)
            .field("packets-received", stats.rtp.packets)
            .field("packets-lost", stats.rtp.lost)
            .field("jitter-ms", stats.rtp.jitter_ms)
            .field("nack-sent", stats.rtp.nacks)
            .field("pli-sent", stats.rtp.plis)
            .field("rtt-ms", stats.rtp.rtt_ms.unwrap_or(-1.0))
            .field("freeze-count", freezes.count)
            .field("freeze-ms", ms(freezes.time))
            .field(
                "decode-delay-ms",
                stats.decode_delay.map(ms).unwrap_or(-1.0),
            )
            .build()
    }
}

/// Holds an element's state lock (`GST_STATE_LOCK`): no state change of it runs meanwhile.
struct StateLock(gst::Element);

impl StateLock {
    fn of(element: &gst::Element) -> StateLock {
        // SAFETY: the element outlives the guard (it holds a reference); its state lock is a
        // recursive mutex GStreamer initialises with the element and takes around every
        // state change; it is released in Drop, on every path.
        unsafe {
            let e: *mut gst::ffi::GstElement = element.as_ptr();
            glib::ffi::g_rec_mutex_lock(&mut (*e).state_lock);
        }
        StateLock(element.clone())
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // SAFETY: locked in `of` by this thread.
        unsafe {
            let e: *mut gst::ffi::GstElement = self.0.as_ptr();
            glib::ffi::g_rec_mutex_unlock(&mut (*e).state_lock);
        }
    }
}

/// What ended the watch of a subscription.
enum Watched {
    /// The run ended.
    Stopped,
    /// The publisher is gone and the output ended (`on-publisher-gone=eos`).
    Ended,
    /// Subscribe again (the connection was lost, the publisher stayed away, or another
    /// publisher took over the channel).
    Again,
}

/// The uids of the publishers the call server lists in `channel` (none when the channel is
/// not there).
fn publishers(job: &Job) -> Result<Vec<String>, String> {
    let url = format!(
        "{}/api/channels/{}",
        trimmed(&job.base),
        job.settings.channel
    );
    let mut request = job.agent.get(&url);
    if let Some(t) = job.settings.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut res = request
        .call()
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    match res.status().as_u16() {
        200 => (),
        404 => return Ok(vec![]),
        s => {
            let reason = res.body_mut().read_to_string().unwrap_or_default();
            return Err(format!(
                "{url} answered HTTP {s}: {}",
                reason.trim().chars().take(200).collect::<String>()
            ));
        }
    }
    let text = res
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let channel: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url} did not answer JSON: {e}"))?;
    Ok(channel["publishers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["uid"].as_str().map(str::to_owned))
        .collect())
}

/// The worker of a run: subscribes, watches, and subscribes again when the publisher is
/// gone, until the run ends. Until the first connection, `timeout` bounds every wait and a
/// failure is an error; afterwards callsrc waits for the publisher as long as it runs.
fn supervise(weak: &glib::WeakRef<super::CallSrc>, job: &Job) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(job.settings.timeout.max(1)));
    let mut deadline = Some(Instant::now() + timeout);
    let mut watched: Option<String> = None;
    let mut link_ice: Vec<String> = vec![];
    // Nothing for a run that ended (the element may be in its next run).
    let with = |f: &dyn Fn(&CallSrc)| {
        if let Some(obj) = weak.upgrade().filter(|_| !job.stopped()) {
            f(obj.imp());
        }
    };
    let waiting = || with(&|imp| imp.set_connection_state(ConnectionState::Waiting));
    loop {
        let Some(url) = find_publisher(job, deadline, watched.as_deref(), &waiting)? else {
            return Ok(());
        };
        let uid = url.rsplit('/').next().unwrap_or_default().to_owned();
        let changed = watched.as_deref() != Some(&uid);
        if changed {
            gst::info!(CAT, "watching {uid} ({url})");
            let previous = watched.replace(uid.clone()).unwrap_or_default();
            with(&|imp| {
                imp.stats.lock().unwrap().publisher = Some(uid.clone());
                imp.post(
                    "callsrc-publisher",
                    &[("uid", uid.as_str()), ("previous-uid", previous.as_str())],
                );
            });
        }
        let Some(obj) = weak.upgrade() else {
            return Ok(());
        };
        let attempt = subscribe(obj.imp(), job, &url, deadline, &mut link_ice);
        drop(obj);
        let generation = match attempt {
            Ok(Some(generation)) => generation,
            Ok(None) => return Ok(()),
            Err(f) if deadline.is_some() || f.permanent || job.stopped() => {
                return Err(f.message);
            }
            Err(f) => {
                gst::info!(CAT, "subscribing again to {url} failed: {}", f.message);
                with(&|imp| imp.drop_leg(job));
                waiting();
                std::thread::sleep(RETRY);
                continue;
            }
        };
        deadline = None;
        match watch(weak, job, generation, &uid, !changed) {
            Watched::Stopped => return Ok(()),
            Watched::Ended => {
                with(&|imp| {
                    imp.drop_leg(job);
                    imp.set_connection_state(ConnectionState::Closed);
                });
                return Ok(());
            }
            Watched::Again => with(&|imp| imp.drop_leg(job)),
        }
    }
}

/// `url` asking for simulcast layer `quality` (`?quality=`; nothing for the default, high).
fn with_quality(url: &str, quality: Quality) -> String {
    let name = match quality {
        Quality::High => return url.to_owned(),
        Quality::Medium => "medium",
        Quality::Low => "low",
    };
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("quality", name);
            u.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// The WHEP URL of the publisher to watch: `whep-url`, the `uid`'s, or (without `uid`) the
/// one watched last if the channel still lists it, else the first listed, waiting for one
/// (until `deadline`, if any). `None` when the run ended.
fn find_publisher(
    job: &Job,
    deadline: Option<Instant>,
    watched: Option<&str>,
    waiting: &dyn Fn(),
) -> Result<Option<String>, String> {
    let s = &job.settings;
    if let Some(url) = &s.whep_url {
        return Ok(Some(with_quality(url, s.quality)));
    }
    let url =
        |uid: &str| with_quality(&format!("{}/whep/{}/{uid}", job.base, s.channel), s.quality);
    if let Some(uid) = &s.uid {
        return Ok(Some(url(uid)));
    }
    loop {
        if job.stopped() {
            return Ok(None);
        }
        match publishers(job) {
            Ok(uids) => {
                if let Some(uid) = watched
                    .filter(|w| uids.iter().any(|u| u == w))
                    .or(uids.first().map(String::as_str))
                {
                    return Ok(Some(url(uid)));
                }
            }
            Err(e) if deadline.is_some() => return Err(e),
            Err(e) => gst::debug!(CAT, "{e}; asking again"),
        }
        if deadline.is_some_and(|d| Instant::now() + RETRY > d) {
            return Err(format!(
                "nobody published in channel \"{}\" of {} within {} s",
                s.channel, job.base, s.timeout
            ));
        }
        waiting();
        std::thread::sleep(RETRY);
    }
}

/// Why a subscription failed, and whether asking again cannot help (a refused token, a bad
/// request, a server that does not speak WHEP).
struct Failure {
    message: String,
    permanent: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            permanent: false,
        }
    }
}

/// One subscription to `url`: a new webrtcbin, its offer POSTed until the publisher is
/// there, the answer set, and the connection up. Returns the subscription's generation, or
/// `None` when the run ended.
fn subscribe(
    imp: &CallSrc,
    job: &Job,
    url: &str,
    deadline: Option<Instant>,
    link_ice: &mut Vec<String>,
) -> Result<Option<u64>, Failure> {
    let timeout = Duration::from_secs(u64::from(job.settings.timeout.max(1)));
    let (webrtcbin, generation) = match imp.new_leg(job, link_ice) {
        Ok(leg) => leg,
        Err(_) if job.stopped() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let offer = net::local_offer(&webrtcbin)?;
    let client =
        Arc::new(whip::Client::new(url, job.settings.token.clone()).map_err(|e| e.to_string())?);
    let session = loop {
        if job.stopped() {
            return Ok(None);
        }
        imp.set_connection_state(ConnectionState::Connecting);
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        let retry_before = |d: Instant| Instant::now() + RETRY < d;
        match client.publish(&offer, left.max(Duration::from_millis(100))) {
            Ok(s) => break s,
            // Not there yet (404), or (once watching) a server that is down or busy.
            Err(e)
                if (e.status() == Some(404) && deadline.is_none_or(retry_before))
                    || (deadline.is_none() && !e.is_permanent()) =>
            {
                gst::debug!(CAT, imp = imp, "{url}: {e}; asking again");
                imp.set_connection_state(ConnectionState::Waiting);
                std::thread::sleep(RETRY);
            }
            Err(e) => {
                // The client is WHIP's; what it says holds for WHEP.
                let said = e.to_string().replace("WHIP", "WHEP");
                return Err(Failure {
                    message: match e.status() {
                        Some(404) => format!(
                            "no publisher at {url} within {} s: {said}",
                            job.settings.timeout
                        ),
                        _ => said,
                    },
                    permanent: e.is_permanent(),
                });
            }
        }
    };
    if !session.ice_servers.is_empty() {
        *link_ice = session.ice_servers.iter().map(|s| s.to_gst_uri()).collect();
    }
    {
        let mut state = imp.state.lock().unwrap();
        match state.leg.as_mut() {
            Some(leg) if leg.generation == generation && !job.stopped() => {
                leg.session = Some((client.clone(), session.resource.clone()));
            }
            _ => {
                drop(state);
                let _ = client.delete(&session.resource, LEAVE_TIMEOUT);
                return Ok(None);
            }
        }
    }
    gst::info!(
        CAT,
        imp = imp,
        "subscribed to {url}, session {}",
        session.resource
    );
    gst::debug!(CAT, imp = imp, "answer:\n{}", session.answer);
    check_answer(&offer, &session.answer)?;
    net::set_answer(&webrtcbin, &session.answer)?;
    let until = Instant::now() + timeout;
    while !job.stopped() && Instant::now() < until {
        match imp.peer(generation) {
            Some(WebRTCPeerConnectionState::Connected) => {
                imp.set_connection_state(ConnectionState::Connected);
                return Ok(Some(generation));
            }
            Some(WebRTCPeerConnectionState::Failed) => {
                return Err(
                    "the WebRTC connection to the publisher failed (ICE or DTLS)"
                        .to_owned()
                        .into(),
                );
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    if job.stopped() {
        return Ok(None);
    }
    Err(format!(
        "the WHEP server answered but the WebRTC connection (ICE, DTLS) did not come up within \
         {} s: check that its candidates are reachable from here",
        job.settings.timeout
    )
    .into())
}

/// Watches subscription `generation` to `uid` until the run ends or the publisher is gone
/// for good: gone (no frame for a second, or the connection lost) is said on the bus and,
/// unless the stream ends there, stood in for by the filler; frames coming back end that
/// (and are said on the bus unless `announce` is false: the subscription is to a publisher
/// that was just announced).
fn watch(
    weak: &glib::WeakRef<super::CallSrc>,
    job: &Job,
    generation: u64,
    uid: &str,
    mut announce: bool,
) -> Watched {
    let since = Instant::now();
    // Frames take a moment to come on a new subscription (the keyframe it asks for).
    let first_frame = Duration::from_secs(u64::from(job.settings.timeout.max(1)));
    let mut gone_since = job.gone.load(Ordering::SeqCst).then_some(since);
    // Frames that end a gone that began before this subscription come from the publisher
    // announced for it.
    announce |= gone_since.is_none();
    let mut stats_at = since;
    let mut listed_at = since;
    loop {
        std::thread::sleep(TICK);
        if job.stopped() {
            return Watched::Stopped;
        }
        let Some(obj) = weak.upgrade() else {
            return Watched::Stopped;
        };
        let imp = obj.imp();
        let peer = imp.peer(generation);
        if stats_at.elapsed() >= STATS_EVERY {
            stats_at = Instant::now();
            let webrtcbin = imp
                .state
                .lock()
                .unwrap()
                .leg
                .as_ref()
                .map(|l| l.webrtcbin.clone());
            if let Some(w) = webrtcbin {
                imp.refresh_rtp_stats(&w);
            }
        }
        let lost = matches!(
            peer,
            None | Some(WebRTCPeerConnectionState::Failed | WebRTCPeerConnectionState::Closed)
        );
        let silent = match imp.output.last_frame().filter(|t| *t >= since) {
            Some(t) => t.elapsed() > GONE_AFTER.max(imp.output.interval() * 4),
            None => since.elapsed() > first_frame || gone_since.is_some(),
        };
        match gone_since {
            None if lost || silent => {
                gst::info!(
                    CAT,
                    imp = imp,
                    "publisher {uid} gone ({})",
                    if lost { "connection lost" } else { "no frames" }
                );
                imp.post("callsrc-publisher-gone", &[("uid", uid)]);
                if job.settings.gone == PublisherGone::Eos {
                    imp.output.end();
                    return Watched::Ended;
                }
                gone_since = Some(Instant::now());
                job.gone.store(true, Ordering::SeqCst);
                imp.set_connection_state(ConnectionState::Waiting);
            }
            Some(_) if !silent && !lost => {
                gst::info!(CAT, imp = imp, "publisher {uid} is back");
                gone_since = None;
                job.gone.store(false, Ordering::SeqCst);
                imp.set_connection_state(ConnectionState::Connected);
                if announce {
                    imp.post("callsrc-publisher", &[("uid", uid), ("previous-uid", uid)]);
                }
                announce = true;
            }
            Some(at) => {
                if lost || at.elapsed() > RESUBSCRIBE_AFTER {
                    return Watched::Again;
                }
                // Without `uid`: another publisher of the channel takes over.
                let follows = job.settings.whep_url.is_none() && job.settings.uid.is_none();
                if follows && listed_at.elapsed() >= RETRY {
                    listed_at = Instant::now();
                    if let Ok(uids) = publishers(job)
                        && !uids.iter().any(|u| u == uid)
                        && !uids.is_empty()
                    {
                        return Watched::Again;
                    }
                }
            }
            None => (),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for CallSrc {
    const NAME: &'static str = "GstCallSrc";
    type Type = super::CallSrc;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("src").expect("src template");
        let ghost = gst::GhostPad::builder_from_template(&templ)
            .name("src")
            .build();
        CallSrc {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            stats: Mutex::new(Stats::default()),
            connection: Mutex::new(ConnectionState::New),
            output: Output::new(),
            ghost,
        }
    }
}

impl ObjectImpl for CallSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("server")
                    .nick("Server")
                    .blurb("Base URL of a call server of this project (http://host:port); the subscription goes to <server>/whep/<channel>/<uid>")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("channel")
                    .nick("Channel")
                    .blurb("Channel of the publisher to watch")
                    .default_value(Some("demo"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("uid")
                    .nick("Publisher uid")
                    .blurb("The publisher to watch; unset: the first publisher the server lists in the channel")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("whep-url")
                    .nick("WHEP URL")
                    .blurb("Any WHEP endpoint; takes precedence over server, channel and uid")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("token")
                    .nick("Token")
                    .blurb("Bearer token for the WHEP requests (and the server's API), sent only to the origin of the URL")
                    .mutable_ready()
                    .build(),
                net::ice_servers_pspec("; those the WHEP server announces are added"),
                glib::ParamSpecUInt::builder("port")
                    .nick("Port")
                    .blurb("Port of the process's embedded call server, used when neither server nor whep-url is set")
                    .maximum(65535)
                    .default_value(8080)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb("Seconds to wait for the publisher to be there, for the WHEP answer and for ICE/DTLS")
                    .minimum(1)
                    .maximum(3600)
                    .default_value(10)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("latency")
                    .nick("Latency")
                    .blurb("Jitter buffer latency in milliseconds")
                    .maximum(10_000)
                    .default_value(50)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("decode")
                    .nick("Decode")
                    .blurb("Output decoded raw video (true) or the encoded stream as sent (false), e.g. to record without re-encoding")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("on-publisher-gone", PublisherGone::Freeze)
                    .nick("On publisher gone")
                    .blurb("While the publisher is gone (no frame for a second, or the connection lost) until it or, without uid, the channel's next publisher is there: freeze (repeat the last frame), black, or eos (end the stream). With decode=false the output pauses instead of repeating")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("quality", Quality::High)
                    .nick("Quality")
                    .blurb("Which simulcast layer to get when the publisher sends several: high (the largest), medium, low (the smallest). Asked for with ?quality= on the WHEP URL (this project's call server takes it, and gives a smaller layer when the link does not carry the one asked for); high adds nothing")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder::<ConnectionState>("connection-state")
                    .nick("Connection state")
                    .blurb("Where the subscription is: new, waiting (for the publisher), connecting, connected, failed, closed")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("connection-state, publisher-uid, codec, width, height, frames-received (encoded), frames-decoded, frames-output (from the publisher), frames-filled (while it was gone), fps and bitrate (bit/s) over the last second, bytes-received, packets-received, packets-lost, jitter-ms, nack-sent, pli-sent, rtt-ms (-1: unknown, as with GStreamer 1.22's webrtcbin), freeze-count, freeze-ms, decode-delay-ms (-1: unknown); RTP figures are of the current subscription")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let text = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|v| !v.is_empty())
        };
        match pspec.name() {
            "server" => s.server = text(),
            "channel" => s.channel = text().unwrap_or_else(|| "demo".into()),
            "uid" => s.uid = text(),
            "whep-url" => s.whep_url = text(),
            "token" => s.token = text(),
            "ice-servers" => s.ice_servers = net::ice_servers_from(value),
            "on-publisher-gone" => s.gone = value.get().expect("type checked upstream"),
            "quality" => s.quality = value.get().expect("type checked upstream"),
            "port" => s.port = value.get().expect("type checked upstream"),
            "timeout" => s.timeout = value.get().expect("type checked upstream"),
            "latency" => s.latency = value.get().expect("type checked upstream"),
            "decode" => s.decode = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "connection-state" => self.connection.lock().unwrap().to_value(),
            "stats" => self.stats().to_value(),
            name => {
                let s = self.settings.lock().unwrap();
                match name {
                    "server" => s.server.to_value(),
                    "channel" => s.channel.to_value(),
                    "uid" => s.uid.to_value(),
                    "whep-url" => s.whep_url.to_value(),
                    "token" => s.token.to_value(),
                    "ice-servers" => net::ice_servers_value(&s.ice_servers),
                    "on-publisher-gone" => s.gone.to_value(),
                    "quality" => s.quality.to_value(),
                    "port" => s.port.to_value(),
                    "timeout" => s.timeout.to_value(),
                    "latency" => s.latency.to_value(),
                    "decode" => s.decode.to_value(),
                    other => unreachable!("unknown property {other}"),
                }
            }
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add(self.output.element())
            .expect("the output is the bin's first element");
        self.ghost
            .set_target(Some(
                &self
                    .output
                    .element()
                    .static_pad("src")
                    .expect("appsrc has a src pad"),
            ))
            .expect("the ghost pad takes the output's pad");
        obj.add_pad(&self.ghost).expect("one src pad");
        // A source, whatever its children are: webrtcbin flags itself a sink too, which
        // would make the pipeline wait for an EOS from it that never comes.
        obj.set_suppressed_flags(gst::ElementFlags::SOURCE | gst::ElementFlags::SINK);
        obj.set_element_flags(gst::ElementFlags::SOURCE);
        net::prepare_dtls_identity();
    }
}

impl GstObjectImpl for CallSrc {}

impl ElementImpl for CallSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Call source",
                "Source/Network/Video",
                "Watches one publisher of a real-time call over WHEP and outputs its video",
                "gst-plugin-customvideo developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps: gst::Caps =
                "video/x-raw; video/x-vp8; video/x-vp9; video/x-h264; video/x-av1"
                    .parse()
                    .expect("valid caps");
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
        TEMPLATES.as_ref()
    }

    /// EOS sent to the element (gst-launch-1.0 -e on Ctrl-C, an application that ends the
    /// pipeline) leaves from its output, so that it reaches the bus; other events go the
    /// usual way.
    fn send_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            gst::info!(CAT, imp = self, "EOS: ending the output");
            self.output.end();
            return true;
        }
        self.parent_send_event(event)
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let mut job = None;
        if transition == gst::StateChange::ReadyToPaused {
            *self.connection.lock().unwrap() = ConnectionState::New;
            match self.start() {
                Ok(j) => job = Some(j),
                Err(e) => {
                    self.fail(&e);
                    return Err(gst::StateChangeError);
                }
            }
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady || (job.is_some() && result.is_err()) {
            self.stop();
        }
        let result = result?;
        if let Some(job) = job
            && let Err(e) = self.spawn_threads(job)
        {
            self.fail(&e);
            return Err(gst::StateChangeError);
        }
        // A live source: no preroll.
        Ok(match transition {
            gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused => {
                gst::StateChangeSuccess::NoPreroll
            }
            _ => result,
        })
    }
}

impl BinImpl for CallSrc {}
