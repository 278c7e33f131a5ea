// SPDX-License-Identifier: MPL-2.0
//! The callsrc element: a bin around webrtcbin (one receive-only video transceiver) whose
//! output is linked, once the publisher's stream arrives, through depayloader, parser and
//! decoder to the bin's `src` ghost pad.
//!
//! Threads: the subscription (resolving the publisher, the offer, the WHEP POST and the
//! answer) runs on a worker thread of its own started at READY → PAUSED, so that a server
//! that is slow or a publisher that is not there yet never holds a state change; it checks
//! the `stop` flag of its run before each step. The output chain is built on webrtcbin's
//! streaming thread (`pad-added`). Locks: `settings`, `state`, `stats`, `connection` are
//! never held together, nor while calling into GStreamer elements.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_webrtc::WebRTCPeerConnectionState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::ConnectionState;
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
/// Bound of the DELETE that ends the subscription when stopping.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(750);

#[derive(Debug, Clone)]
struct Settings {
    server: Option<String>,
    channel: String,
    uid: Option<String>,
    whep_url: Option<String>,
    token: Option<String>,
    port: u32,
    timeout: u32,
    latency: u32,
    decode: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            channel: "demo".into(),
            uid: None,
            whep_url: None,
            token: None,
            port: 8080,
            timeout: 10,
            latency: 50,
            decode: true,
        }
    }
}

#[derive(Default)]
struct Stats {
    frames: u64,
    rate: Rate,
    codec: Option<Codec>,
    width: i32,
    height: i32,
    publisher: Option<String>,
}

/// One run (READY → PAUSED until PAUSED → READY).
#[derive(Default)]
struct State {
    webrtcbin: Option<gst::Element>,
    /// The output chain, once built.
    chain: Vec<gst::Element>,
    /// The WHEP session: its client and resource URL, to end it.
    session: Option<(Arc<whip::Client>, String)>,
    /// Set when the run ends: the worker stops at its next step.
    stop: Arc<AtomicBool>,
    /// The process's embedded call server, while this run uses it.
    _embedded: Option<Arc<CallServer>>,
}

pub struct CallSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    connection: Mutex<ConnectionState>,
    ghost: gst::GhostPad,
}

