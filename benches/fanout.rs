// SPDX-License-Identifier: MPL-2.0
//! Fan-out of the call server: one 1280x720@30, ~2 Mbit/s VP8-shaped publisher and N WHEP
//! subscribers that receive but do not decode, N = 10, 50, 100, 200, 20 s each. The server
//! runs as its own process (`callserver`, release build) so that its CPU time can be read
//! from /proc; publisher and subscribers are `str0m` peers in this process, one UDP socket
//! each. Once connected, a subscriber counts the RTP packets it receives by their header
//! (sequence numbers give the loss) without decrypting them, so that one load thread can
//! keep up with 200 of them on a small machine. Everything runs inside a private network
//! namespace.
//!
//! ```text
//! cargo bench --bench fanout                 # FANOUT_N=10,50 FANOUT_SECS=5 for a quick run
//! ```
//!
//! Reference: mediasoup states ~500 consumers per worker core, so the target is at most
//! 1/500 of a core per subscriber, with less than 1 % loss at N = 200.

mod common;

use common::{Peer, RtpCount, connect, cpu_seconds};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{Direction, MediaTime};
const FPS: u64 = 30;
const FRAME_BYTES: usize = 2_000_000 / 8 / FPS as usize;

/// A VP8 key frame header (1280x720) or an inter frame, padded to the frame size.
fn frame(n: u64) -> Vec<u8> {
    let mut f = if n.is_multiple_of(60) {
        vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]
    } else {
        vec![0x51, 0x42, 0x00]
    };
    f.resize(FRAME_BYTES, (n % 251) as u8);
    f
}

struct Row {
    n: usize,
    cpu: f64,
    secs: f64,
    sent: u64,
    mean_loss: f64,
    worst_loss: f64,
    /// RTP packets per second received by all the subscribers together.
    received_per_sec: f64,
    packets_per_sec: f64,
}

