// SPDX-License-Identifier: MPL-2.0
//! callsrc watching a call: callsink publishes into the call server, callsrc subscribes over
//! WHEP and the frames it outputs have the colour that was published (VP8, VP9, H.264, AV1)
//! with statistics that count them, the encoded stream comes out with its caps when
//! `decode=false`, the first publisher is found without a uid, a publisher that comes after
//! callsrc started is waited for, and a publisher that never comes is an error that names it;
//! a publisher that leaves is stood in for (its last frame, or black) and followed when it
//! comes back or, without a uid, when the next one publishes, without EOS, with bus messages
//! saying so; `on-publisher-gone=eos` ends the stream; EOS sent to the pipeline reaches the
//! bus; a minute of watching, then 20 start/stop cycles with threads and files flat. Every
//! test runs in its own network namespace.

mod common;

use common::callserver::{ServerProcess, free_port};
use common::watch::Watch;
use common::{Launched, init, netns, wait_for};
use gst::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn server() -> CallServer {
    init();
    CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server starts")
}

fn publish(server: &CallServer, uid: &str, codec: &str) -> Launched {
    publish_colour(server, uid, codec, 0xffff0000, (320, 240))
}

/// A publisher of one colour (ARGB) and size.
fn publish_colour(
    server: &CallServer,
    uid: &str,
    codec: &str,
    argb: u32,
    (width, height): (u32, u32),
) -> Launched {
    Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
         foreground-color={argb:#x}\" framerate=30/1 width={width} height={height} ! callsink \
         server={} channel=room uid={uid} codec={codec}",
        server.url()
    ))
    .play()
}

fn watch_codec(codec: &str) {
    let server = server();
    let _publisher = publish(&server, "cam", codec);
    let watch = Watch::decoded(&format!("server={} channel=room uid=cam", server.url()));
    watch.assert_red();
    // Rates are over the last second, RTP statistics read every second.
    std::thread::sleep(2 * SEC);
    let stats = watch.stats();
    assert_eq!(
        stats.get::<String>("connection-state").unwrap(),
        "connected"
    );
    assert_eq!(stats.get::<String>("codec").unwrap(), codec.to_uppercase());
    assert_eq!(stats.get::<String>("publisher-uid").unwrap(), "cam");
    assert_eq!(
        (
            stats.get::<i32>("width").unwrap(),
            stats.get::<i32>("height").unwrap()
        ),
        (320, 240)
    );
    // What a call's statistics show, counted.
    eprintln!("{codec}: {stats}");
    assert!(stats.get::<u64>("frames-received").unwrap() > 0);
    assert!(stats.get::<u64>("frames-decoded").unwrap() > 0);
    assert!(stats.get::<u64>("packets-received").unwrap() > 0, "{stats}");
    assert!(
        stats.get::<u64>("bytes-received").unwrap() > 1000,
        "{stats}"
    );
    assert!(stats.get::<u64>("bitrate").unwrap() > 10_000, "{stats}");
    assert!(stats.get::<f64>("fps").unwrap() >= 20.0, "{stats}");
    let delay = stats.get::<f64>("decode-delay-ms").unwrap();
    assert!((0.0..100.0).contains(&delay), "{stats}");
    assert_eq!(stats.get::<u64>("frames-filled").unwrap(), 0, "{stats}");
    assert_eq!(
        watch.posted(),
        ["callsrc-publisher cam (was )"],
        "the publisher is announced once"
    );
    // The server lists the subscription while it lasts, and not after callsrc stops.
    let subscribers = |s: &CallServer| {
        s.channels()
            .iter()
            .flat_map(|c| c.subscribers.iter())
            .count()
    };
    assert_eq!(subscribers(&server), 1);
    // EOS sent to the pipeline (gst-launch-1.0 -e on Ctrl-C) reaches the bus.
    assert!(watch.pipeline.send_event(gst::event::Eos::new()));
    let eos = watch
        .pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(3), &[gst::MessageType::Eos]);
    assert!(eos.is_some(), "no EOS on the bus");
    drop(watch);
    assert!(
        wait_for(3 * SEC, || subscribers(&server) == 0),
        "the subscription outlived callsrc"
    );
}

#[test]
fn vp8_publisher_is_watched_with_the_right_colour() {
    if !netns::enter("vp8_publisher_is_watched_with_the_right_colour") {
        return;
    }
    watch_codec("vp8");
}

