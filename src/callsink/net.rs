// SPDX-License-Identifier: MPL-2.0
//! What callsink needs to know about this machine and process: its interface addresses (for
//! ICE on loopback), the DTLS identity every webrtcbin shares, and the embedded call servers
//! shared by every callsink of the process.

use gst::glib;
use gst::prelude::*;
use gst_webrtc::WebRTCICEGatheringState;
use std::sync::{Arc, LazyLock, Mutex, Weak, mpsc};
use std::time::Duration;

use super::imp::CAT;
use crate::server::{CallServer, ServerConfig};

/// The embedded servers of the process, by the port they were asked for (0: any free port;
/// every callsink with `port=0` shares that one).
type ServerRegistry = Mutex<Vec<(u16, Weak<CallServer>)>>;
static EMBEDDED: LazyLock<ServerRegistry> = LazyLock::new(Default::default);

/// The process's embedded call server for `port`, started if there is none yet.
pub fn embedded_server(port: u16) -> std::io::Result<Arc<CallServer>> {
    let mut servers = EMBEDDED.lock().unwrap();
    servers.retain(|(_, w)| w.strong_count() > 0);
    let running = servers
        .iter()
        .filter_map(|(p, w)| w.upgrade().map(|s| (*p, s)))
        .find(|(asked, s)| *asked == port || s.http_addr().port() == port)
        .map(|(_, s)| s);
    if let Some(s) = running {
        return Ok(s);
    }
    let server = Arc::new(CallServer::start(ServerConfig {
        port,
        ..Default::default()
    })?);
    servers.push((port, Arc::downgrade(&server)));
    Ok(server)
}

/// Starts, once per process and on a thread of its own, the generation of the DTLS identity
/// that every webrtcbin of the process shares (an RSA key made when the first `dtlsdec` is
/// created, about a third of a second of CPU). Started when a callsink is created, it is
/// usually ready by the time the first offer needs it instead of delaying it.
pub fn prepare_dtls_identity() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("callsink-dtls-identity".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                if gst::ElementFactory::make("dtlsdec").build().is_ok() {
                    gst::debug!(CAT, "DTLS identity ready in {:?}", start.elapsed());
                }
            });
        if let Err(e) = spawned {
            gst::warning!(CAT, "cannot prepare the DTLS identity ahead: {e}");
        }
    });
}

