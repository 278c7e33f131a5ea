// SPDX-License-Identifier: MPL-2.0
//! The call in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), watches the viewer page and publishes a canvas over WHIP. Every test runs
//! in its own network namespace.

mod common;

use common::{netns, wait_for};
use gst::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Headless Chromium behind chromedriver, over the W3C WebDriver protocol.
struct Browser {
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

impl Browser {
    fn start() -> Browser {
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
        let args = [
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
            &format!("--user-data-dir={}", profile.0.display()),
        ];
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

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
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

    fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Evaluates `script` until it returns something other than null/false (bounded).
    fn wait(&self, script: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(timeout, || {
            last = self.eval(script);
            !(last.is_null() || last == Value::Bool(false))
        });
        last
    }

    fn screenshot(&self, path: &std::path::Path) {
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

fn server() -> CallServer {
    common::init();
    CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("server starts")
}

fn publish(desc: &str) -> gst::Element {
    let p = gst::parse::launch(desc).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    p
}

/// The viewer page's colour for `uid`, once it decodes frames of roughly `want`.
fn viewer_colour(browser: &Browser, uid: &str, want: [i64; 3]) -> Vec<i64> {
    let script = format!(
        "const p = window.viewerState && window.viewerState.publishers['{uid}']; \
         if (!p || p.framesDecoded < 5) return null; \
         const c = window.sampleColor('{uid}'); \
         return c && Math.abs(c[0]-{})<70 && Math.abs(c[1]-{})<70 && Math.abs(c[2]-{})<70 ? c : null;",
        want[0], want[1], want[2]
    );
    let v = browser.wait(&script, 30 * SEC);
    let got = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
        .unwrap_or_default();
    if got.is_empty() {
        let state = browser.eval("return [window.viewerState, document.body.innerText]");
        let sample = browser.eval(&format!("return window.sampleColor('{uid}')"));
        panic!("the viewer page shows no {want:?} for {uid}: {state} sample {sample}");
    }
    got
}

#[test]
fn viewer_shows_vp8_and_h264_callsinks_with_their_colours() {
    if !netns::enter("viewer_shows_vp8_and_h264_callsinks_with_their_colours") {
        return;
    }
    let server = server();
    // optimization-mode=detail: should congestion control find the loaded machine's loopback
    // slow, the tracks lower their frame rate and keep the size checked below.
    let red = publish(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color foreground-color=0xffff0000\" framerate=30/1 width=640 height=360 optimization-mode=detail ! callsink server={} channel=room uid=red codec=vp8",
        server.url()
    ));
    let blue = publish(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color foreground-color=0xff0000ff\" framerate=30/1 width=640 height=360 optimization-mode=detail ! callsink server={} channel=room uid=blue codec=h264",
        server.url()
    ));
    let browser = Browser::start();
    browser.open(&server.viewer_url("room"));
    viewer_colour(&browser, "red", [255, 0, 0]);
    viewer_colour(&browser, "blue", [0, 0, 255]);
    let size = browser.wait(
        "const p = window.viewerState.publishers['blue']; return p && p.width ? [p.width, p.height] : null",
        10 * SEC,
    );
    assert_eq!(size, json!([640, 360]));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer-two-publishers.png");
    browser.screenshot(&shot);
    // A publisher that leaves disappears from the page without a reload.
    red.set_state(gst::State::Null).unwrap();
    let gone = browser.wait(
        "return !window.viewerState.publishers['red'] && !!window.viewerState.publishers['blue']",
        10 * SEC,
    );
    assert_eq!(gone, json!(true));
    blue.set_state(gst::State::Null).unwrap();
}

#[test]
fn browser_publisher_reaches_the_server_and_other_viewers() {
    if !netns::enter("browser_publisher_reaches_the_server_and_other_viewers") {
        return;
    }
    let server = server();
    let browser = Browser::start();
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pages/publish.html");
    browser.open(&format!(
        "file://{page}?whip={}%3Fuid%3Dcanvas&color=%2300ff00",
        server.whip_url("live")
    ));
    let state = browser.wait(
        "return window.publishState.status === 'connected' || window.publishState.status === 'failed' ? window.publishState : null",
        30 * SEC,
    );
    assert_eq!(state["status"], json!("connected"), "{state}");
    assert!(wait_for(20 * SEC, || server
        .channels()
        .iter()
        .flat_map(|c| c.publishers.iter())
        .any(|p| p.uid == "canvas" && p.frames > 10)));
    // Another browser joins the channel's page (opened after the publisher): it sees green.
    let viewer = Browser::start();
    viewer.open(&server.viewer_url("live"));
    viewer_colour(&viewer, "canvas", [0, 255, 0]);
}
