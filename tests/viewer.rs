// SPDX-License-Identifier: MPL-2.0
//! The call in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), watches the viewer page and publishes a canvas over WHIP. Every test runs
//! in its own network namespace.

mod common;

use common::browser::Browser;
use common::{netns, wait_for};
use gst::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use serde_json::{Value, json};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// How long the server keeps the subscribers of a publisher that left.
const GRACE: Duration = Duration::from_secs(3);

fn server() -> CallServer {
    common::init();
    CallServer::start(ServerConfig {
        port: 0,
        rejoin_grace: GRACE,
        // The test publisher page is opened from a file.
        allow_origins: vec!["file://".into()],
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
    // A publisher that leaves is shown as away, its tile kept while the server keeps the
    // subscription waiting for it (the rejoin grace), then removed; all without a reload.
    red.set_state(gst::State::Null).unwrap();
    let away = browser.wait(
        "const p = window.viewerState.publishers; return p['red'] && p['red'].away && p['blue'] && !p['blue'].away",
        2 * SEC,
    );
    assert_eq!(
        away,
        json!(true),
        "{}",
        browser.eval("return window.viewerState")
    );
    let gone = browser.wait(
        "return !window.viewerState.publishers['red'] && !!window.viewerState.publishers['blue']",
        GRACE + 3 * SEC,
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

#[test]
fn the_viewer_page_asks_for_the_view_token_or_takes_it_from_the_url() {
    if !netns::enter("the_viewer_page_asks_for_the_view_token_or_takes_it_from_the_url") {
        return;
    }
    common::init();
    let server = CallServer::start(ServerConfig {
        port: 0,
        view_token: Some("look".into()),
        ..Default::default()
    })
    .expect("server starts");
    let _green = publish(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color foreground-color=0xff00ff00\" framerate=30/1 width=320 height=240 ! callsink server={} channel=room uid=green",
        server.url()
    ));
    // From the URL fragment, which is then taken out of the address bar.
    let browser = Browser::start();
    browser.open(&format!("{}#token=look", server.viewer_url("room")));
    viewer_colour(&browser, "green", [0, 255, 0]);
    assert_eq!(browser.eval("return location.hash"), json!(""));

    // Without it the page asks; a wrong token is asked for again.
    let asking = Browser::start();
    asking.open(&server.viewer_url("room"));
    let type_token = |token: &str| {
        let form = asking.wait(
            "const f = document.querySelector('form#token'); return f ? f.innerText : null",
            10 * SEC,
        );
        assert!(
            form.as_str().is_some_and(|t| t.contains("View token")),
            "{form}"
        );
        asking.eval(&format!(
            "const f = document.querySelector('form#token'); \
             f.querySelector('input').value = '{token}'; f.requestSubmit(); return true"
        ));
    };
    type_token("wrong");
    let reason = asking.wait(
        "const f = document.querySelector('form#token'); return f ? f.innerText : null",
        10 * SEC,
    );
    assert!(
        reason.as_str().is_some_and(|t| t.contains("not valid")),
        "the page says why: {reason}"
    );
    assert_eq!(
        asking.eval("return Object.keys(window.viewerState.publishers).length"),
        json!(0)
    );
    type_token("look");
    viewer_colour(&asking, "green", [0, 255, 0]);
}