/// The addresses of the machine's interfaces that are up, as libnice would gather on them:
/// no loopback, no IPv6 link-local.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid until freeifaddrs;
    // every node and address pointer is checked before it is read.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut node = list;
        while let Some(ifa) = node.as_ref() {
            node = ifa.ifa_next;
            let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
            let Some(sa) = ifa.ifa_addr.as_ref().filter(|_| up) else {
                continue;
            };
            let address = match i32::from(sa.sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    std::net::IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    std::net::IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            let link_local =
                matches!(address, std::net::IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
            if !address.is_loopback() && !link_local && !out.contains(&address) {
                out.push(address);
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

/// Whether `url` names this machine's loopback (127.0.0.0/8, ::1, localhost).
pub fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
        .is_some_and(|h| match h {
            url::Host::Domain(d) => d == "localhost",
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        })
}

/// The `ice-servers` property of callsink and callsrc; `more` ends its description.
pub fn ice_servers_pspec(more: &str) -> glib::ParamSpec {
    gst::ParamSpecArray::builder("ice-servers")
        .nick("ICE servers")
        .blurb(&format!(
            "STUN/TURN servers: stun://host:port, turn://user:password@host:port, turns://... \
             (none by default{more})"
        ))
        .element_spec(&glib::ParamSpecString::builder("ice-server").build())
        .mutable_ready()
        .build()
}

/// The URIs an `ice-servers` value holds.
pub fn ice_servers_from(value: &glib::Value) -> Vec<String> {
    value
        .get::<gst::Array>()
        .expect("type checked upstream")
        .iter()
        .filter_map(|v| v.get::<String>().ok())
        .collect()
}

/// An `ice-servers` value of `uris`.
pub fn ice_servers_value(uris: &[String]) -> glib::Value {
    gst::Array::new(uris.iter().map(|v| v.to_send_value())).to_value()
}

/// Gives webrtcbin the STUN and TURN servers of `uris` (`stun://…`, `turn(s)://…`).
pub fn set_ice_servers(webrtcbin: &gst::Element, uris: &[String]) {
    for uri in uris {
        if uri.starts_with("stun:") {
            webrtcbin.set_property("stun-server", uri);
        } else if uri.starts_with("turn") {
            let _ = webrtcbin.emit_by_name::<bool>("add-turn-server", &[uri]);
        }
    }
}

/// Sets up a webrtcbin's ICE agent for `endpoint`: no UPnP-IGD port mapping (it sends SSDP
/// multicast into the local network and holds back the end of gathering by its 200 ms
/// timeout; WHIP/WHEP servers are reached directly or through TURN), and loopback candidates
/// when the endpoint is on loopback.
pub fn configure_ice(webrtcbin: &gst::Element, endpoint: &str) {
    let ice = webrtcbin.property::<Option<glib::Object>>("ice-agent");
    if let Some(nice) = ice
        .as_ref()
        .filter(|ice| ice.find_property("agent").is_some())
        .and_then(|ice| ice.property::<Option<glib::Object>>("agent"))
        .filter(|nice| nice.find_property("upnp").is_some())
    {
        nice.set_property("upnp", false);
    }
    if is_loopback_url(endpoint)
        && let Some(agent) = ice
    {
        // libnice gathers no loopback candidates on its own, and once an address is added
        // it gathers on the added addresses only: add loopback and every address it would
        // have used, so that a server on loopback that answers with candidates on another
        // interface (Janus skips loopback) is still reachable.
        let mut addresses = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        addresses.extend(interface_addresses());
        for address in addresses {
            gst::debug!(CAT, obj = webrtcbin, "ICE gathers on {address}");
            let _ = agent.emit_by_name::<bool>("add-local-ip-address", &[&address.to_string()]);
        }
    }
}

/// How long an offer waits for ICE gathering before it goes with what was gathered.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(3);

/// Makes webrtcbin's offer for its transceivers, sets it as the local description and
/// returns it once ICE gathering is complete (or after [`GATHERING_TIMEOUT`]), candidates
/// included: WHIP and WHEP clients send one offer.
pub fn local_offer(webrtcbin: &gst::Element) -> Result<String, String> {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    let offer = match promise.wait() {
        gst::PromiseResult::Replied => promise
            .get_reply()
            .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("offer").ok())
            .ok_or_else(|| "webrtcbin made no offer".to_owned())?,
        other => return Err(format!("webrtcbin made no offer ({other:?})")),
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
        .ok_or_else(|| "webrtcbin has no local description".to_owned())?;
    let sdp = local.sdp().as_text().map_err(|e| e.to_string())?;
    gst::debug!(CAT, obj = webrtcbin, "offer:\n{sdp}");
    Ok(sdp)
}

/// Gives webrtcbin the server's SDP answer; an answer webrtcbin refuses is an error that
/// says why.
pub fn set_answer(webrtcbin: &gst::Element, answer: &str) -> Result<(), String> {
    let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes())
        .map_err(|_| "the server's answer is not valid SDP".to_owned())?;
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("set-remote-description", &[&desc, &promise]);
    let refused = match promise.wait() {
        gst::PromiseResult::Replied => promise
            .get_reply()
            .and_then(|r| r.get::<glib::Error>("error").ok())
            .map(|e| e.to_string()),
        other => Some(format!("webrtcbin did not take it ({other:?})")),
    };
    match refused {
        Some(e) => Err(format!("the server's SDP answer cannot be used: {e}")),
        None => Ok(()),
    }
}
