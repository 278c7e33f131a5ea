// SPDX-License-Identifier: MPL-2.0
//! Simulcast (RFC 8853) through the call server: Debian's headless Chromium publishes a
//! 1280x720 canvas in three layers (`sendEncodings` with rids q, h, f: a quarter, half and
//! full size); each viewer (callsrc) gets the layer it asks for (`?quality=`, callsrc's
//! `quality`), and one
//! that changes its mind mid-call (`PUT /resource/{id}/quality`) moves to the new layer. A
//! minute-long call from callsink in three layers keeps each viewer on its layer at the full
//! frame rate and ends with EOS.

mod common;

use common::browser::Browser;
use common::watch::Watch;
use common::{netns, wait_for};
use gstcustomvideo::server::{CallServer, ServerConfig};
use serde_json::json;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// The decoded size callsrc outputs (it keeps the size of the first frame it decoded).
fn size(watch: &Watch) -> Option<(i32, i32)> {
    let seen = watch.seen.lock().unwrap();
    let s = seen.caps.as_ref()?.structure(0)?.to_owned();
    Some((s.get("width").ok()?, s.get("height").ok()?))
}

/// The layer (rid) the server forwards to each subscriber of `uid`, by quality.
fn layers_of_subscribers(server: &CallServer) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = server
        .channels()
        .iter()
        .flat_map(|c| c.subscribers.iter())
        .map(|s| (s.quality.to_owned(), s.layer.clone()))
        .collect();
    v.sort();
    v
}

/// A call server and Chromium publishing a red 1280x720 canvas in three layers into it
/// (channel `live`, uid `canvas`), once the server sees all three with their sizes.
fn simulcast_publisher() -> (CallServer, Browser) {
    common::init();
    let server = CallServer::start(ServerConfig {
        port: 0,
        // The publisher page is opened from a file.
        allow_origins: vec!["file://".into()],
        ..Default::default()
    })
    .expect("server starts");
    let browser = Browser::start();
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pages/publish.html");
    browser.open(&format!(
        "file://{page}?whip={}%3Fuid%3Dcanvas&color=%23ff0000&size=1280x720&simulcast=1",
        server.whip_url("live")
    ));
    let state = browser.wait(
        "return window.publishState.status === 'connected' || window.publishState.status === 'failed' ? window.publishState : null",
        30 * SEC,
    );
    assert_eq!(state["status"], json!("connected"), "{state}");
    // Chromium turns its layers on as its bandwidth estimate grows.
    let mut layers = vec![];
    let all = wait_for(30 * SEC, || {
        layers = common::listed_layers(&server, "canvas");
        layers.len() == 3
    });
    assert!(all, "the server sees layers {layers:?}");
    assert_eq!(
        layers,
        [
            ("q".to_owned(), 320, 180),
            ("h".to_owned(), 640, 360),
            ("f".to_owned(), 1280, 720),
        ]
    );

    (server, browser)
}

