// SPDX-License-Identifier: MPL-2.0
//! Janus VideoRoom (Debian's janus 1.1, run by `scripts/janus.sh up` with Janus's own HTTP API
//! on) for the fan-out comparison: the publisher comes in over WHIP (Meetecho's
//! simple-whip-server), the load subscribers are VideoRoom subscribers signalled through
//! Janus's HTTP API (session, handle, `join` as a subscriber, Janus's offer, `start` with the
//! answer).
//!
//! Janus skips loopback interfaces: inside the benchmark's network namespace its candidates
//! are on the namespace's veth address, [`VETH`], where the peers that talk to it bind too.

use super::Peer;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use str0m::Candidate;
use str0m::change::SdpOffer;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/janus.sh");
/// Janus's HTTP API (JANUS_HTTP_PORT of `scripts/janus.sh`).
pub const API: &str = "http://127.0.0.1:8088/janus";
/// The WHIP endpoint that publishes into [`ROOM`] (`scripts/janus.sh` defaults).
pub const WHIP_URL: &str = "http://127.0.0.1:7080/whip/endpoint/customvideo";
pub const ROOM: u64 = 1234;
/// The address of the private network namespace's veth (scripts/netns-run.sh).
pub const VETH: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1));

/// Ok when Janus and the WHIP server are installed; else what `scripts/janus.sh check` says.
pub fn installed() -> Result<(), String> {
    let out = Command::new("bash")
        .args([SCRIPT, "check"])
        .output()
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Janus and the WHIP server, running while this lives (`scripts/janus.sh up`, then `down`).
pub struct Janus {
    state: PathBuf,
    /// Janus's process (not the WHIP server's).
    pub pid: u32,
}

impl Janus {
    /// Starts both: Janus's HTTP API on, RTP ports 20000-40000 (a port per PeerConnection),
    /// sessions that never time out, `event_loops` shared event loops (0: Janus's default, a
    /// thread per PeerConnection), log level `debug`.
    pub fn start(event_loops: usize, debug: u32) -> Result<Janus, String> {
        let state =
            std::env::temp_dir().join(format!("customvideo-janus-fanout-{}", std::process::id()));
        let mut janus = Janus { state, pid: 0 };
        let out = janus
            .script("up")
            .env("JANUS_HTTP_PORT", "8088")
            .env("JANUS_RTP_RANGE", "20000-40000")
            .env("JANUS_FORWARD_PORT", "0")
            .env("JANUS_SESSION_TIMEOUT", "0")
            .env("JANUS_EVENT_LOOPS", event_loops.to_string())
            .env("JANUS_DEBUG", debug.to_string())
            .output()
            .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
        let pid = std::fs::read_to_string(janus.state.join("janus.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        match pid {
            Some(pid) if out.status.success() => {
                janus.pid = pid;
                Ok(janus)
            }
            _ => Err(format!(
                "Janus did not start:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    fn script(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.args([SCRIPT, command])
            .env("JANUS_STATE_DIR", &self.state)
            .env("JANUS_ROOM", ROOM.to_string());
        c
    }

    /// The id of the room's publisher (VideoRoom `listparticipants`), once there is one.
    pub fn publisher(&self, timeout: Duration) -> Result<u64, String> {
        let mut s = Session::create()?;
        s.attach()?;
        let start = Instant::now();
        let id = loop {
            let answer = s.message(json!({"request": "listparticipants", "room": ROOM}), None)?;
            let found = answer["plugindata"]["data"]["participants"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|p| p["publisher"] == true)
                        .and_then(|p| p["id"].as_u64())
                });
            if let Some(id) = found {
                break Ok(id);
            }
            if start.elapsed() > timeout {
                break Err(format!("no publisher in room {ROOM}: {answer}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        s.destroy();
        id
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.script("down").output();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(40)))
        .build()
        .into()
}

/// POSTs a Janus API request to `url`; Janus's answer unless it is an error.
fn call(url: &str, mut request: Value) -> Result<Value, String> {
    request["transaction"] = json!("fanout");
    let body = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(request.to_string())
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| format!("POST {url}: {e}"))?;
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))?;
    if answer["janus"] == "error" {
        return Err(format!("{url}: {}", answer["error"]));
    }
    Ok(answer)
}

/// A Janus session with (once attached) a VideoRoom handle.
pub struct Session {
    url: String,
    handle: Option<String>,
}

impl Session {
    pub fn create() -> Result<Session, String> {
        let answer = call(API, json!({"janus": "create"}))?;
        let id = answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("create: {answer}"))?;
        Ok(Session {
            url: format!("{API}/{id}"),
            handle: None,
        })
    }

    pub fn attach(&mut self) -> Result<(), String> {
        let answer = call(
            &self.url,
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )?;
        let id = answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("attach: {answer}"))?;
        self.handle = Some(format!("{}/{id}", self.url));
        Ok(())
    }

    /// A request to the VideoRoom handle, with a JSEP or not.
    pub fn message(&self, body: Value, jsep: Option<Value>) -> Result<Value, String> {
        let mut request = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        call(self.handle.as_ref().ok_or("not attached")?, request)
    }

    /// The next event of the session (long poll: Janus answers a keepalive after 30 s).
    pub fn event(&self) -> Result<Value, String> {
        let url = format!("{}?maxev=1", self.url);
        let body = agent()
            .get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| format!("GET {url}: {e}"))?;
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}"))
    }

    /// Ends the session and its handle.
    pub fn destroy(&self) {
        let _ = call(&self.url, json!({"janus": "destroy"}));
    }
}

