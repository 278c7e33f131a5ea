// SPDX-License-Identifier: MPL-2.0
//! callsink sends simulcast (RFC 8853): `simulcast=three` publishes a 1280x720 input in three
//! layers (a quarter, half and full size, rids q, h, f) on one track into the call server,
//! which gives each viewer the layer it asks for; `simulcast=dual` sends two; a server that
//! does not receive simulcast gets the full layer only, and the application is told.

mod common;

use common::peers::Viewer;
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

fn publish(server: &CallServer, simulcast: &str) -> common::Launched {
    common::init();
    common::Launched::new(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=1280 height=720 ! \
         callsink name=sink server={} channel=live uid=cam simulcast={simulcast}",
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
    if !netns::enter("callsink_sends_three_simulcast_layers_and_each_viewer_gets_its_own") {
        return;
    }
    let server = server();
    let publisher = publish(&server, "three");
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
    if !netns::enter("callsink_dual_stream_sends_two_layers") {
        return;
    }
    let server = server();
    let publisher = publish(&server, "dual");
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
    let low_params = common::Launched::new(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=1280 height=720 ! \
         callsink name=sink server={} channel=live uid=cam simulcast=dual \
         low-width=160 low-height=120 low-framerate=15 low-bitrate=50",
        server.url()
    ))
    .play();
    assert_eq!(
        layers(&server, &low_params, 2),
        [("q".to_owned(), 160, 120), ("f".to_owned(), 1280, 720)]
    );
}

#[test]
fn callsink_simulcast_falls_back_to_one_layer_without_a_simulcast_server() {
    if !netns::enter("callsink_simulcast_falls_back_to_one_layer_without_a_simulcast_server") {
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
