// SPDX-License-Identifier: MPL-2.0
//! Shared by the benchmarks: str0m WebRTC peers on their own UDP sockets, negotiated over
//! WHIP/WHEP, and process CPU and memory readings from /proc.
#![allow(dead_code)]

pub mod janus;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const MARK: &str = "CUSTOMVIDEO_IN_NETNS";

/// Re-runs this benchmark inside a private network namespace (scripts/netns-run.sh) unless
/// it already runs in one; returns true when the caller is inside.
pub fn in_private_netns() -> bool {
    if std::env::var_os(MARK).is_some() {
        return true;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-run.sh");
    let status = Command::new(script)
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env(MARK, "1")
        .status()
        .expect("scripts/netns-run.sh (root) runs the benchmark in a private namespace");
    std::process::exit(status.code().unwrap_or(1));
}

/// A benchmark's child process: builds pipeline `desc` (the plugin registered), runs
/// `before_playing`, takes the wall-clock time and sets it PLAYING, hands that time to
/// `playing`, prints the pipeline's errors to standard error, and stops (NULL: a WHIP session
/// is left with DELETE) when its standard input closes.
pub fn run_child(
    desc: &str,
    before_playing: impl FnOnce(),
    playing: impl FnOnce(std::time::SystemTime),
) {
    use std::io::Read;
    gst::init().unwrap();
    gstcustomvideo::plugin_register_static().unwrap();
    let pipeline = gst::parse::launch(desc).expect("publisher pipeline");
    let bus = pipeline.bus().unwrap();
    std::thread::spawn(move || {
        for msg in bus.iter_timed(gst::ClockTime::NONE) {
            if let gst::MessageView::Error(e) = msg.view() {
                eprintln!(
                    "child: error from {:?}: {} ({:?})",
                    e.src().map(|s| s.path_string()),
                    e.error(),
                    e.debug()
                );
            }
        }
    });
    before_playing();
    let at = std::time::SystemTime::now();
    use gst::prelude::*;
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    playing(at);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let _ = pipeline.set_state(gst::State::Null);
}

/// Ends a child made by [`run_child`]: closes its standard input (it stops its pipeline and
/// exits), waits up to 5 s for it, then kills it.
pub fn end_child(child: &mut std::process::Child) {
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` for
/// none.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A positive number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &f64| n > 0.0)
        .unwrap_or(default)
}

/// user+system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// What process `pid` holds now: resident memory (MB), threads, open file descriptors.
pub fn resources(pid: u32) -> (f64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:") / 1024.0, field("Threads:") as u64, fds)
}

/// Peak resident memory of process `pid`, in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    pub mid: Option<Mid>,
    pub connected: bool,
    /// Media frames received (frame mode).
    pub frames: u64,
    /// RTP packets with the marker bit, each the last of a frame (RTP mode): the frames
    /// received.
    pub marks: u64,
    /// When the first keyframe (the first frame a decoder can show) arrived.
    pub first_frame: Option<Instant>,
    /// What crossed this peer's socket, both ways.
    pub wire: Wire,
    /// RTP mode (a load subscriber): every datagram goes through str0m, which decrypts it,
    /// sends receiver reports, TWCC feedback and NACKs, and hands over RTP packets (no
    /// depacketizing); a keyframe is asked for at the first packet.
    pub rtp_mode: bool,
    /// Drop one in this many incoming RTP packets on purpose before str0m sees them (0:
    /// none), so that the server has retransmissions to serve.
    pub drop_every: u64,
    /// RTP packets of the media stream str0m delivered (retransmissions repair the stream
    /// they belong to), by extended sequence number.
    pub delivered: Delivered,
    keyframe_asked: bool,
    /// When the peer was made (it joins: offer, answer, ICE, DTLS, first keyframe).
    pub created: Instant,
    /// The session's resource URL, to leave.
    pub resource: Option<String>,
    /// A sender: the other side asked for a keyframe (PLI/FIR) since this was last cleared.
    pub keyframe_wanted: bool,
}

/// Datagrams and bytes counted at a peer's socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wire {
    pub packets_in: u64,
    pub bytes_in: u64,
    /// RTP packets (by their header: RFC 5761 demultiplexing) received.
    pub rtp_in: u64,
    /// RTP packets sent.
    pub rtp_out: u64,
    /// Incoming RTP packets dropped on purpose.
    pub dropped: u64,
}

/// The media packets a subscriber got.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    pub packets: u64,
    pub first: Option<u64>,
    pub highest: Option<u64>,
}

/// Whether `packet` is RTP rather than RTCP, STUN or DTLS (RFC 5761, RFC 7983).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1])
}

/// Whether an RTP payload is the start of a VP8 key frame (RFC 7741 payload descriptor).
pub fn vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return false; // not the start of partition 0
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i).is_some_and(|p| p & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

impl Peer {
    /// A peer on a socket of its own; `rtp_mode` for load subscribers (see [`Peer::rtp_mode`]).
    pub fn new(dir: Direction, rtp_mode: bool) -> (Peer, String, str0m::change::SdpPendingOffer) {
        Peer::new_on(Ipv4Addr::LOCALHOST.into(), dir, rtp_mode)
    }

    /// [`Peer::new`] on address `ip`.
    pub fn new_on(
        ip: IpAddr,
        dir: Direction,
        rtp_mode: bool,
    ) -> (Peer, String, str0m::change::SdpPendingOffer) {
        let mut peer = Peer::answerer(ip, rtp_mode);
        let mut api = peer.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        peer.mid = Some(mid);
        (peer, offer.to_sdp_string(), pending)
    }

    /// A peer on a socket of its own on address `ip`, with no media yet: it takes the other
    /// side's offer (its media's mid comes with the offer).
    pub fn answerer(ip: IpAddr, rtp_mode: bool) -> Peer {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        // One certificate for all the load peers: generating one each takes longer than the
        // rest of the set-up, and the server would drop peers still waiting their turn.
        static CERT: std::sync::OnceLock<Option<str0m::config::DtlsCert>> =
            std::sync::OnceLock::new();
        let cert = CERT.get_or_init(|| {
            str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
        });
        let mut builder = Rtc::builder().set_rtp_mode(rtp_mode);
        if let Some(cert) = cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Peer {
            rtc,
            socket,
            addr,
            mid: None,
            connected: false,
            frames: 0,
            marks: 0,
            first_frame: None,
            wire: Wire::default(),
            rtp_mode,
            drop_every: 0,
            delivered: Delivered::default(),
            keyframe_asked: false,
            created: Instant::now(),
            resource: None,
            keyframe_wanted: false,
        }
    }

    /// The address of the peer's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Feeds received datagrams and time, then sends what the peer wants to send.
    pub fn drive(&mut self, buf: &mut [u8]) {
        let now = Instant::now();
        while let Ok((n, source)) = self.socket.recv_from(buf) {
            self.wire.packets_in += 1;
            self.wire.bytes_in += n as u64;
            if is_rtp(&buf[..n]) {
                self.wire.rtp_in += 1;
                if self.drop_every > 0 && self.wire.rtp_in.is_multiple_of(self.drop_every) {
                    self.wire.dropped += 1;
                    continue;
                }
            }
            if let Ok(contents) = buf[..n].try_into() {
                let r = Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                };
                // str0m wants its output taken after each input.
                if self.rtc.handle_input(Input::Receive(now, r)).is_ok() {
                    self.drain();
                }
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
    }

    /// Takes what str0m has to send and to say, until it waits for time.
    fn drain(&mut self) {
        while let Ok(out) = self.rtc.poll_output() {
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    if is_rtp(&t.contents) {
                        self.wire.rtp_out += 1;
                    }
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                // An answerer's media, from the offer.
                Output::Event(Event::MediaAdded(m)) if self.mid.is_none() => self.mid = Some(m.mid),
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_wanted = true,
                Output::Event(Event::MediaData(data)) => {
                    self.frames += 1;
                    if data.is_keyframe() {
                        self.first_frame.get_or_insert_with(Instant::now);
                    }
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let seq = *p.seq_no;
                    let d = &mut self.delivered;
                    d.packets += 1;
                    d.first.get_or_insert(seq);
                    d.highest = Some(d.highest.map_or(seq, |h| h.max(seq)));
                    if p.header.marker {
                        self.marks += 1;
                    }
                    if self.first_frame.is_none() && vp8_keyframe(&p.payload) {
                        self.first_frame = Some(Instant::now());
                    }
                    if !self.keyframe_asked {
                        // Joining: ask for a keyframe, as a decoder that starts does.
                        self.keyframe_asked = true;
                        if let Some(mid) = self.mid
                            && let Some(rx) = self.rtc.direct_api().stream_rx_by_mid(mid, None)
                        {
                            rx.request_keyframe(KeyframeRequestKind::Pli);
                        }
                    }
                }
                Output::Event(_) => (),
            }
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs an offer; returns the answer and the session's resource URL (`Location`, made
/// absolute).
pub fn post(url: &str, sdp: &str) -> (String, Option<String>) {
    let mut res = agent()
        .post(url)
        .header("Content-Type", "application/sdp")
        .send(sdp)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url::Url::parse(url).ok()?.join(l).ok())
        .map(|u| u.to_string());
    (res.body_mut().read_to_string().unwrap(), location)
}

/// GETs `url`; returns the body.
pub fn get(url: &str) -> Result<String, String> {
    agent()
        .get(url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| format!("GET {url}: {e}"))
}

/// Ends a session (DELETE on its resource URL).
pub fn delete(resource: &str) {
    let _ = agent().delete(resource).call();
}

pub fn connect(url: &str, dir: Direction) -> Peer {
    connect_as(url, dir, false)
}

/// [`connect`], in RTP mode or not.
pub fn connect_as(url: &str, dir: Direction, rtp_mode: bool) -> Peer {
    connect_on(Ipv4Addr::LOCALHOST.into(), url, dir, rtp_mode)
}

/// [`connect_as`], from a socket on address `ip`.
pub fn connect_on(ip: IpAddr, url: &str, dir: Direction, rtp_mode: bool) -> Peer {
    let (mut peer, offer, pending) = Peer::new_on(ip, dir, rtp_mode);
    let (answer, resource) = post(url, &offer);
    let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
    peer.resource = resource;
    peer.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    peer
}