#[test]
fn h264_publisher_is_watched_with_the_right_colour() {
    if !netns::enter("h264_publisher_is_watched_with_the_right_colour") {
        return;
    }
    watch_codec("h264");
}

#[test]
fn vp9_publisher_is_watched_with_the_right_colour() {
    if !netns::enter("vp9_publisher_is_watched_with_the_right_colour") {
        return;
    }
    watch_codec("vp9");
}

#[test]
fn av1_publisher_is_watched_with_the_right_colour() {
    if !netns::enter("av1_publisher_is_watched_with_the_right_colour") {
        return;
    }
    watch_codec("av1");
}

#[test]
fn encoded_output_has_the_codec_caps() {
    if !netns::enter("encoded_output_has_the_codec_caps") {
        return;
    }
    let server = server();
    let _publisher = publish(&server, "cam", "h264");
    let watch = Watch::start(
        &format!("server={} channel=room uid=cam decode=false", server.url()),
        "identity",
    );
    assert!(
        wait_for(20 * SEC, || watch.seen.lock().unwrap().frames > 10),
        "no encoded frames: {:?} {}",
        watch.error(),
        watch.stats()
    );
    let caps = watch.seen.lock().unwrap().caps.clone().unwrap();
    assert_eq!(caps.structure(0).unwrap().name(), "video/x-h264", "{caps}");
}

#[test]
fn without_uid_the_first_publisher_is_watched_even_when_it_comes_later() {
    if !netns::enter("without_uid_the_first_publisher_is_watched_even_when_it_comes_later") {
        return;
    }
    let server = server();
    // callsrc first: it waits for somebody to publish.
    let watch = Watch::decoded(&format!("server={} channel=room timeout=30", server.url()));
    assert!(
        wait_for(5 * SEC, || watch
            .stats()
            .get::<String>("connection-state")
            .unwrap()
            == "waiting"),
        "{}",
        watch.stats()
    );
    std::thread::sleep(2 * SEC);
    assert_eq!(watch.error(), None);
    let _publisher = publish(&server, "late", "vp8");
    watch.assert_red();
    assert_eq!(
        watch.stats().get::<String>("publisher-uid").unwrap(),
        "late"
    );
}

#[test]
fn a_publisher_that_never_comes_is_an_error_naming_it() {
    if !netns::enter("a_publisher_that_never_comes_is_an_error_naming_it") {
        return;
    }
    let server = server();
    let watch = Watch::decoded(&format!(
        "server={} channel=room uid=nobody timeout=2",
        server.url()
    ));
    let mut error = None;
    assert!(wait_for(6 * SEC, || {
        error = watch.error();
        error.is_some()
    }));
    let error = error.unwrap();
    assert!(
        error.contains("no publisher") && error.contains("/whep/room/nobody"),
        "{error}"
    );
    assert!(
        watch.started.elapsed() < 5 * SEC,
        "{:?}",
        watch.started.elapsed()
    );
    assert_eq!(
        watch.stats().get::<String>("connection-state").unwrap(),
        "failed"
    );
}

