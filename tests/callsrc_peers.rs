// SPDX-License-Identifier: MPL-2.0
//! callsrc watching publishers this project did not write, and recording what it watches:
//! - gst-plugins-rs `whepserversink`, a WHEP server of its own (callsrc `whep-url=`), VP8 and
//!   H.264, and it sees callsrc leave;
//! - Chromium publishing a canvas into the call server (callsrc `server`/`channel`/`uid`, and
//!   without `uid`);
//! - the recorder lines of the README, run as `gst-launch-1.0 -e` child processes and ended
//!   with Ctrl-C (SIGINT): the Matroska files they write decode to the published colour and
//!   size (H.264 and VP8).
//!
//! Every test runs in its own network namespace.

mod common;

use common::browser::Browser;
use common::callserver::free_port;
use common::watch::Watch;
use common::{Launched, netns, play_file, wait_for};
use gst::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// Whether RGBA `px` is within 60 of `rgb` in each channel.
fn near(px: [u8; 4], rgb: [u8; 3]) -> bool {
    (0..3).all(|i| px[i].abs_diff(rgb[i]) <= 60)
}

// --- gst-plugins-rs whepserversink -----------------------------------------------------------

/// `videotestsrc` of colour `argb` (320x240, 30 fps) served by gst-plugins-rs `whepserversink`
/// at `host_addr` (`http://ip:port`): its WHEP endpoint is `<host_addr>/whep/endpoint`. Also
/// returns its viewers (consumers) as they come and go: +1 added, -1 removed.
fn whepserversink(host_addr: &str, argb: u32, codec: &str) -> (Launched, Arc<Mutex<Vec<i32>>>) {
    common::peers::register_gst_plugins_rs();
    let server = Launched::new(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={argb:#010x} ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         whepserversink name=ws congestion-control=disabled video-caps=video/x-{codec}"
    ));
    let ws = server.pipeline.by_name("ws").unwrap();
    // No STUN server: nothing leaves the machine, and both ends are on the same network.
    ws.set_property("stun-server", None::<String>);
    let signaller = ws.property::<gst::glib::Object>("signaller");
    signaller.set_property("host-addr", host_addr);
    signaller.set_property("stun-server", None::<String>);
    let consumers: Arc<Mutex<Vec<i32>>> = Arc::default();
    for (signal, change) in [("consumer-added", 1), ("consumer-removed", -1)] {
        let c = consumers.clone();
        ws.connect(signal, false, move |_| {
            c.lock().unwrap().push(change);
            None
        });
    }
    (server.play(), consumers)
}

#[test]
fn callsrc_watches_gst_plugins_rs_whepserversink_vp8() {
    if !netns::enter("callsrc_watches_gst_plugins_rs_whepserversink_vp8") {
        return;
    }
    watch_whepserversink("vp8");
}

#[test]
fn callsrc_watches_gst_plugins_rs_whepserversink_h264() {
    if !netns::enter("callsrc_watches_gst_plugins_rs_whepserversink_h264") {
        return;
    }
    watch_whepserversink("h264");
}

fn watch_whepserversink(codec: &str) {
    // On the namespace's veth address: whepserversink's webrtcbin gathers no loopback
    // candidates.
    let port = free_port("10.255.0.1");
    let host = format!("http://10.255.0.1:{port}");
    let (server, consumers) = whepserversink(&host, 0xff00_00ff, codec);
    assert!(
        wait_for(10 * SEC, || std::net::TcpStream::connect((
            "10.255.0.1",
            port
        ))
        .is_ok()),
        "whepserversink does not listen on {host}: {:?}",
        server.error()
    );

    let watch = Watch::decoded(&format!("whep-url={host}/whep/endpoint timeout=20"));
    assert!(
        watch.wait_colour([0, 0, 255], 30 * SEC),
        "{codec}: no blue frame from whepserversink: {}; server error {:?}",
        watch.report(),
        server.error()
    );
    assert_eq!(watch.size(), Some((320, 240)), "decoded size");
    let stats = watch.stats();
    assert_eq!(
        stats.get::<String>("connection-state").unwrap(),
        "connected",
        "{stats}"
    );
    assert_eq!(
        stats.get::<String>("codec").unwrap(),
        codec.to_uppercase(),
        "{stats}"
    );
    assert_eq!(
        (
            stats.get::<i32>("width").unwrap(),
            stats.get::<i32>("height").unwrap()
        ),
        (320, 240),
        "{stats}"
    );
    // Frames keep coming.
    let before = watch.seen.lock().unwrap().frames;
    std::thread::sleep(2 * SEC);
    let after = watch.seen.lock().unwrap().frames;
    assert!(after >= before + 30, "{before} -> {after} frames in 2 s");
    assert_eq!(watch.error(), None);
    assert_eq!(*consumers.lock().unwrap(), [1], "whepserversink's viewers");

    // callsrc leaves (DELETE of the resource whepserversink named, /whep/resource/<id>): the
    // server ends that session. Then the server stops.
    drop(watch);
    assert!(
        wait_for(3 * SEC, || *consumers.lock().unwrap() == [1, -1]),
        "whepserversink still has callsrc as a viewer: {:?}",
        consumers.lock().unwrap()
    );
    std::thread::sleep(SEC / 2);
    assert_eq!(server.error(), None);
    drop(server);
}