#[test]
fn a_chromium_simulcast_publisher_gives_each_viewer_the_layer_it_asks_for() {
    if !netns::enter_alone("a_chromium_simulcast_publisher_gives_each_viewer_the_layer_it_asks_for")
    {
        return;
    }
    let (server, _publisher) = simulcast_publisher();
    // Asked for three ways: callsrc's `quality` with server, channel and uid, callsrc's
    // `quality` on a WHEP URL, and `?quality=` in the WHEP URL.
    let low = Watch::decoded(&format!(
        "server={} channel=live uid=canvas quality=low timeout=20",
        server.url()
    ));
    let medium = Watch::decoded(&format!(
        "whep-url=\"{}\" quality=medium timeout=20",
        server.whep_url("live", "canvas")
    ));
    let high = Watch::decoded(&format!(
        "whep-url=\"{}?quality=high\" timeout=20",
        server.whep_url("live", "canvas")
    ));
    for (w, name, want) in [
        (&low, "low", (320, 180)),
        (&medium, "medium", (640, 360)),
        (&high, "high", (1280, 720)),
    ] {
        assert!(
            w.wait_colour([255, 0, 0], 20 * SEC),
            "{name}: no red frame, error {:?}",
            w.error()
        );
        assert_eq!(size(w), Some(want), "{name}");
    }
    assert_eq!(
        layers_of_subscribers(&server),
        [
            ("high".to_owned(), Some("f".to_owned())),
            ("low".to_owned(), Some("q".to_owned())),
            ("medium".to_owned(), Some("h".to_owned())),
        ]
    );
    // The high viewer changes its mind mid-call: it moves to layer q.
    let id = server
        .channels()
        .iter()
        .flat_map(|c| c.subscribers.iter())
        .find(|s| s.quality == "high")
        .map(|s| s.id.clone())
        .expect("the high viewer");
    let url = format!("{}/resource/{id}/quality", server.url());
    let json = Some("application/json");
    let bad = common::http::request("PUT", &url, json, None, r#"{"quality":"best"}"#);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("high, medium or low"), "{}", bad.body);
    let ok = common::http::request("PUT", &url, json, None, r#"{"quality":"low"}"#);
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert!(
        wait_for(5 * SEC, || layers_of_subscribers(&server)
            == [
                ("low".to_owned(), Some("q".to_owned())),
                ("low".to_owned(), Some("q".to_owned())),
                ("medium".to_owned(), Some("h".to_owned())),
            ]),
        "{:?}",
        layers_of_subscribers(&server)
    );
    // Frames keep coming on every layer.
    let before: Vec<usize> = [&low, &medium, &high].iter().map(|w| w.frames()).collect();
    std::thread::sleep(2 * SEC);
    for (w, b) in [&low, &medium, &high].iter().zip(before) {
        assert!(w.frames() >= b + 30, "{} → {}", b, w.frames());
    }
}

#[test]
fn the_viewer_page_picks_the_layer_by_tile_size_and_offers_the_choice() {
    if !netns::enter_alone("the_viewer_page_picks_the_layer_by_tile_size_and_offers_the_choice") {
        return;
    }
    let (server, _publisher) = simulcast_publisher();
    let viewer = Browser::start();
    viewer.open(&server.viewer_url("live"));
    // One tile in a 1280-pixel wide window is about 400 pixels wide: the 640x360 layer is
    // the smallest that fills it.
    let shows = |quality: &str, width: i64| {
        let script = format!(
            "const s = window.viewerState.publishers.canvas; \
             return s && s.quality === '{quality}' && s.width === {width} ? s : null"
        );
        viewer.wait(&script, 20 * SEC)
    };
    let st = shows("medium", 640);
    assert!(st.is_object(), "{}", viewer.viewer_state("canvas"));
    // The viewer picks low in the tile's menu.
    viewer.eval(
        "const s = document.querySelector('.tile select.quality'); \
         s.value = 'low'; s.dispatchEvent(new Event('change')); return null",
    );
    let st = shows("low", 320);
    assert!(st.is_object(), "{}", viewer.viewer_state("canvas"));
    assert!(viewer.wait_viewer_colour("canvas", [255, 0, 0], 10 * SEC));
}

#[test]
fn a_minute_long_simulcast_call_keeps_every_viewer_on_its_layer_and_ends_with_eos() {
    if !netns::enter_alone(
        "a_minute_long_simulcast_call_keeps_every_viewer_on_its_layer_and_ends_with_eos",
    ) {
        return;
    }
    common::init();
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("server starts");
    // callsink in three layers, moving pictures; callsrc viewers asking low and high.
    let publisher = common::Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=smpte horizontal-speed=4\" \
         framerate=30/1 width=1280 height=720 ! callsink server={} channel=live uid=cam \
         simulcast=three max-bitrate=2500",
        server.url()
    ))
    .play();
    assert!(
        wait_for(30 * SEC, || common::listed_layers(&server, "cam").len()
            == 3),
        "{:?} {:?}",
        server.channels(),
        publisher.error()
    );
    let watch = |quality: &str| {
        Watch::decoded(&format!(
            "whep-url=\"{}\" quality={quality} timeout=20",
            server.whep_url("live", "cam")
        ))
    };
    let (low, high) = (watch("low"), watch("high"));
    assert!(wait_for(20 * SEC, || low.frames() > 0 && high.frames() > 0));
    // A minute (SIMULCAST_CALL_SECS): frames keep coming to both at the publisher's rate,
    // each on its layer all along.
    let secs: u64 = std::env::var("SIMULCAST_CALL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let start = std::time::Instant::now();
    let f0 = [low.frames(), high.frames()];
    let mut slowest = [usize::MAX; 2];
    while start.elapsed() < Duration::from_secs(secs) {
        let before = [low.frames(), high.frames()];
        std::thread::sleep(SEC);
        for (i, w) in [&low, &high].iter().enumerate() {
            slowest[i] = slowest[i].min(w.frames() - before[i]);
        }
        assert_eq!(
            layers_of_subscribers(&server),
            [
                ("high".to_owned(), Some("f".to_owned())),
                ("low".to_owned(), Some("q".to_owned())),
            ],
            "after {:?}",
            start.elapsed()
        );
    }
    for (i, (w, name, want)) in [(&low, "low", (320, 180)), (&high, "high", (1280, 720))]
        .into_iter()
        .enumerate()
    {
        let fps = (w.frames() - f0[i]) as f64 / start.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {fps:.1} fps over {secs} s, slowest second {} frames",
            slowest[i]
        );
        assert!(fps >= 25.0, "{name}: {fps:.1} fps");
        assert!(
            slowest[i] >= 10,
            "{name}: a second with {} frames",
            slowest[i]
        );
        assert_eq!(size(w), Some(want), "{name}");
        assert_eq!(w.error(), None, "{name}");
    }
    // The publisher's input ends: EOS through every layer reaches its bus; the viewers are
    // told the publisher is gone.
    use gst::prelude::*;
    publisher.pipeline.send_event(gst::event::Eos::new());
    assert!(
        wait_for(10 * SEC, || publisher.eos().is_some()),
        "no EOS on the publisher's bus: {:?}",
        publisher.error()
    );
    for w in [&low, &high] {
        assert!(
            wait_for(10 * SEC, || w.state() == "waiting"),
            "{}",
            w.report()
        );
    }
}
