// SPDX-License-Identifier: MPL-2.0
//! WebRTC peers that this project did not write, for the call tests, each running in a
//! pipeline of its own in the test process:
//! - gst-plugins-rs `whipclientsink` (publisher) and `whepclientsrc` (viewer);
//! - a plain `webrtcbin` publisher and viewer that speak WHIP / WHEP themselves (an offer,
//!   an HTTP POST, the answer), the way a GStreamer application without our elements does.
//!
//! Viewers decode what they receive and keep a [`FrameLog`]: frames, the longest pause
//! between two of them, the colour at the centre of the last one.

use super::wait_for;
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Registers gst-plugins-rs's WebRTC elements (once).
pub fn register_gst_plugins_rs() {
    super::init();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gstrswebrtc::plugin_register_static().expect("register gst-plugins-rs webrtc")
    });
}

/// What a viewer decoded.
#[derive(Debug, Default, Clone)]
pub struct FrameLog {
    pub frames: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// The longest pause between two decoded frames.
    pub max_gap: Duration,
    /// RGBA at the centre of the last frame.
    pub centre: Option<[u8; 4]>,
    pub width: u32,
    pub height: u32,
    /// When the colour at the centre changed, and to what.
    pub changes: Vec<(Instant, [u8; 4])>,
    /// Pauses over a second between two frames (freezes).
    pub freezes: u32,
}

impl FrameLog {
    /// When the centre first turned near `rgb` after `after`.
    pub fn turned(&self, rgb: [u8; 3], after: Instant) -> Option<Instant> {
        self.changes
            .iter()
            .find(|(t, px)| *t >= after && (0..3).all(|i| px[i].abs_diff(rgb[i]) <= 60))
            .map(|(t, _)| *t)
    }

    fn add(&mut self, now: Instant, centre: [u8; 4], width: u32, height: u32) {
        if let Some(last) = self.last {
            let gap = now.duration_since(last);
            self.max_gap = self.max_gap.max(gap);
            if gap > Duration::from_secs(1) {
                self.freezes += 1;
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.frames += 1;
        let changed = self
            .centre
            .is_none_or(|c| (0..3).any(|i| c[i].abs_diff(centre[i]) > 60));
        if changed {
            self.changes.push((now, centre));
        }
        self.centre = Some(centre);
        (self.width, self.height) = (width, height);
    }
}

/// An appsink taking RGBA frames into `log`.
fn logging_sink(log: Arc<Mutex<FrameLog>>) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGBA")
                .build(),
        )
        .sync(false)
        .max_buffers(2)
        .drop(true)
        .build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let (w, h) = (info.width() as usize, info.height() as usize);
                let o = (h / 2) * info.stride()[0] as usize + (w / 2) * 4;
                if let Some(px) = map.get(o..o + 4) {
                    log.lock().unwrap().add(
                        Instant::now(),
                        px.try_into().unwrap(),
                        w as u32,
                        h as u32,
                    );
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// Links every video pad `element` adds to `decodebin ! videoconvert ! appsink(log)`.
fn decode_pads(pipeline: &gst::Pipeline, element: &gst::Element, log: Arc<Mutex<FrameLog>>) {
    let weak = pipeline.downgrade();
    element.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let decode = gst::ElementFactory::make("decodebin").build().unwrap();
        let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
        let sink = logging_sink(log.clone());
        pipeline
            .add_many([&decode, &convert, sink.upcast_ref()])
            .unwrap();
        convert.link(&sink).unwrap();
        let convert_weak = convert.downgrade();
        decode.connect_pad_added(move |_, pad| {
            if let Some(convert) = convert_weak.upgrade() {
                let _ = pad.link(&convert.static_pad("sink").unwrap());
            }
        });
        for e in [&decode, &convert, sink.upcast_ref()] {
            e.sync_state_with_parent().unwrap();
        }
        let _ = pad.link(&decode.static_pad("sink").unwrap());
    });
}

