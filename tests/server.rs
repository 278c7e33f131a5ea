// SPDX-License-Identifier: MPL-2.0
//! The call server over HTTP and with third-party WebRTC peers: every error answer with its
//! reason, publishers made with webrtcbin (the reference publisher
//! `tests/peers/whip_publish.py`) and gst-plugins-rs `whipclientsink`, and a peer that sends
//! garbage. WebRTC tests run in their own network namespace.

mod common;

use common::http::{self, offer};
use common::peers::Publisher;
use common::{netns, wait_for};
use gstcustomvideo::server::{CallServer, PublisherInfo, ServerConfig};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn server(token: Option<&str>) -> CallServer {
    common::init();
    CallServer::start(ServerConfig {
        port: 0,
        token: token.map(str::to_owned),
        ..Default::default()
    })
    .expect("server starts")
}

/// Sends a request; returns (status, headers as "name: value" lines, body).
fn request(
    method: &str,
    url: &str,
    ctype: Option<&str>,
    auth: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let a = http::request(method, url, ctype, auth, body);
    (a.status, a.headers, a.body)
}

#[test]
fn every_bad_request_gets_a_status_and_a_reason() {
    let server = server(None);
    let url = server.url();
    let whip = server.whip_url("room");
    let sdp = Some("application/sdp");
    let cases: Vec<(u16, (u16, String, String), &str)> = vec![
        (
            400,
            request("POST", &whip, sdp, None, "hello"),
            "malformed SDP offer",
        ),
        (
            400,
            request("POST", &whip, sdp, None, ""),
            "an SDP offer is required",
        ),
        (
            406,
            request(
                "POST",
                &whip,
                sdp,
                None,
                "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 H265/90000\r\n",
            ),
            "H265",
        ),
        (
            400,
            request(
                "POST",
                &whip,
                sdp,
                None,
                "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
            ),
            "no video",
        ),
        (
            413,
            request(
                "POST",
                &whip,
                sdp,
                None,
                &format!("v=0\r\n{}", "a=x\r\n".repeat(20000)),
            ),
            "larger than",
        ),
        (
            415,
            request("POST", &whip, Some("text/plain"), None, &offer(true)),
            "application/sdp",
        ),
        (
            404,
            request(
                "POST",
                &format!("{url}/whep/nowhere/bob"),
                sdp,
                None,
                &offer(false),
            ),
            "no channel \"nowhere\"",
        ),
        (405, request("GET", &whip, None, None, ""), "use POST"),
        (
            405,
            request("PUT", &format!("{url}/resource/x"), None, None, ""),
            "PATCH, DELETE",
        ),
        (
            404,
            request("DELETE", &format!("{url}/resource/nope"), None, None, ""),
            "no session",
        ),
        (
            404,
            request("GET", &format!("{url}/api/channels/nope"), None, None, ""),
            "no channel",
        ),
    ];
    for (want, (status, _, body), reason) in cases {
        assert_eq!(status, want, "{body}");
        assert!(
            body.contains(reason),
            "HTTP {status}: {body:?} lacks {reason:?}"
        );
    }
    let (status, headers, _) = request("OPTIONS", &whip, None, None, "");
    assert_eq!(status, 204);
    assert!(
        !headers.contains("access-control-allow-origin"),
        "no CORS for origins not listed: {headers}"
    );
    assert!(
        headers.contains("accept-post: application/sdp"),
        "{headers}"
    );
    let (_, headers, _) = request("GET", &whip, None, None, "");
    assert!(headers.contains("allow: POST"), "{headers}");
}

#[test]
fn publishing_needs_the_token_when_one_is_set() {
    let server = server(Some("s3cret"));
    let whip = server.whip_url("room");
    let (status, headers, body) =
        request("POST", &whip, Some("application/sdp"), None, &offer(true));
    assert_eq!(status, 401);
    assert!(body.contains("Bearer"), "{body}");
    assert!(headers.contains("www-authenticate: Bearer"), "{headers}");
    let (status, _, body) = request(
        "POST",
        &whip,
        Some("application/sdp"),
        Some("Bearer nope"),
        &offer(true),
    );
    assert_eq!(status, 401);
    assert!(body.contains("not valid"), "{body}");
    let (status, headers, body) = request(
        "POST",
        &whip,
        Some("application/sdp"),
        Some("Bearer s3cret"),
        &offer(true),
    );
    assert_eq!(status, 201, "{body}");
    assert!(headers.contains("location: http://"), "{headers}");
    assert!(body.starts_with("v=0"));
    // An ICE restart through PATCH is refused, a trickled candidate is taken.
    let location = headers
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    let (status, _, body) = request(
        "PATCH",
        &location,
        Some("application/trickle-ice-sdpfrag"),
        None,
        "a=ice-ufrag:other\r\na=ice-pwd:otherpassword12345678\r\n",
    );
    assert_eq!(status, 422, "{body}");
    let (status, _, _) = request(
        "PATCH",
        &location,
        Some("application/trickle-ice-sdpfrag"),
        None,
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40999 typ host\r\n",
    );
    assert_eq!(status, 204);
    let (status, _, _) = request("DELETE", &location, None, None, "");
    assert_eq!(status, 200);
    assert!(server.channels().is_empty());
}

fn find(server: &CallServer, uid: &str) -> Option<PublisherInfo> {
    server
        .channels()
        .into_iter()
        .flat_map(|c| c.publishers)
        .find(|p| p.uid == uid)
}