#[test]
fn a_minute_of_watching_then_eos_then_start_stop_cycles_leave_nothing_behind() {
    if !netns::enter("a_minute_of_watching_then_eos_then_start_stop_cycles_leave_nothing_behind") {
        return;
    }
    let server = server();
    let _publisher = publish(&server, "cam", "vp8");
    let props = format!("server={} channel=room uid=cam", server.url());

    // A minute (CALLSRC_SECS) of watching: frames keep coming at the publisher's rate.
    let secs: u64 = std::env::var("CALLSRC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let watch = Watch::decoded(&props);
    watch.assert_red();
    let frames = || watch.seen.lock().unwrap().frames;
    let (start, f0) = (Instant::now(), frames());
    let mut slowest_second = usize::MAX;
    while start.elapsed() < Duration::from_secs(secs) {
        let before = frames();
        std::thread::sleep(SEC);
        slowest_second = slowest_second.min(frames() - before);
    }
    let fps = (frames() - f0) as f64 / start.elapsed().as_secs_f64();
    eprintln!("{secs} s: {fps:.1} fps, slowest second {slowest_second} frames");
    assert!(fps >= 25.0, "{fps:.1} fps over {secs} s");
    assert!(
        slowest_second >= 10,
        "a second with {slowest_second} frames"
    );
    assert_eq!(watch.error(), None);
    assert_eq!(
        watch.stats().get::<String>("connection-state").unwrap(),
        "connected"
    );
    // The end: EOS reaches the bus.
    assert!(watch.pipeline.send_event(gst::event::Eos::new()));
    assert!(
        watch
            .pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(3), &[gst::MessageType::Eos])
            .is_some(),
        "no EOS on the bus"
    );
    drop(watch);

    // Start and stop, many times in one process: threads and open files stay flat, and no
    // subscription is left on the server.
    let cycle = || {
        let w = Watch::decoded(&props);
        assert!(
            wait_for(20 * SEC, || w.seen.lock().unwrap().frames > 5),
            "{:?} {}",
            w.error(),
            w.stats()
        );
    };
    for _ in 0..5 {
        cycle();
    }
    std::thread::sleep(SEC / 2);
    let (_, threads0, fds0) = common::process_resources();
    for _ in 0..15 {
        cycle();
    }
    std::thread::sleep(SEC / 2);
    let (_, threads, fds) = common::process_resources();
    eprintln!("after 5 -> 20 cycles: threads {threads0} -> {threads}, fds {fds0} -> {fds}");
    assert!(threads <= threads0 + 2, "threads {threads0} -> {threads}");
    assert!(fds <= fds0 + 2, "fds {fds0} -> {fds}");
    let subscribers = || -> usize { server.channels().iter().map(|c| c.subscribers.len()).sum() };
    assert!(
        wait_for(3 * SEC, || subscribers() == 0),
        "{} subscriptions left",
        subscribers()
    );
}

/// Frames output over `d`.
fn frames_over(watch: &Watch, d: Duration) -> usize {
    let f0 = watch.frames();
    std::thread::sleep(d);
    watch.frames() - f0
}

#[test]
fn a_publisher_that_leaves_and_comes_back_is_followed_without_eos() {
    if !netns::enter("a_publisher_that_leaves_and_comes_back_is_followed_without_eos") {
        return;
    }
    let server = server();
    let publisher = publish(&server, "cam", "vp8");
    let watch = Watch::decoded(&format!("server={} channel=room uid=cam", server.url()));
    watch.assert_red();
    drop(publisher);
    // Gone: said on the bus, and the last frame (red) goes on at the publisher's rate.
    assert!(
        wait_for(5 * SEC, || watch.state() == "waiting"),
        "{}",
        watch.stats()
    );
    let during = frames_over(&watch, 2 * SEC);
    assert!(
        during >= 40,
        "{during} frames in 2 s while the publisher was away"
    );
    assert!(watch.wait_red(SEC));
    assert!(watch.stats().get::<u64>("frames-filled").unwrap() >= 40);
    // Back, green and larger: the output follows it at the size it had.
    let _back = publish_colour(&server, "cam", "vp8", 0xff00ff00, (640, 480));
    assert!(
        watch.wait_colour([0, 255, 0], 20 * SEC),
        "{:?} {}",
        watch.error(),
        watch.stats()
    );
    assert!(wait_for(SEC, || watch.state() == "connected"));
    let caps = watch.seen.lock().unwrap().caps.clone().unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(
        (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap()
        ),
        (320, 240),
        "{caps}"
    );
    assert!(frames_over(&watch, SEC) >= 20);
    assert_eq!(watch.error(), None);
    assert_eq!(
        watch.posted(),
        [
            "callsrc-publisher cam (was )",
            "callsrc-publisher-gone cam",
            "callsrc-publisher cam (was cam)"
        ]
    );
}

#[test]
fn without_uid_the_next_publisher_takes_over_after_black() {
    if !netns::enter("without_uid_the_next_publisher_takes_over_after_black") {
        return;
    }
    let server = server();
    let first = publish(&server, "a", "vp8");
    let watch = Watch::decoded(&format!(
        "server={} channel=room on-publisher-gone=black",
        server.url()
    ));
    watch.assert_red();
    drop(first);
    assert!(
        watch.wait_colour([0, 0, 0], 5 * SEC),
        "no black while nobody publishes: {:?} {}",
        watch.seen.lock().unwrap().centre,
        watch.stats()
    );
    assert!(frames_over(&watch, SEC) >= 20);
    let _next = publish_colour(&server, "b", "h264", 0xff0000ff, (320, 240));
    assert!(
        watch.wait_colour([0, 0, 255], 20 * SEC),
        "{:?} {}",
        watch.error(),
        watch.stats()
    );
    let stats = watch.stats();
    assert_eq!(stats.get::<String>("publisher-uid").unwrap(), "b");
    assert_eq!(stats.get::<String>("codec").unwrap(), "H264");
    assert_eq!(watch.error(), None);
    assert_eq!(
        watch.posted(),
        [
            "callsrc-publisher a (was )",
            "callsrc-publisher-gone a",
            "callsrc-publisher b (was a)"
        ]
    );
    // Only the new subscription is left on the server.
    assert!(wait_for(3 * SEC, || {
        server
            .channels()
            .iter()
            .map(|c| c.subscribers.len())
            .sum::<usize>()
            == 1
    }));
}

