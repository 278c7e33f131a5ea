// SPDX-License-Identifier: MPL-2.0
//! Losing the server, and getting it back, with nothing lost for the user: the call server
//! runs as a process of its own (`callserver`), killed with SIGKILL and started again on the
//! same port, while callsink publishes and viewers watch. callsink notices within 2 s,
//! keeps its pipeline PLAYING, publishes again within 3 s of the server's return however
//! long it was away (or gives up after `reconnect-timeout`), and the viewer page and WHEP
//! viewers show the publisher again within a second of its return.

mod common;

use common::browser::Browser;
use common::callserver::{ServerProcess, free_port};
use common::peers::Viewer;
use common::{Launched, epoch_ms, netns, wait_for};
use gst::prelude::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

fn publisher(server: &str, uid: &str, rgb: [u8; 3], extra: &str) -> Launched {
    let argb = 0xff00_0000u32 | (rgb[0] as u32) << 16 | (rgb[1] as u32) << 8 | rgb[2] as u32;
    Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color foreground-color={argb:#010x}\" \
         framerate=30/1 width=320 height=240 ! callsink name=sink server={server} channel=r uid={uid} {extra}"
    ))
    .play()
}

/// The states callsink reported after `after`.
fn states_after(p: &Launched, after: Instant) -> Vec<(Instant, String)> {
    p.connection_states()
        .into_iter()
        .filter(|(t, _)| *t >= after)
        .collect()
}

/// Waits for callsink's first `state` after `after`.
fn wait_state_after(
    p: &Launched,
    state: &str,
    after: Instant,
    timeout: Duration,
) -> Option<Instant> {
    let find = || {
        states_after(p, after)
            .into_iter()
            .find(|(_, s)| s == state)
            .map(|(t, _)| t)
    };
    wait_for(timeout, || find().is_some());
    find()
}

/// Kills the server under a running call, keeps it away for `down`, starts it again, and
/// checks what the user sees. Returns (noticed after, published again after the restart).
fn kill_and_restart(down: Duration, with_page: bool) -> (Duration, Duration) {
    common::init();
    let mut server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let p = publisher(&server.url(), "cam", RED, "");
    assert!(
        p.wait_state("connected", 20 * SEC).is_some(),
        "never connected: {:?}",
        p.error()
    );
    // A second into the call: callsink knows how often the server reports.
    assert!(wait_for(10 * SEC, || server.frames("r", "cam") > 30));
    let page = with_page.then(|| {
        let b = Browser::start();
        b.open(&server.viewer_url("r"));
        assert!(
            b.wait_viewer_colour("cam", RED.map(i64::from), 30 * SEC),
            "the viewer page shows {}",
            b.viewer_state("cam")
        );
        b
    });

    let killed = Instant::now();
    server.kill();
    let noticed = wait_state_after(&p, "reconnecting", killed, 10 * SEC)
        .expect("callsink never noticed that the server died")
        - killed;
    // The page notices too (the server is unreachable) and keeps its tile meanwhile.
    std::thread::sleep(down.saturating_sub(killed.elapsed()));
    let back = Instant::now();
    server.restart();
    let connected = wait_state_after(&p, "connected", back, 10 * SEC)
        .expect("callsink did not publish again after the server came back");
    let republished = connected.saturating_duration_since(back);
    assert!(
        wait_for(5 * SEC, || server.frames("r", "cam") > 10),
        "the restarted server gets no media: {:?}",
        server.channels()
    );

    // The pipeline never left PLAYING and no error came; callsink only reconnected.
    assert_eq!(p.error(), None);
    assert_eq!(p.pipeline.current_state(), gst::State::Playing);
    let states = p.pipeline_states();
    let playing = states
        .iter()
        .position(|s| *s == gst::State::Playing)
        .expect("the pipeline played");
    assert!(
        states[playing..].iter().all(|s| *s == gst::State::Playing),
        "the pipeline left PLAYING: {states:?}"
    );
    let after: Vec<String> = states_after(&p, killed)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(after, ["reconnecting", "connected"], "callsink states");

    if let Some(page) = page {
        // The page subscribes again (the old subscription died with the server) and shows
        // the publisher within a second of its return.
        let ok = wait_for(10 * SEC, || page.viewer_state("cam")["joins"] == 2);
        assert!(
            ok,
            "the page did not subscribe again: {}",
            page.viewer_state("cam")
        );
        assert!(
            page.wait_viewer_colour("cam", RED.map(i64::from), 10 * SEC),
            "the page shows no picture again: {}",
            page.viewer_state("cam")
        );
        let first = page.viewer_state("cam")["firstFrameAt"]
            .as_f64()
            .expect("a frame time");
        let picture = first - epoch_ms(connected);
        eprintln!(
            "the viewer page showed the publisher {picture:.0} ms after it was back: {}",
            page.viewer_state("cam")
        );
        assert!(
            picture <= 1000.0,
            "the page took {picture:.0} ms to show the publisher again"
        );
    }
    eprintln!(
        "server away for {down:?}: callsink noticed after {} ms, published again {} ms after the restart",
        noticed.as_millis(),
        republished.as_millis()
    );
    assert!(noticed <= 2 * SEC, "noticed after {noticed:?}");
    assert!(
        republished <= 3 * SEC,
        "published again after {republished:?}"
    );
    (noticed, republished)
}

