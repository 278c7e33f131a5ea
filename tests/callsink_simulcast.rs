// SPDX-License-Identifier: MPL-2.0
//! callsink sends simulcast (RFC 8853): `simulcast=three` publishes a 1280x720 input in three
//! layers (a quarter, half and full size, rids q, h, f) on one track into the call server,
//! which gives each viewer the layer it asks for; `simulcast=dual` sends two; a server that
//! does not receive simulcast gets the full layer only, and the application is told.

mod common;

use common::browser::Browser;
use common::peers::Viewer;
use common::shape::SlowLinks;
use common::watch::Watch;
use common::{netns, wait_for};
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const RED: &str = "videotestsrc is-live=true pattern=solid-color foreground-color=0xffff0000";

fn server() -> CallServer {
    CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("server starts")
}

/// Moving pictures: an encoder's bitrate follows its target.
const MOVING: &str = "videotestsrc is-live=true pattern=smpte horizontal-speed=4";

/// Publishes `producer` at 1280x720@30 as `cam` in channel `live` with callsink `props`.
fn publish(server: &CallServer, producer: &str, props: &str) -> common::Launched {
    common::init();
    common::Launched::new(&format!(
        "customvideosrc producer=\"{producer}\" framerate=30/1 width=1280 height=720 ! \
         callsink name=sink server={} channel=live uid=cam {props}",
        server.url()
    ))
    .play()
}

/// The layers (rid, width, height) the server sees of publisher `cam`, once there are `n`
/// with a known size (within 30 s).
fn layers(server: &CallServer, publisher: &common::Launched, n: usize) -> Vec<(String, u32, u32)> {
    let mut layers = vec![];
    let all = wait_for(30 * SEC, || {
        layers = common::listed_layers(server, "cam");
        layers.len() == n
    });
    assert!(
        all,
        "the server sees layers {layers:?} of {:?}; callsink error {:?}",
        server.channels(),
        publisher.error()
    );
    layers
}

fn size(watch: &Watch) -> Option<(i32, i32)> {
    let seen = watch.seen.lock().unwrap();
    let s = seen.caps.as_ref()?.structure(0)?.to_owned();
    Some((s.get("width").ok()?, s.get("height").ok()?))
}

#[test]
fn callsink_sends_three_simulcast_layers_and_each_viewer_gets_its_own() {
    if !netns::enter_alone("callsink_sends_three_simulcast_layers_and_each_viewer_gets_its_own") {
        return;
    }
    let server = server();
    let publisher = publish(&server, RED, "simulcast=three");
    let layers = layers(&server, &publisher, 3);
    assert_eq!(
        layers,
        [
            ("q".to_owned(), 320, 180),
            ("h".to_owned(), 640, 360),
            ("f".to_owned(), 1280, 720),
        ]
    );
    let watch = |quality: &str| {
        Watch::decoded(&format!(
            "whep-url=\"{}?quality={quality}\" timeout=20",
            server.whep_url("live", "cam")
        ))
    };
    let (low, high) = (watch("low"), watch("high"));
    for (w, name, want) in [(&low, "low", (320, 180)), (&high, "high", (1280, 720))] {
        assert!(
            w.wait_colour([255, 0, 0], 20 * SEC),
            "{name}: no red frame, error {:?}",
            w.error()
        );
        assert_eq!(size(w), Some(want), "{name}");
    }
    // Frames keep coming on both.
    let before: Vec<usize> = [&low, &high].iter().map(|w| w.frames()).collect();
    std::thread::sleep(2 * SEC);
    for (w, b) in [&low, &high].iter().zip(before) {
        assert!(w.frames() >= b + 30, "{} → {}", b, w.frames());
    }
    use gst::prelude::*;
    let sink = publisher.pipeline.by_name("sink").unwrap();
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u32>("simulcast-layers").unwrap(), 3, "{stats}");
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
    assert!(
        publisher
            .element_message("callsink-simulcast-fallback")
            .is_none()
    );
}