/// Ends the session whose URL a subscriber from [`subscribe`] holds as its resource.
pub fn leave(resource: &str) {
    let _ = call(resource, json!({"janus": "destroy"}));
}

/// Adds a candidate Janus trickled (`{"candidate": "candidate:...", ...}`); false once Janus
/// says it has no more (`{"completed": true}`).
fn trickled(peer: &mut Peer, candidate: &Value) -> bool {
    if candidate["completed"] == true {
        return false;
    }
    if let Some(c) = candidate["candidate"]
        .as_str()
        .and_then(|c| Candidate::from_sdp_string(c).ok())
    {
        peer.rtc.add_remote_candidate(c);
    }
    true
}

/// A VideoRoom subscriber to publisher `feed`: a session, a handle, `join`, Janus's offer
/// (its candidates in the SDP or trickled), str0m's answer (its host candidate in the SDP) with
/// `start`. The peer is on [`VETH`]; its join time counts from the session's creation; its
/// resource is the session's URL (see [`leave`]).
pub fn subscribe(feed: u64, rtp_mode: bool) -> Result<Peer, String> {
    let created = Instant::now();
    let mut s = Session::create()?;
    let mut peer = Peer::answerer(VETH, rtp_mode);
    peer.created = created;
    peer.resource = Some(s.url.clone());
    let result = (|| {
        s.attach()?;
        let join = json!({
            "request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}],
        });
        let mut early = Vec::new();
        let mut answer = s.message(join, None)?;
        let offer = loop {
            if let Some(sdp) = answer["jsep"]["sdp"].as_str() {
                break sdp.to_owned();
            }
            if answer["janus"] == "trickle" {
                early.push(answer["candidate"].clone());
            }
            if let Some(e) = answer["plugindata"]["data"]["error"].as_str() {
                return Err(format!("join: {e}"));
            }
            if created.elapsed() > Duration::from_secs(30) {
                return Err("join: no offer from Janus in 30 s".into());
            }
            answer = s.event()?;
        };
        let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| format!("offer: {e}"))?;
        let sdp = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("offer: {e}"))?
            .to_sdp_string();
        let mut more = early.iter().all(|c| trickled(&mut peer, c));
        s.message(
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": sdp, "trickle": false})),
        )?;
        // Janus (half trickle, its default) puts its candidates in the offer; otherwise it
        // trickles them.
        let has_candidates = answer["jsep"]["sdp"]
            .as_str()
            .is_some_and(|s| s.contains("a=candidate"));
        while more && !has_candidates && created.elapsed() < Duration::from_secs(30) {
            let e = s.event()?;
            if e["janus"] == "trickle" {
                more = trickled(&mut peer, &e["candidate"]);
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(peer),
        Err(e) => {
            s.destroy();
            Err(e)
        }
    }
}