#[test]
fn on_publisher_gone_eos_ends_the_stream() {
    if !netns::enter("on_publisher_gone_eos_ends_the_stream") {
        return;
    }
    let server = server();
    let publisher = publish(&server, "cam", "vp8");
    let watch = Watch::decoded(&format!(
        "server={} channel=room uid=cam on-publisher-gone=eos",
        server.url()
    ));
    watch.assert_red();
    drop(publisher);
    let eos = watch
        .pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Eos]);
    assert!(eos.is_some(), "no EOS: {}", watch.stats());
    assert_eq!(
        watch.posted(),
        [
            "callsrc-publisher cam (was )",
            "callsrc-publisher-gone cam",
            "eos"
        ]
    );
    assert!(
        wait_for(2 * SEC, || watch.state() == "closed"),
        "{}",
        watch.state()
    );
}

#[test]
fn a_server_that_dies_and_comes_back_is_watched_again_without_eos() {
    if !netns::enter("a_server_that_dies_and_comes_back_is_watched_again_without_eos") {
        return;
    }
    init();
    let mut server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let _publisher = Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
         foreground-color=0xffff0000\" framerate=30/1 width=320 height=240 ! callsink \
         server={} channel=room uid=cam",
        server.url()
    ))
    .play();
    let watch = Watch::decoded(&format!("server={} channel=room uid=cam", server.url()));
    watch.assert_red();
    server.kill();
    assert!(
        wait_for(5 * SEC, || watch.state() == "waiting"),
        "{}",
        watch.stats()
    );
    // The last frame goes on while the server is away.
    assert!(frames_over(&watch, 3 * SEC) >= 60);
    let from_publisher = || watch.stats().get::<u64>("frames-output").unwrap();
    let before = from_publisher();
    server.restart();
    assert!(
        wait_for(30 * SEC, || from_publisher() > before + 30),
        "no frame from the publisher after the restart: {:?} {}",
        watch.error(),
        watch.stats()
    );
    assert!(wait_for(SEC, || watch.state() == "connected"));
    assert_eq!(watch.error(), None);
    assert!(!watch.posted().contains(&"eos".to_string()));
    assert_eq!(
        watch.posted(),
        [
            "callsrc-publisher cam (was )",
            "callsrc-publisher-gone cam",
            "callsrc-publisher cam (was cam)"
        ]
    );
}

#[test]
fn a_refused_token_and_an_unreachable_server_are_errors_naming_them() {
    if !netns::enter("a_refused_token_and_an_unreachable_server_are_errors_naming_them") {
        return;
    }
    init();
    let server = CallServer::start(ServerConfig {
        port: 0,
        token: Some("secret".into()),
        view_token: Some("view".into()),
        ..Default::default()
    })
    .unwrap();
    let error_of = |props: &str| {
        let watch = Watch::decoded(props);
        let mut error = None;
        assert!(
            wait_for(8 * SEC, || {
                error = watch.error();
                error.is_some()
            }),
            "no error for {props}: {}",
            watch.stats()
        );
        let error = error.unwrap();
        eprintln!("{props}: {error}");
        error
    };
    let refused = error_of(&format!(
        "server={} channel=room uid=cam token=wrong timeout=3",
        server.url()
    ));
    assert!(refused.contains("401"), "{refused}");
    let port = free_port("127.0.0.1");
    let unreachable = error_of(&format!(
        "server=http://127.0.0.1:{port} channel=room uid=cam timeout=3"
    ));
    assert!(
        unreachable.contains("cannot reach") && unreachable.contains(&port.to_string()),
        "{unreachable}"
    );
    let bad = error_of("whep-url=ftp://example/whep timeout=3");
    assert!(
        bad.contains("bad WHEP URL") && bad.contains("ftp://example/whep"),
        "{bad}"
    );
}