#[test]
fn callsink_dual_stream_sends_two_layers() {
    if !netns::enter_alone("callsink_dual_stream_sends_two_layers") {
        return;
    }
    let server = server();
    let publisher = publish(&server, RED, "simulcast=dual");
    assert_eq!(
        layers(&server, &publisher, 2),
        [("q".to_owned(), 320, 180), ("f".to_owned(), 1280, 720)]
    );
    let low = Watch::decoded(&format!(
        "whep-url=\"{}?quality=low\" timeout=20",
        server.whep_url("live", "cam")
    ));
    assert!(
        low.wait_colour([255, 0, 0], 20 * SEC),
        "no red frame, error {:?}",
        low.error()
    );
    assert_eq!(size(&low), Some((320, 180)));
    drop(low);
    drop(publisher);
    // Agora's dual stream default: a 160x120 low layer at 15 fps and 50 kbit/s.
    let low_params = publish(
        &server,
        RED,
        "simulcast=dual low-width=160 low-height=120 low-framerate=15 low-bitrate=50",
    );
    assert_eq!(
        layers(&server, &low_params, 2),
        [("q".to_owned(), 160, 120), ("f".to_owned(), 1280, 720)]
    );
}

#[test]
fn callsink_simulcast_falls_back_to_one_layer_without_a_simulcast_server() {
    if !netns::enter_alone("callsink_simulcast_falls_back_to_one_layer_without_a_simulcast_server")
    {
        return;
    }
    common::init();
    // gst-plugins-rs whipserversrc (webrtcbin 1.22 answering) receives no simulcast.
    let (server, endpoint) = Viewer::whipserversrc_on_veth();
    let publisher = common::Launched::new(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=320 height=240 ! \
         callsink name=sink whip-url={endpoint} codec=vp8 simulcast=three"
    ))
    .play();
    assert!(
        server.wait_colour([255, 0, 0], 20 * SEC),
        "whipserversrc decoded no red frame from callsink: {:?} {:?}",
        server.log(),
        server.error()
    );
    let fallback = publisher
        .element_message("callsink-simulcast-fallback")
        .expect("a callsink-simulcast-fallback message");
    assert_eq!(fallback.get::<u32>("layers").unwrap(), 1);
    assert!(
        fallback
            .get::<String>("reason")
            .unwrap()
            .contains("a=simulcast:recv"),
        "{fallback}"
    );
    use gst::prelude::*;
    let sink = publisher.pipeline.by_name("sink").unwrap();
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u32>("simulcast-layers").unwrap(), 1, "{stats}");
    drop(publisher);
    std::thread::sleep(SEC);
    drop(server);
}

/// The UDP ports of the process that has UDP port `port` open (a browser's network
/// process: its ICE candidates).
fn ports_of_owner(port: u16) -> Vec<u16> {
    let out = std::process::Command::new("ss")
        .args(["-uanpH"])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // "UNCONN 0 0 10.255.0.1:42946 0.0.0.0:* users:(("chromium",pid=29776,fd=29))"
    let parse = |line: &str| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let port = cols.get(3)?.rsplit(':').next()?.parse::<u16>().ok()?;
        let pid = line.split("pid=").nth(1)?.split(',').next()?.to_owned();
        Some((port, pid))
    };
    let sockets: Vec<(u16, String)> = text.lines().filter_map(parse).collect();
    let owner = sockets
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, pid)| pid.clone())
        .unwrap_or_else(|| panic!("no process has UDP port {port} open: {text}"));
    sockets
        .into_iter()
        .filter(|(_, pid)| *pid == owner)
        .map(|(p, _)| p)
        .collect()
}

/// What the viewer page shows of `cam`: decoded size, frames, freezes, the local end of its
/// connection, the longest pause between frames.
fn shown(viewer: &Browser) -> serde_json::Value {
    viewer.eval(
        "const s = window.viewerState.publishers.cam; \
         return s ? { width: s.width, framesDecoded: s.framesDecoded, \
                      framesPresented: s.framesPresented, freezes: s.freezes, \
                      maxGapMs: s.maxGapMs, local: s.local || null } : null",
    )
}

/// The server's view of each subscriber: (layer, ceiling, estimate), ordered by estimate.
fn subscribers(server: &CallServer) -> Vec<(Option<String>, Option<String>, Option<u64>)> {
    server
        .channels()
        .iter()
        .flat_map(|c| c.subscribers.iter())
        .map(|s| (s.layer.clone(), s.ceiling.clone(), s.estimate))
        .collect()
}