/// What the worker needs to subscribe.
struct Job {
    settings: Settings,
    /// `whep-url`, or the server's base URL.
    base: String,
    webrtcbin: gst::Element,
    stop: Arc<AtomicBool>,
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
        let s = gst::Structure::builder("callsrc-connection-state")
            .field("state", new.nick())
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }

    fn fail(&self, msg: &str) {
        gst::error!(CAT, imp = self, "{msg}");
        self.set_connection_state(ConnectionState::Failed);
        gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", msg));
    }

    /// Builds webrtcbin; returns what the worker that subscribes needs.
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
        whip::parse_endpoint(&base).map_err(|e| e.to_string())?;
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .property("latency", settings.latency)
            .build()
            .map_err(|_| {
                "webrtcbin is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-nice)"
                    .to_owned()
            })?;
        net::configure_ice(&webrtcbin, &base);
        let caps = transceiver_caps(settings.decode);
        if caps.is_empty() {
            return Err(
                "no video codec can be received here (no depayloader or decoder of \
                        VP8, VP9, H.264 or AV1 is installed)"
                    .into(),
            );
        }
        let trans = webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        trans.set_property("do-nack", true);
        let weak = self.obj().downgrade();
        webrtcbin.connect_pad_added(move |_, pad| {
            if let Some(obj) = weak.upgrade()
                && let Err(e) = obj.imp().link_output(pad)
            {
                obj.imp().fail(&e);
            }
        });
        let weak = self.obj().downgrade();
        webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
            let Some(obj) = weak.upgrade() else { return };
            match bin.property::<WebRTCPeerConnectionState>("connection-state") {
                WebRTCPeerConnectionState::Connected => {
                    obj.imp().set_connection_state(ConnectionState::Connected)
                }
                WebRTCPeerConnectionState::Failed => obj
                    .imp()
                    .fail("the WebRTC connection to the publisher failed (ICE or DTLS)"),
                _ => (),
            }
        });
        self.obj()
            .add(&webrtcbin)
            .map_err(|e| format!("cannot add webrtcbin: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut state = self.state.lock().unwrap();
            *state = State {
                webrtcbin: Some(webrtcbin.clone()),
                stop: stop.clone(),
                _embedded: embedded,
                ..Default::default()
            };
        }
        *self.stats.lock().unwrap() = Stats::default();
        Ok(Job {
            settings,
            base,
            webrtcbin,
            stop,
        })
    }

    /// Starts the worker of `job`, once webrtcbin is in PAUSED (it makes no offer before).
    fn spawn_worker(&self, job: Job) -> Result<(), String> {
        let weak = self.obj().downgrade();
        std::thread::Builder::new()
            .name("callsrc-subscribe".into())
            .spawn(move || {
                let result = subscribe(&weak, &job);
                if let (Err(e), Some(obj)) = (result, weak.upgrade())
                    && !job.stop.load(Ordering::SeqCst)
                {
                    obj.imp().fail(&e);
                }
            })
            .map_err(|e| format!("cannot start the subscription thread: {e}"))?;
        Ok(())
    }

    /// Ends the run: the worker stops, the session is ended (DELETE, bounded), webrtcbin and
    /// the output chain leave the bin.
    fn stop(&self) {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        state.stop.store(true, Ordering::SeqCst);
        if let Some((client, resource)) = &state.session {
            match client.delete(resource, LEAVE_TIMEOUT) {
                Ok(()) => gst::info!(CAT, imp = self, "subscription {resource} ended"),
                Err(e) => gst::info!(CAT, imp = self, "ending the subscription: {e}"),
            }
        }
        let _ = self.ghost.set_target(None::<&gst::Pad>);
        for e in state.webrtcbin.iter().chain(&state.chain) {
            let _ = e.set_state(gst::State::Null);
            let _ = self.obj().remove(e);
        }
        if *self.connection.lock().unwrap() != ConnectionState::Failed {
            self.set_connection_state(ConnectionState::Closed);
        }
    }

    /// Links webrtcbin's new `pad` (the publisher's RTP) through the receive chain to the
    /// ghost pad.
    fn link_output(&self, pad: &gst::Pad) -> Result<(), String> {
        if !self.state.lock().unwrap().chain.is_empty() {
            gst::warning!(
                CAT,
                imp = self,
                "more than one stream from the publisher: {pad:?} unused"
            );
            return Ok(());
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
        self.obj()
            .add_many(&elements)
            .map_err(|e| format!("cannot add the receive chain: {e}"))?;
        gst::Element::link_many(&elements).map_err(|e| format!("cannot link {names:?}: {e}"))?;
        for e in &elements {
            let _ = e.sync_state_with_parent();
        }
        let first = elements[0]
            .static_pad("sink")
            .expect("depayloaders have a sink pad");
        pad.link(&first)
            .map_err(|e| format!("cannot link webrtcbin to {}: {e:?}", names[0]))?;
        let last = elements
            .last()
            .and_then(|e| e.static_pad("src"))
            .expect("the chain ends in a source pad");
        if decode {
            // The output keeps the size of the first frame: later sizes are scaled to it.
            let capsfilter = elements.last().expect("a decoding chain").clone();
            let decoder_src = elements[names.len() - 4]
                .static_pad("src")
                .expect("decoders have a source pad");
            decoder_src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::EventView::Caps(c)) = info.event().map(|e| e.view())
                    && let Some(s) = c.caps().structure(0)
                    && let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height"))
                {
                    let fixed = gst::Caps::builder("video/x-raw")
                        .field("width", w)
                        .field("height", h)
                        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                        .build();
                    capsfilter.set_property("caps", &fixed);
                    return gst::PadProbeReturn::Remove;
                }
                gst::PadProbeReturn::Ok
            });
        }
        let weak = self.obj().downgrade();
        last.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let Some(obj) = weak.upgrade() else {
                    return gst::PadProbeReturn::Remove;
                };
                let mut stats = obj.imp().stats.lock().unwrap();
                if let Some(gst::PadProbeData::Buffer(_)) = &info.data {
                    stats.frames += 1;
                    stats.rate.add(Instant::now(), 1);
                } else if let Some(gst::EventView::Caps(c)) = info.event().map(|e| e.view())
                    && let Some(s) = c.caps().structure(0)
                {
                    stats.width = s.get::<i32>("width").unwrap_or(0);
                    stats.height = s.get::<i32>("height").unwrap_or(0);
                }
                gst::PadProbeReturn::Ok
            },
        );
        self.ghost
            .set_target(Some(&last))
            .map_err(|e| format!("cannot set the output: {e}"))?;
        self.stats.lock().unwrap().codec = Some(codec);
        self.state.lock().unwrap().chain = elements;
        Ok(())
    }

    fn stats(&self) -> gst::Structure {
        let state = *self.connection.lock().unwrap();
        let stats = self.stats.lock().unwrap();
        gst::Structure::builder("callsrc-stats")
            .field("connection-state", state.nick())
            .field("publisher-uid", stats.publisher.clone().unwrap_or_default())
            .field(
                "codec",
                stats.codec.map(|c| c.encoding_name()).unwrap_or_default(),
            )
            .field("width", stats.width)
            .field("height", stats.height)
            .field("frames-received", stats.frames)
            .field("fps", stats.rate.per_second(Instant::now()) as f64)
            .build()
    }
}

