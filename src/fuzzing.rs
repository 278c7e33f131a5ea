// SPDX-License-Identifier: MPL-2.0
//! The fuzz targets: one function per reader of untrusted bytes, each taking arbitrary bytes
//! and checking what must hold for any input (no panic, no hang, results within bounds,
//! every refusal a 4xx or a 503). `fuzz/` runs them under libFuzzer (`scripts/fuzz.sh`),
//! `tests/fuzz.rs` runs them on the regression inputs and a seeded mutation of the seeds.
//!
//! Placeholders let mutated inputs reach past the checks a random input cannot pass: in
//! `datagram` inputs `@U@` becomes the STUN username of the session under test; in `http`
//! inputs `@T@` becomes the publish token, `@V@` the view token and `@R@` the resource id
//! of the last session the server created.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::callsink::whip;
use crate::server::sfu::{Sfu, SfuConfig, SfuError};
use crate::server::{CallServer, Limits, ServerConfig, bitstream, sdp, stun};

/// The H.264 SPS and VP8 key-frame readers of the server's media path.
pub fn bitstream(data: &[u8]) {
    if let Some((w, h)) = bitstream::h264_resolution(data) {
        assert!(
            (1..=65536).contains(&w) && (1..=65536).contains(&h),
            "{w}x{h}"
        );
    }
    if let Some((w, h)) = bitstream::vp8_resolution(data) {
        assert!(w < 16384 && h < 16384, "{w}x{h}");
    }
}

/// The STUN reader that routes datagrams from new addresses.
pub fn stun(data: &[u8]) {
    if let Some(ufrag) = stun::request_ufrag(data) {
        assert!(ufrag.len() + 24 <= data.len());
        assert!(!ufrag.contains(&b':'));
    }
}

/// The SDP checks on offers, answers and trickle fragments.
pub fn sdp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match sdp::check_offer(&text) {
        Ok(()) => {
            assert!(sdp::has_video(&text));
            assert!(!sdp::video_codecs(&text).is_empty());
        }
        Err(e) => assert!((400..500).contains(&e.status()), "{e}"),
    }
    for section in sdp::media_sections(&text) {
        for pt in &section.formats {
            let _ = section.encoding(*pt);
        }
    }
    let _ = sdp::payload_types(&text);
    let _ = sdp::ice_ufrag(&text);
    if let Ok(f) = sdp::parse_fragment(&text) {
        assert!(f.candidates.len() <= text.len());
    }
}

/// callsink's reader of the `Link` headers a WHIP server sends (ICE servers).
pub fn link(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for server in whip::parse_link_headers(text.split('\n')) {
        assert!(!server.url.contains('>'), "{server:?}");
    }
}

/// The server's address and the peer's in the SFU targets (TEST-NET, never on the wire:
/// these targets hand datagrams to the SFU in memory).
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 4000);
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 5000);

/// An SFU with one publisher connected in memory, kept between inputs (creating its
/// certificate for every input would make the targets a hundred times slower).
struct SfuUnderTest {
    sfu: Sfu,
    /// `<server ufrag>:<peer ufrag>` of the standing publisher.
    username: Vec<u8>,
    now: Instant,
}

impl SfuUnderTest {
    fn new() -> SfuUnderTest {
        let _ = gst::init();
        let mut sfu = Sfu::new(SfuConfig {
            candidates: vec![SERVER],
            ..Default::default()
        });
        let now = Instant::now();
        let offer = peer_offer();
        let created = sfu
            .publish(now, PEER.ip(), "fuzz", Some("base"), &offer)
            .expect("the SFU takes a real offer");
        let server_ufrag = sdp::ice_ufrag(&created.answer).unwrap_or_default();
        let peer_ufrag = sdp::ice_ufrag(&offer).unwrap_or_default();
        SfuUnderTest {
            sfu,
            username: format!("{server_ufrag}:{peer_ufrag}").into_bytes(),
            now,
        }
    }

    /// Lets time pass and the SFU send what it wants to.
    fn tick(&mut self, by: Duration) {
        self.now += by;
        self.sfu.timeout(self.now);
        self.sfu.poll(self.now, &|_, _| ());
    }

    /// The standing publisher again when the SFU dropped it.
    fn ensure_publisher(&mut self) {
        if self.sfu.is_empty() {
            *self = SfuUnderTest::new();
        }
    }
}

thread_local! {
    static SFU: RefCell<Option<SfuUnderTest>> = const { RefCell::new(None) };
}

fn with_sfu(f: impl FnOnce(&mut SfuUnderTest)) {
    SFU.with(|cell| {
        let mut cell = cell.borrow_mut();
        let s = cell.get_or_insert_with(SfuUnderTest::new);
        s.ensure_publisher();
        f(s);
    });
}

/// A real offer (str0m) to publish video from [`PEER`].
fn peer_offer() -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host(PEER, "udp").expect("a host candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    api.apply().expect("an offer").0.to_sdp_string()
}

fn check_refusal(e: &SfuError) {
    assert!(!e.to_string().contains("PointerOffset"), "{e}");
    // The WebRTC stack panicked on the offer (caught, but a check before it was missing).
    assert!(!e.to_string().contains("could not process"), "{e}");
    assert!(
        (400..500).contains(&e.status()) || e.status() == 503,
        "{} {e}",
        e.status()
    );
}

