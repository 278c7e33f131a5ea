// SPDX-License-Identifier: MPL-2.0
//! Debian's headless Chromium driven by chromedriver over the W3C WebDriver protocol, and the
//! pages the tests open in it: the call server's viewer page and a canvas publisher.

use super::wait_for;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Headless Chromium behind chromedriver, over the W3C WebDriver protocol.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The publish token of the tests' servers (`server_on_veth`); the test publishers, the
/// canvas page included, send it to every server.
pub const PUBLISH_TOKEN: &str = "test-publish-token";

impl Browser {
    pub fn start() -> Browser {
        Self::start_with(&[])
    }

    /// Chromium with more command-line switches `extra`.
    pub fn start_with(extra: &[&str]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) is needed: run scripts/setup.sh");
        let base = format!("http://127.0.0.1:{port}");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        assert!(
            wait_for(20 * SEC, || http
                .get(format!("{base}/status"))
                .call()
                .is_ok()),
            "chromedriver did not start"
        );
        let profile = TempDir(std::env::temp_dir().join(format!(
            "customvideo-chromium-{}-{port}",
            std::process::id()
        )));
        let user_data = format!("--user-data-dir={}", profile.0.display());
        let mut args = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-file-access-from-files",
            "--window-size=1280,800",
            &user_data,
        ];
        args.extend_from_slice(extra);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .send(caps.to_string())
            .and_then(|mut r| r.body_mut().read_to_string())
            .map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
            .expect("new WebDriver session");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start: {res}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let res = match method {
            "GET" => self.http.get(url).call(),
            _ => self.http.post(url).send(body.to_string()),
        };
        let text = res
            .and_then(|mut r| r.body_mut().read_to_string())
            .expect("WebDriver answers");
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Runs `script`, which calls `arguments[arguments.length - 1]` with its result.
    pub fn eval_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Evaluates `script` until it returns something other than null/false (bounded).
    pub fn wait(&self, script: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(timeout, || {
            last = self.eval(script);
            !(last.is_null() || last == Value::Bool(false))
        });
        last
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        if let Some(s) = b64.as_str() {
            let _ = std::fs::write(path, base64_decode(s));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Percent-encodes a query parameter value.
fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Browser {
    /// Opens the test page that publishes a canvas of `colour` (`#rrggbb`) to `whip`, with
    /// the bearer token [`PUBLISH_TOKEN`].
    pub fn publish_canvas(&self, whip: &str, colour: &str) {
        let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pages/publish.html");
        self.open(&format!(
            "file://{page}?whip={}&color={}&token={}",
            query_escape(whip),
            query_escape(colour),
            PUBLISH_TOKEN
        ));
    }

    /// The canvas publisher's state: `{status, error, resource}`.
    pub fn publish_state(&self) -> Value {
        self.eval("return window.publishState")
    }

    /// What the viewer page shows of publisher `uid`: `{joins, connected, framesPresented,
    /// maxGapMs, firstFrameAt, colour: [r, g, b]}` (null when it shows no such publisher).
    pub fn viewer_state(&self, uid: &str) -> Value {
        self.eval(&format!(
            "const s = window.viewerState; const p = s && s.publishers[{uid:?}]; \
             if (!p) return null; \
             return {{ joins: s.joins[{uid:?}] || 0, connected: p.connected, \
                      framesPresented: p.framesPresented, maxGapMs: p.maxGapMs, \
                      firstFrameAt: p.firstFrameAt, resumedAt: p.resumedAt, away: p.away, \
                      freezes: p.freezes, \
                      timeline: p.timeline, \
                      colour: window.sampleColor({uid:?}) }};"
        ))
    }

    /// Waits until the viewer page shows `uid` in a colour near `rgb`.
    pub fn wait_viewer_colour(&self, uid: &str, rgb: [i64; 3], timeout: Duration) -> bool {
        wait_for(timeout, || {
            let v = self.viewer_state(uid);
            let c: Vec<i64> = v["colour"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            v["framesPresented"].as_i64().unwrap_or(0) > 3
                && c.len() == 3
                && (0..3).all(|i| (c[i] - rgb[i]).abs() < 70)
        })
    }
}
