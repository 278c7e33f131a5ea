// SPDX-License-Identifier: MPL-2.0
//! Fan-out of the call server: one 1280x720@30, ~2 Mbit/s VP8-shaped publisher and N WHEP
//! subscribers, N = 10, 50, 100, 200, 20 s each. The server runs as its own process
//! (`callserver`, release build) so that its CPU time can be read from /proc; publisher and
//! subscribers are `str0m` peers in this process (the load client, whose CPU is reported
//! apart), one UDP socket each, the subscribers driven by `FANOUT_LOAD_THREADS` threads (2).
//!
//! The subscribers are honest receivers: every datagram goes through str0m in RTP mode, which
//! decrypts SRTP and sends receiver reports, TWCC feedback and NACKs for what is missing;
//! each asks for a keyframe (PLI) at its first packet. One in twenty drops 2 % of its RTP
//! packets on purpose before str0m sees them, so the server also serves retransmissions.
//! Counted at the subscribers' sockets: datagrams and bits per second (the server's egress).
//! Loss per subscriber: the media packets str0m delivered (retransmissions repair their
//! stream) against its sequence numbers over the window; a subscriber that had nothing when
//! the window opened was due everything the publisher put on the wire in the window, one that
//! never connected lost everything. Everything runs inside a private network namespace.
//!
//! ```text
//! cargo bench --bench fanout                 # FANOUT_N=10,50 FANOUT_SECS=5 for a quick run
//! ```
//!
//! Reference: mediasoup states ~500 consumers per worker core, so the target is at most
//! 1/500 of a core per subscriber, with less than 1 % loss at N = 200.

mod common;

use common::{Delivered, Peer, Wire, connect, connect_as, cpu_seconds, delete};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{Direction, MediaTime};
const FPS: u64 = 30;
const FRAME_BYTES: usize = 2_000_000 / 8 / FPS as usize;

/// A VP8 key frame header (1280x720) or an inter frame, padded to the frame size: a key
/// frame every 2 s, and when asked for one.
fn frame(n: u64, key: bool) -> Vec<u8> {
    let mut f = if key || n.is_multiple_of(60) {
        vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]
    } else {
        vec![0x51, 0x42, 0x00]
    };
    f.resize(FRAME_BYTES, (n % 251) as u8);
    f
}

struct Row {
    n: usize,
    /// Churn: subscribers that joined in the window, those that got no keyframe, and the
    /// time from a joiner's offer to its first keyframe.
    joins: usize,
    no_keyframe: usize,
    join_p50: Option<Duration>,
    join_p99: Option<Duration>,
    connected: usize,
    /// Server CPU seconds in the window.
    cpu: f64,
    /// The load client's (this process's) CPU seconds in the window.
    load_cpu: f64,
    secs: f64,
    /// RTP packets the publisher put on the wire in the window.
    published: u64,
    mean_loss: f64,
    worst_loss: f64,
    /// How many subscribers drop packets on purpose, and their mean loss after
    /// retransmissions.
    dropping: usize,
    dropping_loss: Option<f64>,
    /// Packets those subscribers dropped.
    dropped: u64,
    /// Datagrams and bits per second that reached the subscribers' sockets.
    packets_per_sec: f64,
    bits_per_sec: f64,
}

/// What a load subscriber counted at the window's start and end.
#[derive(Clone, Copy, Default)]
struct Snap {
    wire: Wire,
    delivered: Delivered,
    connected: bool,
}

impl Snap {
    fn of(p: &Peer) -> Snap {
        Snap {
            wire: p.wire,
            delivered: p.delivered,
            connected: p.connected,
        }
    }
}

/// Phases of a run, as the load threads see them.
const WARMUP: u8 = 0;
const WINDOW: u8 = 1;
const DONE: u8 = 2;

/// What a load thread is told during a run (churn).
enum Cmd {
    /// A subscriber that has just sent its offer: drive it from now on.
    Join(Box<Peer>),
    /// Leave (DELETE) this many of the oldest subscribers.
    Leave(usize),
}