#[test]
fn a_killed_server_is_noticed_and_the_call_and_its_viewers_come_back_when_it_restarts() {
    if !netns::enter(
        "a_killed_server_is_noticed_and_the_call_and_its_viewers_come_back_when_it_restarts",
    ) {
        return;
    }
    kill_and_restart(2 * SEC, true);
}

#[test]
fn the_call_comes_back_after_the_server_was_away_for_30_s() {
    if !netns::enter("the_call_comes_back_after_the_server_was_away_for_30_s") {
        return;
    }
    kill_and_restart(30 * SEC, false);
}

#[test]
fn reconnect_timeout_bounds_the_tries_and_names_the_cause() {
    if !netns::enter("reconnect_timeout_bounds_the_tries_and_names_the_cause") {
        return;
    }
    common::init();
    let mut server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let limited = publisher(&server.url(), "limited", RED, "reconnect-timeout=3");
    let at_once = publisher(&server.url(), "once", BLUE, "reconnect-timeout=0");
    for (p, uid) in [(&limited, "limited"), (&at_once, "once")] {
        assert!(p.wait_state("connected", 20 * SEC).is_some());
        assert!(wait_for(10 * SEC, || server.frames("r", uid) > 30));
    }
    let killed = Instant::now();
    server.kill();
    // reconnect-timeout=0: the loss is an error at once.
    let err = at_once.wait_error(5 * SEC).expect("an error");
    assert!(
        err.contains("lost") && err.contains("reconnect-timeout is 0"),
        "{err}"
    );
    assert!(killed.elapsed() < 3 * SEC, "{:?}", killed.elapsed());
    // reconnect-timeout=3: an error once 3 s of tries are over, not before.
    let err = limited.wait_error(15 * SEC).expect("an error");
    let failed = killed.elapsed();
    assert!(
        err.contains("could not be restored within reconnect-timeout")
            && err.contains("cannot reach"),
        "{err}"
    );
    assert!(
        failed > 3 * SEC && failed < 8 * SEC,
        "failed after {failed:?}"
    );
    for p in [&limited, &at_once] {
        let states: Vec<String> = p.connection_states().into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            states.last().map(String::as_str),
            Some("failed"),
            "{states:?}"
        );
    }
}

#[test]
fn viewers_see_their_publisher_again_within_a_second_of_its_return() {
    if !netns::enter("viewers_see_their_publisher_again_within_a_second_of_its_return") {
        return;
    }
    common::init();
    let server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let first = publisher(&server.url(), "cam", RED, "");
    assert!(first.wait_state("connected", 20 * SEC).is_some());
    let url = server.whep_url("r", "cam");
    let viewers = [
        Viewer::whepclientsrc(&url),
        Viewer::webrtcbin(&url).expect("webrtcbin viewer"),
    ];
    let page = Browser::start();
    page.open(&server.viewer_url("r"));
    for v in &viewers {
        assert!(
            v.wait_colour(RED, 20 * SEC),
            "{} sees {:?}",
            v.kind,
            v.log()
        );
    }
    assert!(page.wait_viewer_colour("cam", RED.map(i64::from), 30 * SEC));

    // The publisher leaves; two seconds later it is back, with another colour.
    first.pipeline.set_state(gst::State::Null).unwrap();
    drop(first);
    std::thread::sleep(2 * SEC);
    let second = publisher(&server.url(), "cam", BLUE, "");
    let back = second
        .wait_state("connected", 20 * SEC)
        .expect("the publisher connects again");
    for v in &viewers {
        assert!(
            v.wait_colour(BLUE, 10 * SEC),
            "{} viewer does not see the publisher again: {:?}",
            v.kind,
            v.log()
        );
        let seen = v.log().turned(BLUE, back - SEC).expect("a blue frame");
        let after = seen.saturating_duration_since(back);
        eprintln!(
            "{} viewer (same session): a picture {} ms after the publisher was back",
            v.kind,
            after.as_millis()
        );
        assert!(after <= SEC, "{} viewer: {after:?}", v.kind);
    }
    assert!(
        page.wait_viewer_colour("cam", BLUE.map(i64::from), 10 * SEC),
        "{}",
        page.viewer_state("cam")
    );
    let st: Value = page.viewer_state("cam");
    // The page kept its subscription (the server kept it waiting for the publisher).
    assert_eq!(st["joins"], Value::from(1), "{st}");
    let picture = st["resumedAt"].as_f64().unwrap() - epoch_ms(back);
    eprintln!("viewer page: a picture {picture:.0} ms after the publisher was back");
    assert!(picture <= 1000.0, "the page took {picture:.0} ms: {st}");
}