fn whip_publish(url: &str, secs: u32, video: &str) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/whip_publish.py");
    Command::new("/usr/bin/python3")
        .args([
            script,
            "-q",
            "-u",
            url,
            "-d",
            &secs.to_string(),
            "--local-ip",
            "127.0.0.1",
            "-V",
            video,
        ])
        .spawn()
        .expect("whip_publish.py runs (Debian's /usr/bin/python3 with PyGObject)")
}

fn webrtcbin_publisher(codec_branch: &str, uid: &str, want_codec: &str) {
    let server = server(None);
    let url = format!("{}?uid={uid}", server.whip_url("webrtcbin"));
    let start = Instant::now();
    let mut child = whip_publish(&url, 4, codec_branch);
    // Listed as soon as the offer is answered.
    assert!(
        wait_for(10 * SEC, || find(&server, uid).is_some()),
        "publisher never listed"
    );
    let listed = start.elapsed();
    assert!(wait_for(10 * SEC, || find(&server, uid).is_some_and(|p| p
        .frames
        > 30
        && p.width.is_some()
        && p.packets > 0)));
    let p = find(&server, uid).unwrap();
    assert_eq!(p.codec.as_deref(), Some(want_codec));
    assert_eq!((p.width, p.height), (Some(320), Some(240)));
    assert!(p.bitrate > 0 && p.packets > 0, "{p:?}");
    // The script DELETEs its session when it ends: gone at once.
    let status = child.wait().unwrap();
    assert!(status.success(), "whip_publish.py failed");
    assert!(
        wait_for(SEC, || find(&server, uid).is_none()),
        "still listed after DELETE"
    );
    eprintln!("listed {listed:?} after the publisher started");
}

#[test]
fn webrtcbin_vp8_publisher_is_listed_and_leaves() {
    if !netns::enter("webrtcbin_vp8_publisher_is_listed_and_leaves") {
        return;
    }
    webrtcbin_publisher(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96",
        "webrtcbin-vp8",
        "VP8",
    );
}

#[test]
fn webrtcbin_h264_publisher_is_listed_and_leaves() {
    if !netns::enter("webrtcbin_h264_publisher_is_listed_and_leaves") {
        return;
    }
    webrtcbin_publisher(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 ssrc=2 config-interval=-1 aggregate-mode=zero-latency ! queue ! application/x-rtp,media=video,encoding-name=H264,payload=102",
        "webrtcbin-h264",
        "H264",
    );
}

#[test]
fn whipclientsink_publishes_into_the_server() {
    if !netns::enter("whipclientsink_publishes_into_the_server") {
        return;
    }
    // whipclientsink runs its webrtcbin in a pipeline of its own, out of reach for adding a
    // loopback candidate: serve on the namespace's private veth address instead.
    let server = common::server_on_veth();
    let publisher =
        Publisher::whipclientsink(&format!("{}?uid=rs", server.whip_url("rs")), 0xff80_8080);
    let ok = wait_for(30 * SEC, || {
        find(&server, "rs").is_some_and(|p| p.frames > 30)
    });
    let info = find(&server, "rs");
    assert!(
        ok,
        "whipclientsink never streamed: {info:?} {:?}",
        publisher.error()
    );
    assert_eq!(info.unwrap().codec.as_deref(), Some("VP8"));
}

#[test]
fn garbage_from_one_peer_does_not_stall_the_others() {
    if !netns::enter("garbage_from_one_peer_does_not_stall_the_others") {
        return;
    }
    let server = server(None);
    let url = format!("{}?uid=steady", server.whip_url("noise"));
    let mut child = whip_publish(
        &url,
        8,
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96",
    );
    assert!(wait_for(10 * SEC, || find(&server, "steady")
        .is_some_and(|p| p.frames > 10)));
    // A session that never completes ICE, and a burst of garbage and fake STUN.
    let (status, _, _) = request(
        "POST",
        &server.whip_url("noise"),
        Some("application/sdp"),
        None,
        &offer(true),
    );
    assert_eq!(status, 201);
    let before = find(&server, "steady").unwrap().frames;
    let noise = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut stun = vec![0u8; 20];
    stun[0..2].copy_from_slice(&[0x00, 0x01]);
    stun[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    let garbage: Vec<u8> = (0..1200u32).map(|i| (i * 7 + 3) as u8).collect();
    let start = Instant::now();
    for i in 0..20_000u32 {
        let pkt: &[u8] = if i % 2 == 0 { &garbage } else { &stun };
        let _ = noise.send_to(pkt, server.media_addr());
        if start.elapsed() > 3 * SEC {
            break;
        }
    }
    let after = find(&server, "steady")
        .expect("the API still answers")
        .frames;
    assert!(
        after > before,
        "the publisher stalled: {before} -> {after} frames"
    );
    let _ = child.wait();
}

#[test]
fn a_bad_public_url_is_refused_and_named() {
    common::init();
    for bad in [
        "sfu.example.com",
        "ftp://sfu.example.com",
        "http://sfu.example.com/?a=1",
    ] {
        let started = CallServer::start(ServerConfig {
            port: 0,
            public_url: Some(bad.into()),
            ..Default::default()
        });
        let Err(e) = started else {
            panic!("{bad} was taken as a public URL");
        };
        let e = e.to_string();
        assert!(e.contains("bad public URL") && e.contains(bad), "{e}");
    }
}