/// Loopback hosts need loopback candidates, which libnice does not gather on its own. And
/// no UPnP port mapping (SSDP multicast, a local HTTP server per agent).
fn add_loopback_candidates(webrtcbin: &gst::Element, url: &str) {
    let agent = webrtcbin.property::<gst::glib::Object>("ice-agent");
    if let Some(nice) = agent
        .find_property("agent")
        .and_then(|_| agent.property::<Option<gst::glib::Object>>("agent"))
        .filter(|n| n.find_property("upnp").is_some())
    {
        nice.set_property("upnp", false);
    }
    if url.contains("://127.0.0.1") || url.contains("://localhost") {
        let agent = webrtcbin.property::<gst::glib::Object>("ice-agent");
        let _ = agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// WHIP or WHEP with `webrtcbin`: offer (after ICE gathering), POST it to `url`, apply the
/// answer. Returns the session resource.
fn signal(webrtcbin: &gst::Element, url: &str) -> Result<String, String> {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    promise.wait();
    let offer = promise
        .get_reply()
        .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("offer").ok())
        .ok_or("webrtcbin made no offer")?;
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("set-local-description", &[&offer, &promise]);
    promise.wait();
    wait_for(Duration::from_secs(5), || {
        webrtcbin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            == gst_webrtc::WebRTCICEGatheringState::Complete
    });
    let sdp = webrtcbin
        .property::<gst_webrtc::WebRTCSessionDescription>("local-description")
        .sdp()
        .as_text()
        .map_err(|e| e.to_string())?;
    let request = ureq::http::Request::post(url)
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {}", super::PUBLISH_TOKEN))
        .body(sdp)
        .map_err(|e| e.to_string())?;
    let mut res = http()
        .run(request)
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    let body = res.body_mut().read_to_string().unwrap_or_default();
    if status != 201 {
        return Err(format!("POST {url}: HTTP {status}: {body}"));
    }
    let location = location.ok_or("no Location")?;
    let resource = url::Url::parse(url)
        .and_then(|u| u.join(&location))
        .map_err(|e| e.to_string())?
        .to_string();
    let answer = gst_sdp::SDPMessage::parse_buffer(body.as_bytes()).map_err(|e| e.to_string())?;
    let answer =
        gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("set-remote-description", &[&answer, &promise]);
    promise.wait();
    Ok(resource)
}

/// The first error on `pipeline`'s bus, if any.
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus().unwrap();
    bus.pop_filtered(&[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
            _ => unreachable!(),
        })
}

/// Ends a WHIP / WHEP session (if the peer made one itself) and stops its pipeline.
fn leave(resource: Option<&str>, pipeline: &gst::Pipeline) {
    if let Some(r) = resource {
        let _ = http().delete(r).call();
    }
    let _ = pipeline.set_state(gst::State::Null);
}

/// The connection state of a webrtcbin, as its nick (`connected`, `failed`, ...).
pub fn peer_state(webrtcbin: &gst::Element) -> String {
    let state = webrtcbin.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
    gst::glib::EnumValue::from_value(&state.to_value())
        .map(|(_, v)| v.nick().to_owned())
        .unwrap_or_default()
}

/// A viewer of one publisher.
pub struct Viewer {
    pub kind: &'static str,
    pub pipeline: gst::Pipeline,
    log: Arc<Mutex<FrameLog>>,
    webrtcbin: Option<gst::Element>,
    resource: Option<String>,
}

impl Viewer {
    /// gst-plugins-rs `whepclientsrc` on WHEP endpoint `url`.
    pub fn whepclientsrc(url: &str) -> Viewer {
        register_gst_plugins_rs();
        let src = gst::ElementFactory::make("whepclientsrc").build().unwrap();
        src.set_property("stun-server", None::<String>);
        let signaller = src.property::<gst::glib::Object>("signaller");
        signaller.set_property("whep-endpoint", url);
        let loopback = url.to_owned();
        src.downcast_ref::<gst::Bin>()
            .unwrap()
            .connect_deep_element_added(move |_, _, e| {
                if e.factory().is_some_and(|f| f.name() == "webrtcbin") {
                    add_loopback_candidates(e, &loopback);
                }
            });
        Viewer::decoded(src, "whepclientsrc")
    }

    /// gst-plugins-rs `whipserversrc`: a WHIP server of its own at `host_addr`
    /// (`http://ip:port`, endpoint `/whip/endpoint`) that decodes what is published to it.
    pub fn whipserversrc(host_addr: &str) -> Viewer {
        register_gst_plugins_rs();
        let src = gst::ElementFactory::make("whipserversrc").build().unwrap();
        src.set_property("stun-server", None::<String>);
        let signaller = src.property::<gst::glib::Object>("signaller");
        signaller.set_property("host-addr", host_addr);
        Viewer::decoded(src, "whipserversrc")
    }