/// Frames `viewer` decoded over `secs` seconds, and the longest pause between frames it
/// showed meanwhile (ms).
fn watch_for(viewer: &Browser, secs: u32) -> (i64, f64) {
    viewer.eval("window.viewerState.publishers.cam.maxGapMs = 0; return null");
    let before = shown(viewer)["framesDecoded"].as_i64().unwrap();
    std::thread::sleep(secs * SEC);
    let after = shown(viewer);
    (
        after["framesDecoded"].as_i64().unwrap() - before,
        after["maxGapMs"].as_f64().unwrap(),
    )
}

/// Waits until `viewer` shows frames `width` pixels wide; prints what the server does
/// meanwhile.
fn wait_width(server: &CallServer, viewer: &Browser, width: i64, timeout: Duration) -> bool {
    wait_for(timeout, || shown(viewer)["width"] == width)
        || panic!(
            "the viewer shows {} rather than {width} pixels wide; subscribers {:?}",
            shown(viewer),
            subscribers(server)
        )
}

#[test]
fn a_viewer_behind_a_slow_link_gets_a_smaller_layer_and_the_others_keep_the_top_one() {
    if !netns::enter_alone(
        "a_viewer_behind_a_slow_link_gets_a_smaller_layer_and_the_others_keep_the_top_one",
    ) {
        return;
    }
    let server = server();
    // Layers of about 0.3, 0.75 and 2 Mbit/s.
    let publisher = publish(&server, MOVING, "simulcast=three max-bitrate=3000");
    layers(&server, &publisher, 3);
    // Two Chromium viewers (the server's viewer page), both choosing the top layer.
    let choose = |b: &Browser, quality: &str| {
        b.wait(
            &format!(
                "const s = document.querySelector('.tile select.quality'); \
                 if (!s || s.hidden) return null; \
                 s.value = '{quality}'; s.dispatchEvent(new Event('change')); return true"
            ),
            20 * SEC,
        );
    };
    let open = || {
        let b = Browser::start();
        b.open(&server.viewer_url("live"));
        choose(&b, "high");
        b
    };
    let (fast, slow) = (open(), open());
    for v in [&fast, &slow] {
        wait_width(&server, v, 1280, 30 * SEC);
    }
    // A layer switch asked for shows no pause beyond a frame or two: down to the smallest
    // layer and back, each at a keyframe of the new layer.
    fast.eval("window.viewerState.publishers.cam.maxGapMs = 0; return null");
    choose(&fast, "low");
    wait_width(&server, &fast, 320, 10 * SEC);
    choose(&fast, "high");
    wait_width(&server, &fast, 1280, 10 * SEC);
    let gap = shown(&fast)["maxGapMs"].as_f64().unwrap();
    eprintln!("longest pause over two switches: {gap:.0} ms");
    assert!(gap < 150.0, "a switch paused the picture {gap} ms");

    // The slow viewer's link carries 600 kbit/s from now on (its browser's UDP ports).
    let local = shown(&slow)["local"].as_str().unwrap().to_owned();
    let port: u16 = local.rsplit(':').next().unwrap().parse().unwrap();
    let mut links = SlowLinks::new().unwrap();
    links
        .limit(&ports_of_owner(port), 600, Duration::from_millis(200))
        .unwrap();
    let t0 = std::time::Instant::now();
    let settled = wait_for(30 * SEC, || {
        let w = shown(&slow)["width"].as_i64().unwrap_or(0);
        w > 0 && w < 1280
    });
    assert!(settled, "{} {:?}", shown(&slow), subscribers(&server));
    eprintln!(
        "the slow viewer shows {} pixels wide after {:?}",
        shown(&slow)["width"],
        t0.elapsed()
    );
    // Settled: over the next 10 s the slow viewer gets a smaller layer without freezing,
    // the fast one keeps the top layer at its full frame rate.
    std::thread::sleep(3 * SEC);
    let fast_viewer = std::thread::scope(|s| {
        let f = s.spawn(|| watch_for(&fast, 10));
        let (frames, gap) = watch_for(&slow, 10);
        eprintln!("slow viewer: {frames} frames in 10 s, longest pause {gap:.0} ms");
        assert!(frames >= 250, "{frames} frames in 10 s: {}", shown(&slow));
        assert!(
            gap < 500.0,
            "the slow viewer froze {gap} ms: {}",
            shown(&slow)
        );
        assert!(shown(&slow)["width"].as_i64().unwrap() < 1280);
        f.join().unwrap()
    });
    eprintln!("fast viewer: {fast_viewer:?}");
    assert!(fast_viewer.0 >= 270, "{fast_viewer:?} {}", shown(&fast));
    assert!(fast_viewer.1 < 200.0, "{fast_viewer:?} {}", shown(&fast));
    assert_eq!(shown(&fast)["width"], 1280);
    let subs = subscribers(&server);
    assert_eq!(subs.iter().filter(|s| s.1.is_none()).count(), 1, "{subs:?}");
    assert!(
        subs.iter().any(|s| s.1.is_some() && s.0 == s.1),
        "the slow viewer gets the layer its link carries: {subs:?}"
    );

    // The link is fast again: the slow viewer climbs back to the top layer.
    drop(links);
    let t1 = std::time::Instant::now();
    wait_width(&server, &slow, 1280, 90 * SEC);
    eprintln!("back to 1280 pixels after {:?}", t1.elapsed());
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
}

