// SPDX-License-Identifier: MPL-2.0
//! Long calls: every kind of publisher we know — callsink, gst-plugins-rs `whipclientsink`,
//! a plain webrtcbin WHIP publisher, Chromium publishing a canvas — in one channel of the
//! call server for over a minute, side by side, each watched by every kind of viewer: the
//! viewer page in Chromium, gst-plugins-rs `whepclientsrc`, a plain webrtcbin WHEP viewer.
//! The publishers stay listed the whole time, callsink never leaves `connected`, no viewer
//! sees a pause over a second, and the pictures are right at the end.
//!
//! `CALLS_SECS` sets the length of the call (default 65 s).

mod common;

use common::browser::Browser;
use common::peers::{Publisher, Viewer};
use common::{Launched, netns, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const CHANNEL: &str = "long";

/// The publishers: uid and colour.
const KINDS: [(&str, [u8; 3]); 4] = [
    ("callsink", [255, 0, 0]),
    ("whipclientsink", [0, 255, 0]),
    ("webrtcbin", [0, 0, 255]),
    ("chromium", [255, 255, 0]),
];

fn argb(rgb: [u8; 3]) -> u32 {
    0xff00_0000 | (rgb[0] as u32) << 16 | (rgb[1] as u32) << 8 | rgb[2] as u32
}

fn near(px: Option<[u8; 4]>, rgb: [u8; 3]) -> bool {
    px.is_some_and(|px| (0..3).all(|i| px[i].abs_diff(rgb[i]) <= 60))
}

#[test]
fn every_publisher_kind_holds_a_long_call_watched_by_every_viewer_kind() {
    if !netns::enter("every_publisher_kind_holds_a_long_call_watched_by_every_viewer_kind") {
        return;
    }
    let secs: u64 = std::env::var("CALLS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(65);
    let server = common::server_on_veth();
    let whip = |uid: &str| format!("{}?uid={uid}", server.whip_url(CHANNEL));

    let callsink = Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color foreground-color={:#010x}\" \
         framerate=30/1 width=320 height=240 ! callsink server={} channel={CHANNEL} uid=callsink \
         token={}",
        argb(KINDS[0].1),
        server.url(),
        common::PUBLISH_TOKEN
    ))
    .play();
    let whipclientsink = Publisher::whipclientsink(&whip("whipclientsink"), argb(KINDS[1].1));
    let webrtcbin = Publisher::webrtcbin(&whip("webrtcbin"), argb(KINDS[2].1))
        .expect("the webrtcbin publisher publishes");
    let chromium = Browser::start();
    chromium.publish_canvas(&whip("chromium"), "#ffff00");

    let listed = |uid: &str| {
        server
            .channels()
            .iter()
            .filter(|c| c.name == CHANNEL)
            .flat_map(|c| c.publishers.iter())
            .any(|p| p.uid == uid && p.frames > 0)
    };
    for (uid, _) in KINDS {
        assert!(
            wait_for(30 * SEC, || listed(uid)),
            "{uid} never published: {:?} (canvas: {})",
            server.channels(),
            chromium.publish_state()
        );
    }

    // Every publisher watched by a whepclientsrc and a webrtcbin viewer, and all of them by
    // the viewer page.
    let mut viewers: Vec<(&str, [u8; 3], Viewer)> = vec![];
    for (uid, rgb) in KINDS {
        let url = server.whep_url(CHANNEL, uid);
        viewers.push((uid, rgb, Viewer::whepclientsrc(&url)));
        viewers.push((
            uid,
            rgb,
            Viewer::webrtcbin(&url).unwrap_or_else(|e| panic!("webrtcbin viewer of {uid}: {e}")),
        ));
    }
    let page = Browser::start();
    page.open(&server.viewer_url(CHANNEL));
    for (uid, rgb, v) in &viewers {
        assert!(
            v.wait_colour(*rgb, 30 * SEC),
            "{} viewer of {uid} sees {:?}, error {:?}",
            v.kind,
            v.log(),
            v.error()
        );
    }
    for (uid, rgb) in KINDS {
        assert!(
            page.wait_viewer_colour(uid, rgb.map(i64::from), 30 * SEC),
            "the viewer page does not show {uid}: {}",
            page.viewer_state(uid)
        );
    }

    // The call: the server lists every publisher at every look.
    let start = Instant::now();
    let mut absent: Vec<(Duration, &str)> = vec![];
    let mut looks = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let channels = server.channels();
        for (uid, _) in KINDS {
            let there = channels
                .iter()
                .flat_map(|c| c.publishers.iter())
                .any(|p| p.uid == uid && p.state == "connected");
            if !there {
                absent.push((start.elapsed(), uid));
            }
        }
        looks += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("call of {secs} s, {looks} looks at the server");
    assert!(
        absent.is_empty(),
        "publishers missing from /api/channels {} times, first: {:?}",
        absent.len(),
        &absent[..absent.len().min(8)]
    );

    // callsink never left `connected`.
    let states: Vec<String> = callsink
        .connection_states()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(states, ["connecting", "connected"], "callsink states");
    assert_eq!(callsink.error(), None);
    // Nor did the other publishers.
    assert_eq!(whipclientsink.error(), None, "whipclientsink");
    assert_eq!(webrtcbin.error(), None, "webrtcbin publisher");
    assert_eq!(webrtcbin.state().as_deref(), Some("connected"));
    assert_eq!(chromium.publish_state()["status"], "connected");

    // No viewer paused for a second; the pictures are right at the end.
    for (uid, rgb, v) in &viewers {
        let log = v.log();
        let watched = log.last.unwrap().duration_since(log.first.unwrap());
        eprintln!(
            "{} viewer of {uid}: {} frames in {:.1} s, longest pause {} ms",
            v.kind,
            log.frames,
            watched.as_secs_f64(),
            log.max_gap.as_millis()
        );
        assert!(
            log.max_gap < SEC,
            "{} viewer of {uid} paused for {:?}",
            v.kind,
            log.max_gap
        );
        assert!(
            log.last.unwrap().elapsed() < SEC,
            "{} viewer of {uid} stopped receiving",
            v.kind
        );
        assert!(
            log.frames as f64 >= 20.0 * watched.as_secs_f64(),
            "{} viewer of {uid}: {} frames in {watched:?}",
            v.kind,
            log.frames
        );
        assert!(
            near(log.centre, *rgb),
            "{} viewer of {uid}: {log:?}",
            v.kind
        );
        assert_eq!(v.error(), None);
    }
    for (uid, rgb) in KINDS {
        let st = page.viewer_state(uid);
        eprintln!("viewer page, {uid}: {st}");
        assert_eq!(
            st["joins"],
            Value::from(1),
            "the page subscribed again to {uid}"
        );
        assert_eq!(st["connected"], Value::Bool(true), "{uid}: {st}");
        assert!(
            st["maxGapMs"].as_f64().unwrap_or(f64::MAX) < 1000.0,
            "the page paused on {uid}: {st}"
        );
        assert!(
            st["framesPresented"].as_f64().unwrap_or(0.0) >= 10.0 * secs as f64,
            "the page presented too few frames of {uid}: {st}"
        );
        let c: Vec<u8> = st["colour"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as u8))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            c.len() == 3 && near(Some([c[0], c[1], c[2], 255]), rgb),
            "the page shows {uid} as {st}"
        );
    }
}
