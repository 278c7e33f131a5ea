// SPDX-License-Identifier: MPL-2.0
//! Shared by the benchmarks: str0m WebRTC peers on their own UDP sockets, negotiated over
//! WHIP/WHEP, and process CPU and memory readings from /proc.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
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
    /// Media frames received.
    pub frames: u64,
    /// When the first keyframe (the first frame a decoder can show) arrived.
    pub first_frame: Option<Instant>,
    /// Once connected, count RTP packets by their (unencrypted) header instead of handing
    /// them to str0m: a load peer that receives without decrypting or depacketizing.
    pub light: bool,
    /// RTP packets of the first stream received, counted in light mode.
    pub rtp: RtpCount,
}

/// Packets of one RTP stream, and the highest extended sequence number seen (for loss).
#[derive(Debug, Default, Clone, Copy)]
pub struct RtpCount {
    ssrc: Option<u32>,
    pub packets: u64,
    pub highest: Option<u64>,
}

impl RtpCount {
    /// Counts `packet` if it is RTP (RFC 5761 demultiplexing) of the first stream seen;
    /// returns whether it was RTP at all.
    fn count(&mut self, packet: &[u8]) -> bool {
        let rtp = packet.len() >= 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1]);
        if !rtp {
            return false;
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if *self.ssrc.get_or_insert(ssrc) != ssrc {
            // Retransmissions come on their own stream.
            return true;
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ext = match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(h) => (h as i64 + i64::from(seq.wrapping_sub(h as u16) as i16)) as u64,
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets += 1;
        true
    }
}

impl Peer {
    pub fn new(dir: Direction) -> (Peer, String, str0m::change::SdpPendingOffer) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
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
        let mut builder = Rtc::builder();
        if let Some(cert) = cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        (
            Peer {
                rtc,
                socket,
                addr,
                mid: Some(mid),
                connected: false,
                frames: 0,
                first_frame: None,
                light: false,
                rtp: RtpCount::default(),
            },
            offer.to_sdp_string(),
            pending,
        )
    }

    /// Feeds received datagrams and time, then sends what the peer wants to send.
    pub fn drive(&mut self, buf: &mut [u8]) {
        while let Ok((n, source)) = self.socket.recv_from(buf) {
            if self.light && self.connected && self.rtp.count(&buf[..n]) {
                continue;
            }
            if let Ok(contents) = buf[..n].try_into() {
                let r = Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                };
                let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        while let Ok(out) = self.rtc.poll_output() {
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(data)) => {
                    self.frames += 1;
                    if data.is_keyframe() {
                        self.first_frame.get_or_insert_with(Instant::now);
                    }
                }
                Output::Event(_) => (),
            }
        }
    }
}

pub fn post(url: &str, sdp: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .post(url)
        .header("Content-Type", "application/sdp")
        .send(sdp)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

pub fn connect(url: &str, dir: Direction) -> Peer {
    let (mut peer, offer, pending) = Peer::new(dir);
    let answer = SdpAnswer::from_sdp_string(&post(url, &offer)).unwrap();
    peer.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    peer
}