/// WHIP and WHEP offers and trickle fragments into the SFU (str0m's SDP parser included):
/// the input is an offer, then after a NUL byte a trickle fragment; inputs of odd length
/// publish, of even length subscribe.
pub fn offer(data: &[u8]) {
    let (offer, fragment) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let offer = String::from_utf8_lossy(offer);
    let fragment = String::from_utf8_lossy(fragment);
    // An odd length publishes, an even one subscribes: half the work per input.
    let publish = data.len() % 2 == 1;
    with_sfu(|s| {
        let client = PEER.ip();
        let mut created = vec![];
        let result = if publish {
            s.sfu.publish(s.now, client, "fuzz", Some("p"), &offer)
        } else {
            s.sfu.subscribe(s.now, client, "fuzz", "base", &offer)
        };
        match result {
            Ok(c) => {
                assert!(sdp::has_video(&c.answer), "{}", c.answer);
                created.push(c.id);
            }
            Err(e) => check_refusal(&e),
        }
        for id in &created {
            if let Err(e) = s.sfu.trickle(id, &fragment) {
                check_refusal(&e);
            }
        }
        s.tick(Duration::from_millis(10));
        for id in &created {
            let _ = s.sfu.leave(id, s.now);
        }
        s.tick(Duration::from_millis(10));
    });
}

/// Datagrams from the publisher's address into the SFU: STUN, DTLS, RTP, RTCP or none of
/// them. The input is a sequence of datagrams, each preceded by its length (2 bytes, big
/// endian).
pub fn datagram(data: &[u8]) {
    with_sfu(|s| {
        let mut rest = data;
        while rest.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let body = rest.get(2..2 + n).unwrap_or(&rest[2..]);
            rest = &rest[(2 + body.len()).min(rest.len())..];
            let body = replace(body, b"@U@", &s.username);
            s.sfu.receive(s.now, PEER, SERVER, &body);
            s.tick(Duration::from_millis(5));
        }
    });
}

/// `data` with each `from` replaced by `to`.
fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// The publish and view tokens of the `http` target's server.
pub const HTTP_TOKEN: &str = "fuzz-publish";
pub const HTTP_VIEW_TOKEN: &str = "fuzz-view";

struct HttpUnderTest {
    server: CallServer,
    /// The resource id of the last session created.
    resource: String,
    inputs: u64,
}

thread_local! {
    static HTTP: RefCell<Option<HttpUnderTest>> = const { RefCell::new(None) };
}

/// A whole request (or anything) to the call server's HTTP port, on loopback, in one
/// connection whose sending side then closes: the answer must be a 4xx, a 503 or a success,
/// and the server must keep answering.
pub fn http(data: &[u8]) {
    HTTP.with(|cell| {
        let mut cell = cell.borrow_mut();
        let h = cell.get_or_insert_with(|| {
            let _ = gst::init();
            let server = CallServer::start(ServerConfig {
                port: 0,
                token: Some(HTTP_TOKEN.into()),
                view_token: Some(HTTP_VIEW_TOKEN.into()),
                // The fuzzer fails authentication all the time; the limit on failures
                // (tested on its own) would soon answer every input with 429.
                limits: Limits {
                    auth_failures: u32::MAX,
                    // A body shorter than its Content-Length is waited for until this time
                    // (the sending side being closed is no end of the request: clients may
                    // close it and wait for the answer).
                    request_timeout: Duration::from_secs(1),
                    ..Default::default()
                },
                ..Default::default()
            })
            .expect("the call server starts on loopback");
            HttpUnderTest {
                server,
                resource: String::new(),
                inputs: 0,
            }
        });
        let request = replace(data, b"@T@", HTTP_TOKEN.as_bytes());
        let request = replace(&request, b"@V@", HTTP_VIEW_TOKEN.as_bytes());
        let request = replace(&request, b"@R@", h.resource.as_bytes());
        let answer = exchange(h.server.http_addr(), &request);
        if let Some(status) = status_of(&answer) {
            assert!(
                status < 500 || status == 503,
                "HTTP {status} for {:?}: {}",
                String::from_utf8_lossy(&request),
                String::from_utf8_lossy(&answer)
            );
        }
        if let Some(id) = location_id(&answer) {
            // One session kept for `@R@`; the one before ends, so that sessions do not pile
            // up to the server's limits over a long run.
            let before = std::mem::replace(&mut h.resource, id);
            if !before.is_empty() {
                let delete =
                    format!("DELETE /resource/{before} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                exchange(h.server.http_addr(), delete.as_bytes());
            }
        }
        h.inputs += 1;
        if h.inputs % 256 == 0 {
            let probe = b"GET /api/channels HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                          Authorization: Bearer fuzz-view\r\nConnection: close\r\n\r\n";
            let answer = exchange(h.server.http_addr(), probe);
            assert_eq!(
                status_of(&answer),
                Some(200),
                "the server stopped answering: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    });
}

/// Sends `request` on a new connection, closes the sending side and reads the answer
/// (at most 15 s: the request time of the server under test is 1 s, and the instrumented
/// build under libFuzzer is many times slower than a release build; a server that keeps a
/// closed request waiting longer hangs).
fn exchange(server: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(15))
        .expect("the server takes connections");
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = vec![];
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A signal (libFuzzer's timer) interrupted the read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The server closed with some of the request unread (an answer before the whole
            // body, e.g. 413): the kernel resets the connection. Closed, not hung.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no end of the answer {:?} after a closed request ({e}) {:?} (got {:?})",
                start.elapsed(),
                String::from_utf8_lossy(request),
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    if start.elapsed() > Duration::from_secs(3) {
        // Shown in the fuzz log: worth a look in a release build.
        eprintln!(
            "slow answer ({:?}) to {:?}",
            start.elapsed(),
            String::from_utf8_lossy(&request[..request.len().min(120)])
        );
    }
    answer
}

/// The status of the first answer in `answer`.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The id in a `Location: /resource/{id}` header of `answer`.
fn location_id(answer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(answer);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("location") {
            return None;
        }
        Some(value.trim().rsplit('/').next()?.to_owned())
    })
}