// --- Chromium canvas publisher ---------------------------------------------------------------

#[test]
fn callsrc_watches_a_chromium_canvas_published_into_the_call_server() {
    if !netns::enter("callsrc_watches_a_chromium_canvas_published_into_the_call_server") {
        return;
    }
    let server = common::server_on_veth();
    let chromium = Browser::start();
    chromium.publish_canvas(
        &format!("{}?uid=canvas", server.whip_url("browser")),
        "#ff00ff",
    );
    let published = wait_for(30 * SEC, || {
        server
            .channels()
            .iter()
            .flat_map(|c| c.publishers.iter())
            .any(|p| p.uid == "canvas" && p.frames > 0)
    });
    assert!(
        published,
        "Chromium did not publish: {} {:?}",
        chromium.publish_state(),
        server.channels()
    );

    // By uid, and without a uid (the first publisher of the channel), side by side.
    let by_uid = Watch::decoded(&format!(
        "server={} channel=browser uid=canvas",
        server.url()
    ));
    let first = Watch::decoded(&format!("server={} channel=browser", server.url()));
    for (what, watch) in [("uid=canvas", &by_uid), ("no uid", &first)] {
        assert!(
            watch.wait_colour([255, 0, 255], 30 * SEC),
            "{what}: no magenta frame from the canvas: {}; canvas {}",
            watch.report(),
            chromium.publish_state()
        );
        let stats = watch.stats();
        assert_eq!(
            stats.get::<String>("publisher-uid").unwrap(),
            "canvas",
            "{what}: {stats}"
        );
        assert_eq!(
            stats.get::<String>("connection-state").unwrap(),
            "connected",
            "{what}: {stats}"
        );
        // The canvas is 320x240; Chromium may send it smaller when it thinks the link or
        // the CPU is short, but never another shape.
        let (w, h) = watch.size().unwrap();
        assert!(w <= 320 && w * 3 == h * 4, "{what}: decoded {w}x{h}");
    }
    let subscribers: usize = server.channels().iter().map(|c| c.subscribers.len()).sum();
    assert_eq!(subscribers, 2, "{:?}", server.channels());
    drop((by_uid, first));
    assert!(
        wait_for(3 * SEC, || server
            .channels()
            .iter()
            .all(|c| c.subscribers.is_empty())),
        "subscriptions outlived callsrc: {:?}",
        server.channels()
    );
}

// --- Recorder lines --------------------------------------------------------------------------

/// A callsink publisher of colour `argb`, 320x240 at 30 fps, in channel `rec` as `cam`. It
/// keeps its size when its bandwidth estimate dips (`optimization-mode=detail`: the frame rate
/// gives way instead), so that the recording has one size to check.
fn publish(server: &CallServer, argb: u32, codec: &str) -> Launched {
    Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
         foreground-color={argb:#010x}\" framerate=30/1 width=320 height=240 \
         optimization-mode=detail ! callsink \
         server={} channel=rec uid=cam codec={codec}",
        server.url()
    ))
    .play()
}

/// What a recorded file decodes to.
#[derive(Debug, Default)]
struct Decoded {
    frames: usize,
    width: u32,
    height: u32,
    /// Frames whose centre is near the published colour.
    right_colour: usize,
    /// Timestamps of the first and the last frame.
    first_pts: Option<gst::ClockTime>,
    last_pts: Option<gst::ClockTime>,
    error: Option<String>,
}