    /// `whipserversrc` on a free port of the namespace's veth address, where both libnice
    /// agents gather candidates, once it listens. Returns it and its WHIP endpoint URL.
    pub fn whipserversrc_on_veth() -> (Viewer, String) {
        let port = std::net::TcpListener::bind("10.255.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Viewer::whipserversrc(&format!("http://10.255.0.1:{port}"));
        assert!(
            wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
                "10.255.0.1",
                port
            ))
            .is_ok()),
            "whipserversrc does not listen on 10.255.0.1:{port}"
        );
        (server, format!("http://10.255.0.1:{port}/whip/endpoint"))
    }

    /// `src ! videoconvert ! appsink`, for gst-plugins-rs sources that output decoded
    /// video on pads of their own.
    fn decoded(src: gst::Element, kind: &'static str) -> Viewer {
        let pipeline = gst::Pipeline::new();
        let log = Arc::default();
        let sink = logging_sink(Arc::clone(&log));
        let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
        pipeline
            .add_many([&src, &convert, sink.upcast_ref()])
            .unwrap();
        convert.link(&sink).unwrap();
        let convert_weak = convert.downgrade();
        src.connect_pad_added(move |_, pad| {
            if pad.name().starts_with("video")
                && let Some(convert) = convert_weak.upgrade()
            {
                let _ = pad.link(&convert.static_pad("sink").unwrap());
            }
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Viewer {
            kind,
            pipeline,
            log,
            webrtcbin: None,
            resource: None,
        }
    }

    /// A plain webrtcbin WHEP client on `url` (VP8 or H.264).
    pub fn webrtcbin(url: &str) -> Result<Viewer, String> {
        super::init();
        let pipeline = gst::Pipeline::new();
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .unwrap();
        pipeline.add(&webrtcbin).unwrap();
        add_loopback_candidates(&webrtcbin, url);
        let log = Arc::default();
        decode_pads(&pipeline, &webrtcbin, Arc::clone(&log));
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut caps = gst::Caps::new_empty();
        {
            let caps = caps.get_mut().unwrap();
            for (name, pt) in [("VP8", 96), ("H264", 102)] {
                let mut s = gst::Structure::builder("application/x-rtp")
                    .field("media", "video")
                    .field("encoding-name", name)
                    .field("payload", pt)
                    .field("clock-rate", 90000)
                    .field("rtcp-fb-nack-pli", true)
                    .field("rtcp-fb-nack", true);
                if name == "H264" {
                    s = s
                        .field("packetization-mode", "1")
                        .field("profile-level-id", "42e01f");
                }
                caps.append_structure(s.build());
            }
        }
        webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
        let resource = signal(&webrtcbin, url)?;
        Ok(Viewer {
            kind: "webrtcbin",
            pipeline,
            log,
            webrtcbin: Some(webrtcbin),
            resource: Some(resource),
        })
    }

    pub fn log(&self) -> FrameLog {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a decoded frame whose centre is near `rgb`.
    pub fn wait_colour(&self, rgb: [u8; 3], timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.log()
                .centre
                .is_some_and(|px| (0..3).all(|i| px[i].abs_diff(rgb[i]) <= 60))
        })
    }

    /// The first error on the viewer's bus, if any.
    pub fn error(&self) -> Option<String> {
        bus_error(&self.pipeline)
    }

    /// The webrtcbin viewer's connection state.
    pub fn state(&self) -> Option<String> {
        self.webrtcbin.as_ref().map(peer_state)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        leave(self.resource.as_deref(), &self.pipeline);
    }
}

/// A publisher of a solid colour, 320x240 at 30 fps, VP8.
pub struct Publisher {
    pub kind: &'static str,
    pub pipeline: gst::Pipeline,
    webrtcbin: Option<gst::Element>,
    resource: Option<String>,
}

/// `videotestsrc` of one colour (0xAARRGGBB).
fn colour_source(argb: u32) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={argb:#010x} ! video/x-raw,width=320,height=240,framerate=30/1"
    )
}

impl Publisher {
    /// gst-plugins-rs `whipclientsink` to WHIP endpoint `url`.
    pub fn whipclientsink(url: &str, argb: u32) -> Publisher {
        register_gst_plugins_rs();
        let pipeline = gst::parse::launch(&format!(
            "{} ! whipclientsink name=sink congestion-control=disabled",
            colour_source(argb)
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline.by_name("sink").unwrap();
        sink.set_property("stun-server", None::<String>);
        sink.set_property("video-caps", gst::Caps::builder("video/x-vp8").build());
        let signaller = sink.property::<gst::glib::Object>("signaller");
        signaller.set_property("whip-endpoint", url);
        signaller.set_property("auth-token", super::PUBLISH_TOKEN);
        pipeline.set_state(gst::State::Playing).unwrap();
        Publisher {
            kind: "whipclientsink",
            pipeline,
            webrtcbin: None,
            resource: None,
        }
    }

    /// A plain webrtcbin WHIP publisher (vp8enc, rtpvp8pay) to `url`, offering when
    /// webrtcbin asks for negotiation (once the caps are known).
    pub fn webrtcbin(url: &str, argb: u32) -> Result<Publisher, String> {
        super::init();
        let pipeline = gst::parse::launch(&format!(
            "webrtcbin name=w bundle-policy=max-bundle \
             {} ! videoconvert ! queue ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 \
             ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96 ! w.",
            colour_source(argb)
        ))
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .unwrap();
        let webrtcbin = pipeline.by_name("w").unwrap();
        add_loopback_candidates(&webrtcbin, url);
        let trans = webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
            .ok_or("webrtcbin has no transceiver")?;
        trans.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        webrtcbin.connect("on-negotiation-needed", false, move |_| {
            let _ = tx.lock().unwrap().send(());
            None
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "webrtcbin never asked for negotiation")?;
        let resource = signal(&webrtcbin, url)?;
        Ok(Publisher {
            kind: "webrtcbin",
            pipeline,
            webrtcbin: Some(webrtcbin),
            resource: Some(resource),
        })
    }

    pub fn error(&self) -> Option<String> {
        bus_error(&self.pipeline)
    }

    /// The webrtcbin publisher's connection state.
    pub fn state(&self) -> Option<String> {
        self.webrtcbin.as_ref().map(peer_state)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        leave(self.resource.as_deref(), &self.pipeline);
    }
}