fn run(server_bin: &PathBuf, n: usize, secs: f64, port: u16) -> Row {
    let mut server: Child = Command::new(server_bin)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("callserver starts");
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "callserver did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = vec![0u8; 2000];
    let mut publisher = connect(&format!("{base}/whip/bench?uid=pub"), Direction::SendOnly);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publisher.connected && Instant::now() < deadline {
        publisher.drive(&mut buf);
        std::thread::sleep(Duration::from_millis(1));
    }
    // All the subscribers join at once, the hardest case for the handshakes.
    let mut subs: Vec<Peer> = (0..n)
        .map(|_| {
            let mut peer = connect(&format!("{base}/whep/bench/pub"), Direction::RecvOnly);
            peer.light = true;
            peer
        })
        .collect();

    let mut sent = 0u64;
    let t0 = Instant::now();
    let mut next_frame = t0;
    let warmup = Duration::from_secs(2);
    let mut window: Option<(Instant, f64, u64, Vec<RtpCount>, u64)> = None;
    let packets = |base: &str| -> u64 {
        let text = ureq::get(format!("{base}/api/channels/bench"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["publishers"][0]["packets"].as_u64().unwrap_or(0)
    };
    loop {
        let now = Instant::now();
        if now >= next_frame {
            let mid = publisher.mid.unwrap();
            if let Some(w) = publisher.rtc.writer(mid) {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let time = MediaTime::from_90khz(sent * 90_000 / FPS);
                    if w.write(pt, now, time, frame(sent)).is_ok()
                        && let Some(w) = window.as_mut()
                    {
                        w.4 += 1;
                    }
                }
            }
            sent += 1;
            next_frame += Duration::from_millis(1000 / FPS);
        }
        publisher.drive(&mut buf);
        for s in subs.iter_mut() {
            s.drive(&mut buf);
        }
        let elapsed = now.duration_since(t0);
        // The window opens once every subscriber has connected (DTLS handshakes with one
        // load thread take a while at N = 200), 30 s at the most.
        let all_connected = subs.iter().all(|s| s.connected);
        if window.is_none()
            && elapsed >= warmup
            && (all_connected || elapsed >= Duration::from_secs(30))
        {
            window = Some((
                now,
                cpu_seconds(server.id()),
                packets(&base),
                subs.iter().map(|s| s.rtp).collect(),
                0,
            ));
        }
        if let Some((w0, _, _, _, _)) = &window
            && now.duration_since(*w0).as_secs_f64() >= secs
        {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let (w0, cpu0, pk0, rtp0, sent_in_window) = window.unwrap();
    let secs = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.id()) - cpu0;
    let pk = packets(&base).saturating_sub(pk0);
    // Loss over the subscribers that connected (the others are reported apart), from the RTP
    // sequence numbers each received in the window.
    let windows: Vec<(u64, u64)> = subs
        .iter()
        .zip(&rtp0)
        .filter(|(s, _)| s.connected)
        .map(|(s, r0)| {
            let received = s.rtp.packets - r0.packets;
            let expected = match (r0.highest, s.rtp.highest) {
                (Some(a), Some(b)) => b - a,
                (None, Some(_)) => received,
                _ => 0,
            };
            (received, expected)
        })
        .collect();
    let losses: Vec<f64> = windows
        .iter()
        .map(|&(received, expected)| {
            if expected == 0 {
                100.0
            } else {
                (1.0 - received as f64 / expected as f64).max(0.0) * 100.0
            }
        })
        .collect();
    let received: Vec<u64> = windows.iter().map(|w| w.0).collect();
    let _ = server.kill();
    let _ = server.wait();
    let connected = subs.iter().filter(|s| s.connected).count();
    if connected < n {
        println!("  ({connected} of {n} subscribers connected)");
    }
    Row {
        cpu,
        secs,
        sent: sent_in_window,
        n: connected,
        mean_loss: losses.iter().sum::<f64>() / connected.max(1) as f64,
        worst_loss: losses.iter().cloned().fold(0.0, f64::max),
        received_per_sec: received.iter().sum::<u64>() as f64 / secs,
        packets_per_sec: pk as f64 / secs * connected as f64,
    }
}

fn main() {
    let target = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let server_bin = target.join("callserver");
    if std::env::var_os(common::MARK).is_none() && !server_bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "callserver"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot build the callserver binary");
    }
    common::in_private_netns();
    let ns: Vec<usize> = std::env::var("FANOUT_N")
        .unwrap_or_else(|_| "10,50,100,200".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let secs: f64 = std::env::var("FANOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    println!(
        "fan-out: one 1280x720@30 publisher ({} kbit/s), N subscribers, {secs} s each, server {}",
        FRAME_BYTES * 8 * FPS as usize / 1000,
        server_bin.display()
    );
    let mut rows = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        let row = run(&server_bin, *n, secs, 18500 + i as u16);
        println!(
            "N={:>3}: server CPU {:.2} s over {:.1} s = {:.1} % of a core; per subscriber {:.5} core (1/{:.0}); \
             {:.0} RTP packets/s forwarded, {:.0} received; loss mean {:.2} % worst {:.2} % ({} frames sent)",
            row.n,
            row.cpu,
            row.secs,
            row.cpu / row.secs * 100.0,
            row.cpu / row.secs / row.n as f64,
            row.secs * row.n as f64 / row.cpu.max(1e-9),
            row.packets_per_sec,
            row.received_per_sec,
            row.mean_loss,
            row.worst_loss,
            row.sent
        );
        rows.push(row);
    }
    println!("\nN     core/subscriber   vs target (1/500)   loss mean   loss worst");
    for r in &rows {
        let per = r.cpu / r.secs / r.n as f64;
        println!(
            "{:<5} {:<17.5} {:<19.2} {:<11.2} {:.2}",
            r.n,
            per,
            per / (1.0 / 500.0),
            r.mean_loss,
            r.worst_loss
        );
    }
}