/// `filesrc ! matroskademux ! <decoder> ! videoconvert ! RGBA appsink`, as fast as it goes.
fn decode_file(path: &Path, decoder: &str, rgb: [u8; 3]) -> Decoded {
    let (pipeline, sink) = play_file(
        path,
        &format!("{decoder} ! videoconvert ! video/x-raw,format=RGBA"),
    );
    let mut d = Decoded::default();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let (w, h) = (info.width() as usize, info.height() as usize);
        let o = (h / 2) * info.stride()[0] as usize + (w / 2) * 4;
        (d.width, d.height) = (w as u32, h as u32);
        d.frames += 1;
        let pts = sample.buffer().unwrap().pts();
        d.first_pts = d.first_pts.or(pts);
        d.last_pts = pts.or(d.last_pts);
        if near(map[o..o + 4].try_into().unwrap(), rgb) {
            d.right_colour += 1;
        }
    }
    d.error = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
            _ => None,
        });
    pipeline.set_state(gst::State::Null).unwrap();
    d
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("customvideo-rec-{}-{name}", std::process::id()))
}

/// Runs the README's recorder line `gst-launch-1.0 -e callsrc … decode=false ! TAIL
/// filesink location=FILE` for `secs` seconds against a callsink publisher of `codec`, ends it
/// with Ctrl-C (SIGINT), and checks that it exits 0 and that the file decodes (with
/// `decoder`) to the published colour and size.
fn record(codec: &str, tail: &str, decoder: &str) {
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server starts");
    let green = [0, 255, 0];
    let publisher = publish(&server, 0xff00_ff00, codec);
    assert!(
        publisher.wait_state("connected", 20 * SEC).is_some(),
        "the publisher did not connect: {:?}",
        publisher.error()
    );
    let file = tmp(&format!("{codec}.mkv"));
    let _ = std::fs::remove_file(&file);
    let line = format!(
        "callsrc server={} channel=rec uid=cam decode=false ! {tail} ! filesink location={}",
        server.url(),
        file.display()
    );
    let mut args = vec!["-e".to_owned()];
    args.extend(line.split_whitespace().map(str::to_owned));
    let launched = Instant::now();
    let child = Command::new("gst-launch-1.0")
        .args(&args)
        .env("GST_PLUGIN_PATH", common::build::plugin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 runs (gstreamer1.0-tools)");
    // Recording: the file grows (a solid colour is a few hundred bytes a frame), for 4 s.
    let grew = wait_for(30 * SEC, || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 2_000)
    });
    std::thread::sleep(4 * SEC);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let asked = Instant::now();
    let out = child.wait_with_output().expect("gst-launch-1.0 ends");
    let took = asked.elapsed();
    let ran = launched.elapsed();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        grew,
        "{codec}: the file did not grow: gst-launch-1.0 {line}\n{log}"
    );
    assert!(
        out.status.success(),
        "{codec}: gst-launch-1.0 -e {line} ended with {}:\n{log}",
        out.status
    );
    assert!(log.contains("EOS"), "{codec}: no EOS on Ctrl-C:\n{log}");
    assert!(took < 5 * SEC, "{codec}: it took {took:?} to end on Ctrl-C");

    let d = decode_file(&file, decoder, green);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    eprintln!("{codec}: {size} bytes, {d:?}");
    assert_eq!(d.error, None, "{codec}: decoding the file");
    assert_eq!((d.width, d.height), (320, 240), "{codec}: {d:?}");
    // The timestamps play it in real time: the file lasts the 4 s and more it recorded, and
    // not longer than gst-launch-1.0 ran.
    let span = (d.last_pts.unwrap() - d.first_pts.unwrap()).seconds_f64();
    assert!(
        span >= 3.5 && span <= ran.as_secs_f64(),
        "{codec}: the file lasts {span:.1} s, gst-launch-1.0 ran {ran:?}: {d:?}"
    );
    // 30 fps published; under a dip of the bandwidth estimate the publisher may halve it.
    let fps = (d.frames - 1) as f64 / span;
    assert!(fps >= 12.0, "{codec}: {fps:.1} fps in the file: {d:?}");
    assert!(
        d.right_colour * 10 >= d.frames * 9,
        "{codec}: frames not green: {d:?}"
    );
    assert_eq!(publisher.error(), None);
}

#[test]
fn recorder_line_writes_h264_matroska_that_decodes_to_the_published_colour() {
    if !netns::enter("recorder_line_writes_h264_matroska_that_decodes_to_the_published_colour") {
        return;
    }
    record("h264", "h264parse ! matroskamux", "h264parse ! avdec_h264");
}

#[test]
fn recorder_line_writes_vp8_matroska_that_decodes_to_the_published_colour() {
    if !netns::enter("recorder_line_writes_vp8_matroska_that_decodes_to_the_published_colour") {
        return;
    }
    record("vp8", "matroskamux", "vp8dec");
}
