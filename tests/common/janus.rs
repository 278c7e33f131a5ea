// SPDX-License-Identifier: MPL-2.0
//! Janus VideoRoom behind Meetecho's simple-whip-server, run by `scripts/janus.sh`, and Janus's
//! own account of its publishers, read from its Admin API.

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/janus.sh");
/// The ports the test gives `scripts/janus.sh up` (its defaults).
const WHIP_PORT: u16 = 7080;
const ADMIN_PORT: u16 = 7088;
/// The Admin API's secret, as `scripts/janus.sh` configures it.
const ADMIN_SECRET: &str = "customvideo-admin";
/// The VideoRoom room the WHIP endpoints publish into.
pub const ROOM: u64 = 1234;
/// The WHIP endpoint that publishes into [`ROOM`]; the one named `{ENDPOINT}-rtp` publishes
/// there too, and Janus forwards its video as plain RTP.
pub const ENDPOINT: &str = "http://127.0.0.1:7080/whip/endpoint/customvideo";

/// Fails, saying how to install them, unless Janus and the WHIP server are installed.
pub fn assert_installed() {
    let out = Command::new("bash")
        .args([SCRIPT, "check"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    assert!(
        out.status.success(),
        "this test needs Janus and Meetecho's simple-whip-server, which are not installed.\n\
         Install them (as root or with sudo, with network access) with\n    \
         bash scripts/janus.sh install\n\
         or, with everything else the project needs,\n    \
         bash scripts/setup.sh\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Janus and the WHIP server, running while this lives (`scripts/janus.sh up`, then `down`),
/// with their configuration and logs in a directory of their own.
pub struct Janus {
    state: PathBuf,
    admin: ureq::Agent,
}

impl Janus {
    /// Starts both; Janus forwards the video published at `{ENDPOINT}-rtp` to
    /// 127.0.0.1:`forward_port`.
    pub fn start(forward_port: u16) -> Janus {
        assert_installed();
        let janus = Janus {
            state: std::env::temp_dir().join(format!("customvideo-janus-{}", std::process::id())),
            admin: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into(),
        };
        let out = janus
            .script("up")
            .env("JANUS_FORWARD_PORT", forward_port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains(ENDPOINT),
            "Janus and the WHIP server did not start:\n{text}"
        );
        janus
    }

    fn script(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.args([SCRIPT, command])
            .env("JANUS_STATE_DIR", &self.state)
            .env("WHIP_PORT", WHIP_PORT.to_string())
            .env("JANUS_ADMIN_PORT", ADMIN_PORT.to_string())
            .env("JANUS_ROOM", ROOM.to_string());
        c
    }

    /// The end of Janus's and the WHIP server's logs, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["janus.log", "whip-server.log"] {
            let text = std::fs::read_to_string(self.state.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "--- end of {name}");
            for line in &lines[lines.len().saturating_sub(25)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Sends an Admin API request to `path` (`""`, `/<session>` or `/<session>/<handle>`).
    fn admin(&self, path: &str, mut request: Value) -> Result<Value, String> {
        request["transaction"] = json!("customvideo-test");
        request["admin_secret"] = json!(ADMIN_SECRET);
        let url = format!("http://127.0.0.1:{ADMIN_PORT}/admin{path}");
        let answer: Value = self
            .admin
            .post(&url)
            .header("Content-Type", "application/json")
            .send(request.to_string())
            .and_then(|mut res| res.body_mut().read_to_string())
            .map_err(|e| format!("{url}: {e}"))
            .and_then(|body| serde_json::from_str(&body).map_err(|e| format!("{url}: {e}")))?;
        if answer["janus"] == "error" {
            return Err(format!("{url}: {}", answer["error"]));
        }
        Ok(answer)
    }

    /// The participants of [`ROOM`] (VideoRoom `listparticipants`, through the Admin API).
    pub fn participants(&self) -> Result<Vec<Value>, String> {
        let answer = self.admin(
            "",
            json!({
                "janus": "message_plugin",
                "plugin": "janus.plugin.videoroom",
                "request": {"request": "listparticipants", "room": ROOM},
            }),
        )?;
        Ok(answer["response"]["participants"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Janus's `handle_info` of every VideoRoom publisher handle, with its handle id.
    pub fn publishers(&self) -> Result<Vec<(u64, Value)>, String> {
        let ids = |v: &Value, key: &str| -> Vec<u64> {
            v[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let sessions = self.admin("", json!({"janus": "list_sessions"}))?;
        for session in ids(&sessions, "sessions") {
            // Sessions and handles may end between two requests: those are skipped.
            let Ok(handles) = self.admin(&format!("/{session}"), json!({"janus": "list_handles"}))
            else {
                continue;
            };
            for handle in ids(&handles, "handles") {
                let Ok(mut answer) = self.admin(
                    &format!("/{session}/{handle}"),
                    json!({"janus": "handle_info"}),
                ) else {
                    continue;
                };
                let info = answer["info"].take();
                if info["plugin"] == "janus.plugin.videoroom"
                    && info["plugin_specific"]["type"] == "publisher"
                {
                    out.push((handle, info));
                }
            }
        }
        Ok(out)
    }

    /// Every media stream that VideoRoom publishers send Janus, with Janus's counters.
    pub fn streams(&self) -> Result<Vec<Stream>, String> {
        let mut streams = Vec::new();
        for (handle, info) in self.publishers()? {
            let Some(media) = info["webrtc"]["media"].as_object() else {
                continue;
            };
            for (mid, m) in media {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                streams.push(Stream {
                    handle,
                    mid: mid.clone(),
                    display: text(&info["plugin_specific"]["display"]),
                    kind: text(&m["type"]),
                    codec: text(&m["codecs"]["codec"]),
                    packets: m["stats"]["in"]["packets"].as_u64().unwrap_or(0),
                    bytes: m["stats"]["in"]["bytes"].as_u64().unwrap_or(0),
                    pair: text(&info["webrtc"]["ice"]["selected-pair"]),
                });
            }
        }
        Ok(streams)
    }

    /// The simulcast substreams Janus receives from its VideoRoom publishers (the video
    /// streams with `rid-simulcast` in `handle_info`), with Janus's counters.
    pub fn substreams(&self) -> Result<Vec<Substream>, String> {
        let mut out = Vec::new();
        for (handle, info) in self.publishers()? {
            let Some(media) = info["webrtc"]["media"].as_object() else {
                continue;
            };
            for (mid, m) in media {
                let sim = &m["rid-simulcast"];
                let Some(rids) = sim["rid"].as_array() else {
                    continue;
                };
                let rids: Vec<String> = rids
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                // Substream 0 is Janus's lowest; its counters are the stream's own.
                for index in 0..rids.len() {
                    let (ssrc, stats) = if index == 0 {
                        (&m["ssrc"]["ssrc-peer"], &m["stats"]["in"])
                    } else {
                        (
                            &m["ssrc"][format!("ssrc-peer-sim-{index}")],
                            &m["stats"]["in"][format!("video-simulcast-{index}")],
                        )
                    };
                    out.push(Substream {
                        handle,
                        mid: mid.clone(),
                        index,
                        rids: rids.clone(),
                        rid_order: sim["rid-order"].as_str().unwrap_or_default().to_owned(),
                        ssrc: ssrc.as_u64().map(|s| s as u32),
                        packets: stats["packets"].as_u64().unwrap_or(0),
                        bytes: stats["bytes"].as_u64().unwrap_or(0),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Counts the packets of every simulcast substream over one second: the substreams whose
    /// count grew, and a report of every substream.
    pub fn substreams_flowing(&self) -> (Vec<Substream>, String) {
        let window = Duration::from_secs(1);
        let before = self.substreams();
        std::thread::sleep(window);
        let (before, after) = match (before, self.substreams()) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => return (Vec::new(), format!("Admin API: {e}")),
        };
        let mut flowing = Vec::new();
        let mut report = String::new();
        for s in after {
            let earlier = before
                .iter()
                .find(|b| b.handle == s.handle && b.mid == s.mid && b.index == s.index)
                .map_or(0, |b| b.packets);
            let gained = s.packets.saturating_sub(earlier);
            let _ = writeln!(
                report,
                "publisher handle {} stream {} substream {} of rids {:?} (rid-order {}) ssrc {:?} \
                 packets={} (+{gained} in {window:?}) bytes={}",
                s.handle, s.mid, s.index, s.rids, s.rid_order, s.ssrc, s.packets, s.bytes
            );
            if gained > 0 {
                flowing.push(s);
            }
        }
        if report.is_empty() {
            report = "no VideoRoom publisher with simulcast\n".into();
        }
        (flowing, report)
    }

    /// Counts the packets of every publisher stream over one second: the video streams whose
    /// count grew, and a report of every stream.
    pub fn video_flowing(&self) -> (Vec<Stream>, String) {
        let window = Duration::from_secs(1);
        let before = self.streams();
        std::thread::sleep(window);
        let after = self.streams();
        let (before, after) = match (before, after) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => return (Vec::new(), format!("Admin API: {e}")),
        };
        let mut flowing = Vec::new();
        let mut report = String::new();
        for s in after {
            let earlier = before
                .iter()
                .find(|b| b.handle == s.handle && b.mid == s.mid)
                .map_or(0, |b| b.packets);
            let gained = s.packets.saturating_sub(earlier);
            let _ = writeln!(
                report,
                "publisher handle {} stream {} ({}) display={} codec={} packets={} (+{gained} in \
                 {window:?}) bytes={} pair={}",
                s.handle, s.mid, s.kind, s.display, s.codec, s.packets, s.bytes, s.pair
            );
            if s.kind == "video" && gained > 0 {
                flowing.push(s);
            }
        }
        if report.is_empty() {
            report = "no VideoRoom publisher with media\n".into();
        }
        (flowing, report)
    }

    /// Waits (bounded) until Janus receives video in `codec` from a publisher; returns the
    /// last report, as `Err` when it did not.
    pub fn wait_video(&self, codec: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let (flowing, report) = self.video_flowing();
            if flowing.iter().any(|s| s.codec == codec) {
                return Ok(report);
            }
            if start.elapsed() >= timeout {
                return Err(report);
            }
        }
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.script("down").output();
    }
}

/// One media stream of a VideoRoom publisher, as Janus's Admin API (`handle_info`) reports it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The publisher's handle.
    pub handle: u64,
    pub mid: String,
    /// The publisher's display name (the WHIP endpoint's label).
    pub display: String,
    /// `audio` or `video`.
    pub kind: String,
    pub codec: String,
    /// RTP packets and bytes Janus received.
    pub packets: u64,
    pub bytes: u64,
    /// The selected ICE candidate pair.
    pub pair: String,
}

/// One simulcast substream of a VideoRoom publisher's video, as Janus's Admin API
/// (`handle_info`) reports it.
#[derive(Debug, Clone)]
pub struct Substream {
    /// The publisher's handle.
    pub handle: u64,
    pub mid: String,
    /// Janus's substream index: 0 is what Janus takes for the lowest quality.
    pub index: usize,
    /// The rids of the offer's `a=simulcast`, in its order.
    pub rids: Vec<String>,
    /// How Janus reads that order: `hml` (the first rid is the highest quality, Janus's
    /// default) or `lmh`.
    pub rid_order: String,
    /// The SSRC Janus has seen on this substream.
    pub ssrc: Option<u32>,
    /// RTP packets and bytes Janus received on it.
    pub packets: u64,
    pub bytes: u64,
}
