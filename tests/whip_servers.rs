// SPDX-License-Identifier: MPL-2.0
//! callsink against WHIP servers that misbehave: huge and endless bodies, bodies that
//! trickle in, redirect loops, redirects and resources on other origins (where the token
//! must not go), answers that are not answers to the offer. Each ends in an element error
//! that names the problem, in bounded time, and the pipeline stops at once.

mod common;

use common::fakewhip::{FakeWhip, Reply, Seen};
use common::{Launched, netns};
use gst::prelude::*;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Publishes to `whip_url` with callsink options `options`; returns the error message and
/// how long it took to come. The pipeline must then stop within a second.
fn error_of(whip_url: &str, options: &str) -> (String, Duration) {
    let started = Instant::now();
    let p = Launched::new(&format!(
        "customvideosrc producer=videotestsrc framerate=30/1 ! callsink whip-url={whip_url} {options}"
    ))
    .play();
    let err = p
        .wait_error(40 * SEC)
        .unwrap_or_else(|| panic!("no error from {whip_url}"));
    let took = started.elapsed();
    let stopping = Instant::now();
    let _ = p.pipeline.set_state(gst::State::Null);
    assert!(
        stopping.elapsed() < SEC,
        "stopping took {:?}",
        stopping.elapsed()
    );
    (err, took)
}

/// An SDP answer with a video section for payload type `pt` named `codec`.
fn answer(pt: &str, codec: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=recvonly\r\n\
         a=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\n\
         a=setup:passive\r\na=rtpmap:{pt} {codec}/90000\r\n"
    )
}

fn created(body: String) -> Reply {
    Reply::Full(
        201,
        headers(&[
            ("Content-Type", "application/sdp"),
            ("Location", "/resource/1"),
        ]),
        body,
    )
}

#[test]
fn a_huge_answer_is_refused_without_reading_it_all() {
    if !netns::enter("a_huge_answer_is_refused_without_reading_it_all") {
        return;
    }
    let server = FakeWhip::start("127.0.0.1", |_| Reply::Endless {
        status: 201,
        headers: headers(&[("Location", "/resource/1")]),
        len: 1 << 30,
    });
    let (err, took) = error_of(&server.url("/whip/x"), "");
    assert!(err.contains("larger than 1 MiB"), "{err}");
    assert!(took < 15 * SEC, "{took:?}");
}

#[test]
fn an_answer_that_trickles_in_times_out() {
    if !netns::enter("an_answer_that_trickles_in_times_out") {
        return;
    }
    let server = FakeWhip::start("127.0.0.1", |_| Reply::Slow {
        status: 201,
        headers: headers(&[("Location", "/resource/1")]),
        len: 5000,
        every: Duration::from_millis(200),
    });
    let (err, took) = error_of(&server.url("/whip/x"), "timeout=2");
    assert!(
        err.contains("cannot reach") && err.contains("no complete answer within 2 s"),
        "{err}"
    );
    assert!(took < 10 * SEC, "{took:?}");
}

#[test]
fn a_redirect_loop_is_named() {
    if !netns::enter("a_redirect_loop_is_named") {
        return;
    }
    let server = FakeWhip::start("127.0.0.1", |_| {
        Reply::Full(307, headers(&[("Location", "/whip/x")]), String::new())
    });
    let (err, _) = error_of(&server.url("/whip/x"), "");
    assert!(err.contains("more than 5 redirects"), "{err}");
    assert_eq!(
        server.seen().len(),
        6,
        "the first request and five redirects"
    );
}

#[test]
fn the_token_goes_only_to_the_origin_it_was_given_for() {
    if !netns::enter("the_token_goes_only_to_the_origin_it_was_given_for") {
        return;
    }
    let elsewhere = FakeWhip::start("127.0.0.2", |_| created(answer("96", "VP8")));
    let target = elsewhere.url("/whip/x");
    let redirecting = FakeWhip::start("127.0.0.1", move |_| {
        Reply::Full(307, headers(&[("Location", &target)]), String::new())
    });
    let (err, _) = error_of(&redirecting.url("/whip/x"), "token=s3cret");
    assert!(
        err.contains("another origin") && err.contains("127.0.0.2"),
        "{err}"
    );
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    assert_eq!(
        redirecting.seen()[0].authorization.as_deref(),
        Some("Bearer s3cret")
    );
    // Without a token, the redirect is followed.
    let _ = error_of(&redirecting.url("/whip/x"), "");
    let posts: Vec<Seen> = elsewhere
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(posts[0].body.starts_with("v=0"));
}

#[test]
fn a_resource_on_another_origin_is_ended_without_the_token() {
    if !netns::enter("a_resource_on_another_origin_is_ended_without_the_token") {
        return;
    }
    // The WHIP endpoint is a front for a real call server; it names a session resource on
    // another origin, which records what reaches it.
    common::init();
    let real = gstcustomvideo::server::CallServer::start(gstcustomvideo::server::ServerConfig {
        port: 0,
        ..Default::default()
    })
    .unwrap();
    let resources = FakeWhip::start("127.0.0.2", |_| Reply::Full(200, vec![], String::new()));
    let (whip, other) = (real.whip_url("room"), resources.url("/resource/abc"));
    let front = FakeWhip::start("127.0.0.1", move |seen| {
        let a = common::http::request("POST", &whip, Some("application/sdp"), None, &seen.body);
        Reply::Full(
            a.status,
            headers(&[("Content-Type", "application/sdp"), ("Location", &other)]),
            a.body,
        )
    });
    let p = Launched::new(&format!(
        "customvideosrc producer=videotestsrc framerate=30/1 ! callsink whip-url={} token=s3cret",
        front.url("/whip/room")
    ))
    .play();
    let connected = || {
        real.channels()
            .iter()
            .flat_map(|c| c.publishers.iter())
            .any(|p| p.state == "connected")
    };
    assert!(common::wait_for(20 * SEC, connected), "{:?}", p.error());
    assert_eq!(
        front.seen()[0].authorization.as_deref(),
        Some("Bearer s3cret")
    );
    let _ = p.pipeline.set_state(gst::State::Null);
    common::wait_for(2 * SEC, || !resources.seen().is_empty());
    let seen = resources.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].authorization.as_deref()),
        ("DELETE", None)
    );
}

#[test]
fn answers_that_do_not_answer_the_offer_are_named() {
    if !netns::enter("answers_that_do_not_answer_the_offer_are_named") {
        return;
    }
    let cases: Vec<(String, &str)> = vec![
        (
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n".into(),
            "no video",
        ),
        // A payload type the offer did not propose, or out of range.
        (answer("45", "VP8"), "did not propose"),
        (answer("300", "VP8"), "none of the offered"),
        (answer("99999999999999999999", "VP8"), "none of the offered"),
        // Two media sections for one offered: webrtcbin refuses it.
        (
            format!(
                "{}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n",
                answer("96", "VP8")
            ),
            "cannot be used",
        ),
        ("garbage\r\n\u{0}\u{1}".into(), "not an SDP answer"),
    ];
    for (body, reason) in cases {
        let b = body.clone();
        let server = FakeWhip::start("127.0.0.1", move |_| created(b.clone()));
        let (err, took) = error_of(&server.url("/whip/x"), "codec=vp8");
        assert!(err.contains(reason), "{body:?}: {err}");
        assert!(took < 15 * SEC, "{took:?}");
    }
}