/// The uid of the first publisher the call server lists in `channel`, if any.
fn first_publisher(job: &Job, deadline: Instant) -> Result<Option<String>, String> {
    let url = format!(
        "{}/api/channels/{}",
        trimmed(&job.base),
        job.settings.channel
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        ))
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(t) = job.settings.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut res = request
        .call()
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    match res.status().as_u16() {
        200 => (),
        404 => return Ok(None),
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
        .and_then(|p| p.first())
        .and_then(|p| p["uid"].as_str())
        .map(str::to_owned))
}

/// The worker: resolves the publisher, offers, POSTs until the publisher is there (or the
/// timeout), sets the answer and waits for the connection.
fn subscribe(weak: &glib::WeakRef<super::CallSrc>, job: &Job) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(job.settings.timeout.max(1)));
    let deadline = Instant::now() + timeout;
    let stopped = || job.stop.load(Ordering::SeqCst);
    let with = |f: &dyn Fn(&CallSrc)| {
        if let Some(obj) = weak.upgrade() {
            f(obj.imp());
        }
    };
    let url = match (&job.settings.whep_url, &job.settings.uid) {
        (Some(url), _) => url.clone(),
        (None, Some(uid)) => format!("{}/whep/{}/{uid}", job.base, job.settings.channel),
        (None, None) => loop {
            if stopped() {
                return Ok(());
            }
            if let Some(uid) = first_publisher(job, deadline)? {
                break format!("{}/whep/{}/{uid}", job.base, job.settings.channel);
            }
            if Instant::now() + RETRY > deadline {
                return Err(format!(
                    "nobody published in channel \"{}\" of {} within {} s",
                    job.settings.channel, job.base, job.settings.timeout
                ));
            }
            with(&|imp| imp.set_connection_state(ConnectionState::Waiting));
            std::thread::sleep(RETRY);
        },
    };
    let publisher = url.rsplit('/').next().unwrap_or_default().to_owned();
    with(&|imp| imp.stats.lock().unwrap().publisher = Some(publisher.clone()));
    let offer = net::local_offer(&job.webrtcbin)?;
    let client =
        Arc::new(whip::Client::new(&url, job.settings.token.clone()).map_err(|e| e.to_string())?);
    let session = loop {
        if stopped() {
            return Ok(());
        }
        with(&|imp| imp.set_connection_state(ConnectionState::Connecting));
        let left = deadline.saturating_duration_since(Instant::now());
        match client.publish(&offer, left.max(Duration::from_millis(100))) {
            Ok(s) => break s,
            Err(e) if e.status() == Some(404) && Instant::now() + RETRY < deadline => {
                gst::debug!(CAT, "{url}: {e}; asking again");
                with(&|imp| imp.set_connection_state(ConnectionState::Waiting));
                std::thread::sleep(RETRY);
            }
            Err(e) => {
                return Err(match e.status() {
                    Some(404) => format!(
                        "no publisher at {url} within {} s: {e}",
                        job.settings.timeout
                    ),
                    _ => e.to_string(),
                });
            }
        }
    };
    if stopped() {
        let _ = client.delete(&session.resource, LEAVE_TIMEOUT);
        return Ok(());
    }
    gst::info!(CAT, "subscribed to {url}, session {}", session.resource);
    gst::debug!(CAT, "answer:\n{}", session.answer);
    with(&|imp| {
        imp.state.lock().unwrap().session = Some((client.clone(), session.resource.clone()));
    });
    check_answer(&offer, &session.answer)?;
    net::set_answer(&job.webrtcbin, &session.answer)?;
    while !stopped() && Instant::now() < deadline {
        let connected = weak
            .upgrade()
            .is_some_and(|o| *o.imp().connection.lock().unwrap() == ConnectionState::Connected);
        if connected {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if stopped() {
        return Ok(());
    }
    Err(format!(
        "the WHEP server answered but the WebRTC connection (ICE, DTLS) did not come up within \
         {} s: check that its candidates are reachable from here",
        job.settings.timeout
    ))
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
                    .build(),
                glib::ParamSpecString::builder("channel")
                    .nick("Channel")
                    .blurb("Channel of the publisher to watch")
                    .default_value(Some("demo"))
                    .build(),
                glib::ParamSpecString::builder("uid")
                    .nick("Publisher uid")
                    .blurb("The publisher to watch; unset: the first publisher the server lists in the channel")
                    .build(),
                glib::ParamSpecString::builder("whep-url")
                    .nick("WHEP URL")
                    .blurb("Any WHEP endpoint; takes precedence over server, channel and uid")
                    .build(),
                glib::ParamSpecString::builder("token")
                    .nick("Token")
                    .blurb("Bearer token for the WHEP requests (and the server's API), sent only to the origin of the URL")
                    .build(),
                glib::ParamSpecUInt::builder("port")
                    .nick("Port")
                    .blurb("Port of the process's embedded call server, used when neither server nor whep-url is set")
                    .maximum(65535)
                    .default_value(8080)
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb("Seconds to wait for the publisher to be there, for the WHEP answer and for ICE/DTLS")
                    .minimum(1)
                    .maximum(3600)
                    .default_value(10)
                    .build(),
                glib::ParamSpecUInt::builder("latency")
                    .nick("Latency")
                    .blurb("Jitter buffer latency in milliseconds")
                    .maximum(10_000)
                    .default_value(50)
                    .build(),
                glib::ParamSpecBoolean::builder("decode")
                    .nick("Decode")
                    .blurb("Output decoded raw video (true) or the encoded stream as sent (false), e.g. to record without re-encoding")
                    .default_value(true)
                    .build(),
                glib::ParamSpecEnum::builder::<ConnectionState>("connection-state")
                    .nick("Connection state")
                    .blurb("Where the subscription is: new, waiting (for the publisher), connecting, connected, failed, closed")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("connection-state, publisher-uid, codec, width, height, frames-received, fps (over the last second)")
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
            return self.ghost.push_event(event);
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
            && let Err(e) = self.spawn_worker(job)
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