/// One subscriber's counts: at the window's start (none if it joined later) and end.
struct Counted {
    start: Option<Snap>,
    end: Snap,
    drops: bool,
}

/// What a load thread measured: the subscribers there at the end, and the time from each
/// churn joiner's offer to its first keyframe (none: it got none).
struct Driven {
    subs: Vec<Counted>,
    joins: Vec<Option<Duration>>,
}

/// Drives `subs` (and those that join) until the run is done.
fn drive_subscribers(
    subs: Vec<Peer>,
    phase: &AtomicU8,
    connected: &AtomicUsize,
    cmds: mpsc::Receiver<Cmd>,
) -> Driven {
    let mut buf = vec![0u8; 2000];
    // (peer, counts at the window's start, joined by churn)
    let mut subs: Vec<(Peer, Option<Snap>, bool)> =
        subs.into_iter().map(|p| (p, None, false)).collect();
    let mut started = false;
    let mut joins = Vec::new();
    let join_time = |p: &Peer| p.first_frame.map(|f| f.duration_since(p.created));
    loop {
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                Cmd::Join(p) => subs.push((*p, None, true)),
                Cmd::Leave(k) => {
                    for (p, _, joined) in subs.drain(..k.min(subs.len())) {
                        if joined {
                            joins.push(join_time(&p));
                        }
                        if p.connected {
                            connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        if let Some(r) = &p.resource {
                            delete(r);
                        }
                    }
                }
            }
        }
        for (s, _, _) in subs.iter_mut() {
            let was = s.connected;
            s.drive(&mut buf);
            if s.connected && !was {
                connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        match phase.load(Ordering::Acquire) {
            WINDOW if !started => {
                started = true;
                for (p, start, _) in subs.iter_mut() {
                    *start = Some(Snap::of(p));
                }
            }
            DONE => break,
            _ => (),
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    joins.extend(subs.iter().filter(|s| s.2).map(|s| join_time(&s.0)));
    Driven {
        subs: subs
            .into_iter()
            .map(|(p, start, _)| Counted {
                start,
                end: Snap::of(&p),
                drops: p.drop_every > 0,
            })
            .collect(),
        joins,
    }
}

/// The callserver process, killed when the run ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Between two rounds of churn, and the share of the subscribers that leave (and as many that
/// join) in each.
const CHURN_EVERY: Duration = Duration::from_secs(10);
const CHURN_SHARE: usize = 10;

/// One run of `n` subscribers; with `churn`, a tenth of them leave and as many join every
/// 10 s of the window.
fn run(server_bin: &PathBuf, n: usize, secs: f64, port: u16, threads: usize, churn: bool) -> Row {
    let server = Server(
        Command::new(server_bin)
            .args(["--port", &port.to_string()])
            // Every load subscriber comes from 127.0.0.1, all joining at once.
            .args(["--max-connecting", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("callserver starts"),
    );
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
    // All the subscribers join at once, the hardest case for the handshakes; one in twenty
    // drops 2 % of its packets.
    let subs: Vec<Peer> = (0..n)
        .map(|i| {
            let mut peer = connect_as(&format!("{base}/whep/bench/pub"), Direction::RecvOnly, true);
            if i % 20 == 10 {
                peer.drop_every = 50;
            }
            peer
        })
        .collect();
    let phase = AtomicU8::new(WARMUP);
    let connected = AtomicUsize::new(0);
    let me = std::process::id();
    let mut chunks: Vec<Vec<Peer>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in subs.into_iter().enumerate() {
        chunks[i % threads].push(s);
    }
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (phase, connected) = (&phase, &connected);
                let (tx, rx) = mpsc::channel();
                senders.push(tx);
                scope.spawn(move || drive_subscribers(chunk, phase, connected, rx))
            })
            .collect();
        let mut next_churn = None;
        let mut sent = 0u64;
        let t0 = Instant::now();
        let mut next_frame = t0;
        let warmup = Duration::from_secs(2);
        // (opened, server CPU, load CPU, publisher RTP out) at the window's start.
        let mut window: Option<(Instant, f64, f64, u64)> = None;
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
                        let key = std::mem::take(&mut publisher.keyframe_wanted);
                        let _ = w.write(pt, now, time, frame(sent, key));
                    }
                }
                sent += 1;
                next_frame += Duration::from_millis(1000 / FPS);
            }
            publisher.drive(&mut buf);
            let elapsed = now.duration_since(t0);
            // The window opens once every subscriber has connected, 30 s at the most.
            let all = connected.load(Ordering::Relaxed) >= n;
            if window.is_none() && elapsed >= warmup && (all || elapsed >= Duration::from_secs(30))
            {
                window = Some((
                    now,
                    cpu_seconds(server.0.id()),
                    cpu_seconds(me),
                    publisher.wire.rtp_out,
                ));
                phase.store(WINDOW, Ordering::Release);
                next_churn = churn.then(|| now + CHURN_EVERY);
            }
            // The last round leaves its joiners 5 s to get their first keyframe.
            let ends = window.map(|w| w.0 + Duration::from_secs_f64(secs));
            if let Some(at) = next_churn
                && now >= at
                && ends.is_some_and(|e| now + Duration::from_secs(5) <= e)
            {
                next_churn = Some(at + CHURN_EVERY);
                let k = n / CHURN_SHARE;
                for (i, tx) in senders.iter().enumerate() {
                    let _ = tx.send(Cmd::Leave(k / threads + usize::from(i < k % threads)));
                }
                // The joiners' offers go out from a thread of their own: the publisher keeps
                // its pace.
                let (senders, url) = (senders.clone(), format!("{base}/whep/bench/pub"));
                scope.spawn(move || {
                    for i in 0..k {
                        let peer = connect_as(&url, Direction::RecvOnly, true);
                        let _ = senders[i % senders.len()].send(Cmd::Join(Box::new(peer)));
                    }
                });
            }
            if let Some((w0, ..)) = &window
                && now.duration_since(*w0).as_secs_f64() >= secs
            {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let (w0, cpu0, load0, rtp0) = window.unwrap();
        let secs = w0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(server.0.id()) - cpu0;
        let load_cpu = cpu_seconds(me) - load0;
        let published = publisher.wire.rtp_out - rtp0;
        phase.store(DONE, Ordering::Release);
        drop(senders);
        let mut results: Vec<Counted> = Vec::new();
        let mut joins: Vec<Option<Duration>> = Vec::new();
        for h in handles {
            let driven = h.join().unwrap();
            results.extend(driven.subs);
            joins.extend(driven.joins);
        }
        drop(server);
        // Loss from the media packets str0m delivered to each subscriber (retransmissions
        // included) against its sequence numbers over the window (from its first packet for
        // one that joined in the window); a subscriber that had nothing when the window
        // opened was due everything the publisher sent in it, and one that never connected
        // lost everything.
        let loss = |c: &Counted| -> f64 {
            let zero = Snap::default();
            let (a, b) = (c.start.as_ref().unwrap_or(&zero), &c.end);
            let expected = match (c.start.is_some(), a.delivered.highest, b.delivered) {
                (
                    true,
                    Some(h0),
                    Delivered {
                        highest: Some(h1), ..
                    },
                ) => h1 - h0,
                (
                    false,
                    _,
                    Delivered {
                        first: Some(f),
                        highest: Some(h1),
                        ..
                    },
                ) => h1 - f + 1,
                _ => published,
            };
            if !b.connected || expected == 0 {
                return 100.0;
            }
            let got = b.delivered.packets - a.delivered.packets;
            (1.0 - got as f64 / expected as f64).max(0.0) * 100.0
        };
        let losses: Vec<f64> = results.iter().map(loss).collect();
        let dropping: Vec<f64> = results.iter().filter(|c| c.drops).map(loss).collect();
        let sum = |f: &dyn Fn(&Wire) -> u64| -> u64 {
            results
                .iter()
                .map(|c| f(&c.end.wire) - c.start.map_or(0, |a| f(&a.wire)))
                .sum()
        };
        let mut join_times: Vec<Duration> = joins.iter().flatten().copied().collect();
        join_times.sort();
        let at = |q: f64| {
            (!join_times.is_empty())
                .then(|| join_times[((join_times.len() - 1) as f64 * q).round() as usize])
        };
        Row {
            n,
            joins: joins.len(),
            no_keyframe: joins.iter().filter(|j| j.is_none()).count(),
            join_p50: at(0.5),
            join_p99: at(0.99),
            connected: results.iter().filter(|c| c.end.connected).count(),
            cpu,
            load_cpu,
            secs,
            published,
            mean_loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
            worst_loss: losses.iter().cloned().fold(0.0, f64::max),
            dropping: dropping.len(),
            dropping_loss: (!dropping.is_empty())
                .then(|| dropping.iter().sum::<f64>() / dropping.len() as f64),
            dropped: sum(&|w| w.dropped),
            packets_per_sec: sum(&|w| w.packets_in) as f64 / secs,
            bits_per_sec: sum(&|w| w.bytes_in) as f64 * 8.0 / secs,
        }
    })
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
    let threads: usize = std::env::var("FANOUT_LOAD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let mut rows = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        let r = run(&server_bin, *n, secs, 18500 + i as u16, threads, false);
        println!(
            "N={:>3} ({} connected): server CPU {:.2} s over {:.1} s = {:.1} % of a core, 1/{:.0} \
             of a core per subscriber; load client {:.1} % of a core ({threads} threads); at the \
             subscribers' sockets {:.0} datagrams/s, {:.1} Mbit/s; publisher sent {} RTP packets; \
             loss mean {:.2} % worst {:.2} %; the {} subscribers dropping 2 % on purpose ({} \
             packets) lost {:.2} % after retransmissions",
            r.n,
            r.connected,
            r.cpu,
            r.secs,
            r.cpu / r.secs * 100.0,
            r.secs * r.n as f64 / r.cpu.max(1e-9),
            r.load_cpu / r.secs * 100.0,
            r.packets_per_sec,
            r.bits_per_sec / 1e6,
            r.published,
            r.mean_loss,
            r.worst_loss,
            r.dropping,
            r.dropped,
            r.dropping_loss.unwrap_or(0.0),
        );
        rows.push(r);
    }
    println!(
        "\nN     core/subscriber   vs target (1/500)   egress Mbit/s   loss mean   loss worst   load client"
    );
    for r in &rows {
        let per = r.cpu / r.secs / r.n as f64;
        println!(
            "{:<5} 1/{:<15.0} {:<19.2} {:<15.1} {:<11.2} {:<12.2} {:.1} % of a core",
            r.n,
            1.0 / per.max(1e-9),
            per / (1.0 / 500.0),
            r.bits_per_sec / 1e6,
            r.mean_loss,
            r.worst_loss,
            r.load_cpu / r.secs * 100.0
        );
    }
    // Churn: a tenth of the subscribers leave and as many join every 10 s.
    let churn_ns: Vec<usize> = std::env::var("FANOUT_CHURN_N")
        .unwrap_or_else(|_| "200".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let churn_secs: f64 = std::env::var("FANOUT_CHURN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    for (i, n) in churn_ns.iter().enumerate() {
        let r = run(&server_bin, *n, churn_secs, 18600 + i as u16, threads, true);
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
        println!(
            "\nchurn, N={} for {:.0} s, {} % leaving and joining every {} s: {} joined, first \
             keyframe after the offer p50 {} p99 {}, {} without a keyframe by the end; server 1/{:.0} \
             of a core per subscriber ({:.1} % of a core); loss mean {:.2} % worst {:.2} %; {:.1} \
             Mbit/s at the subscribers' sockets",
            r.n,
            r.secs,
            100 / CHURN_SHARE,
            CHURN_EVERY.as_secs(),
            r.joins,
            ms(r.join_p50),
            ms(r.join_p99),
            r.no_keyframe,
            r.secs * r.n as f64 / r.cpu.max(1e-9),
            r.cpu / r.secs * 100.0,
            r.mean_loss,
            r.worst_loss,
            r.bits_per_sec / 1e6
        );
    }
}