/// Each layer's `frames` as the call server counts them, by rid.
fn server_frames(server: &CallServer) -> Vec<(String, u64)> {
    server
        .channels()
        .iter()
        .flat_map(|c| c.publishers.iter())
        .filter(|p| p.uid == "cam")
        .flat_map(|p| p.layers.iter())
        .map(|l| (l.rid.clone(), l.frames))
        .collect()
}

#[test]
fn callsink_stats_count_each_simulcast_layer() {
    if !netns::enter_alone("callsink_stats_count_each_simulcast_layer") {
        return;
    }
    let server = server();
    let publisher = publish(&server, MOVING, "simulcast=three");
    layers(&server, &publisher, 3);
    std::thread::sleep(4 * SEC);
    use gst::prelude::*;
    let sink = publisher.pipeline.by_name("sink").unwrap();
    // The server first: every frame it counted left callsink before.
    let received = server_frames(&server);
    let stats = sink.property::<gst::Structure>("stats");
    eprintln!("{stats}");
    let list = stats
        .get::<gst::List>("layers")
        .unwrap_or_else(|e| panic!("no layers ({e}): {stats}"));
    let layers: Vec<gst::Structure> = list.iter().map(|v| v.get().unwrap()).collect();
    let rids: Vec<&str> = layers.iter().map(|l| l.get("rid").unwrap()).collect();
    assert_eq!(rids, ["q", "h", "f"], "{stats}");
    let mut bitrates = vec![];
    for (l, want) in layers.iter().zip([(320, 180), (640, 360), (1280, 720)]) {
        let rid = l.get::<&str>("rid").unwrap();
        let size = (
            l.get::<i32>("width").unwrap(),
            l.get::<i32>("height").unwrap(),
        );
        assert_eq!(size, want, "{l}");
        let fps = l.get::<f64>("fps").unwrap();
        let bitrate = l.get::<u64>("bitrate").unwrap();
        let frames = l.get::<u64>("frames-sent").unwrap();
        assert!(fps >= 20.0, "{l}");
        assert!(bitrate > 0 && frames > 0, "{l}");
        assert!(l.get::<u64>("target-bitrate").unwrap() > 0, "{l}");
        assert!(l.get::<bool>("active").unwrap(), "{l}");
        bitrates.push(bitrate);
        // What the server received of this layer, counted just before.
        let got = received
            .iter()
            .find(|(r, _)| r == rid)
            .map(|(_, f)| *f)
            .unwrap_or_else(|| panic!("the server lists no layer {rid}: {received:?}"));
        eprintln!("layer {rid}: {fps} fps, {bitrate} bit/s, {frames} frames sent, {got} received");
        assert!(
            got <= frames + 5 && got as f64 >= frames as f64 * 0.8,
            "layer {rid}: callsink sent {frames} frames, the server got {got}"
        );
    }
    assert!(
        bitrates.windows(2).all(|w| w[0] < w[1]),
        "layer bitrates {bitrates:?}"
    );
    let sum: u64 = bitrates.iter().sum();
    let total = stats.get::<u64>("bitrate").unwrap();
    assert!(
        total as f64 >= sum as f64 * 0.8 && total as f64 <= sum as f64 * 1.2,
        "callsink sends {total} bit/s, its layers {bitrates:?}"
    );
    // The top-level frame counts are the top layer's.
    let top = &layers[2];
    assert_eq!(
        stats.get::<u64>("frames-sent").unwrap(),
        top.get::<u64>("frames-sent").unwrap(),
        "{stats}"
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
}
