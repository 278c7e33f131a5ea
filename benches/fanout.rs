// SPDX-License-Identifier: MPL-2.0
//! Fan-out of the call server, side by side with Janus: one 1280x720@30, ~2 Mbit/s VP8-shaped
//! publisher and N subscribers, N = 50, 100, 200, 400, 20 s each, first with our server, then
//! with Janus (same publisher, same load client, same window). Our server runs as its own
//! process (`callserver`, release build) so that its CPU time can be read from /proc; Janus is
//! Debian's Janus 1.1 VideoRoom run by `scripts/janus.sh up` (its process's CPU time only,
//! not that of the WHIP server in front of it, which only signals the publisher). Publisher
//! and subscribers are `str0m` peers in this process (the load client, whose CPU is reported
//! apart), one UDP socket each, the subscribers driven by `FANOUT_LOAD_THREADS` threads (2).
//!
//! Signalling: ours is WHIP for the publisher and WHEP for the subscribers; Janus's publisher
//! comes in over WHIP (Meetecho's simple-whip-server), its subscribers are VideoRoom
//! subscribers signalled through Janus's HTTP API (session, handle, `join` as a subscriber to
//! the publisher, Janus's offer, `start` with the answer; leaving destroys the session).
//! Janus's settings: room `bitrate = 0`, `fir_freq = 10`, VP8, no STUN/TURN, `debug_level = 3`
//! (`FANOUT_JANUS_DEBUG`), `event_loops` = the machine's cores (`FANOUT_JANUS_EVENT_LOOPS`; 0
//! for Janus's default, a thread per PeerConnection), sessions that never time out.
//!
//! The subscribers are honest receivers: every datagram goes through str0m in RTP mode, which
//! decrypts SRTP and sends receiver reports, TWCC feedback and NACKs for what is missing;
//! each asks for a keyframe (PLI) at its first packet. One in twenty drops 2 % of its RTP
//! packets on purpose before str0m sees them, so the server also serves retransmissions.
//! Counted at the subscribers' sockets: datagrams and bits per second (the server's egress).
//! Loss per subscriber: the media packets str0m delivered (retransmissions repair their
//! stream) against its sequence numbers over the window; a subscriber that had nothing when
//! the window opened was due everything the publisher put on the wire in the window, one that
//! never connected lost everything. Join time: from a subscriber's offer (ours) or the creation
//! of its Janus session to its first keyframe. Everything runs inside a private network
//! namespace.
//!
//! ```text
//! cargo bench --bench fanout    # FANOUT_N=10,50 FANOUT_SECS=5 FANOUT_CHURN_N=50 for a quick run
//! FANOUT_SERVERS=ours cargo bench --bench fanout      # ours only (also when Janus is missing)
//! ```
//!
//! The churn variant (`FANOUT_CHURN_N`, 200; `FANOUT_CHURN_SECS`, 30) runs for each server
//! too: a tenth of the subscribers leave and as many join every 10 s.
//!
//! Reference: mediasoup states ~500 consumers per worker core, so the target is at most
//! 1/500 of a core per subscriber, with less than 1 % loss at N = 200.

mod common;

use common::janus::{self, Janus};
use common::{Delivered, Peer, Wire, connect_as, connect_on, cpu_seconds, delete};
use std::path::Path;
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
    server: Kind,
    n: usize,
    /// The subscribers there from the start: the time from each one's offer (ours) or the
    /// creation of its Janus session to its first keyframe, and those that got none.
    init_p50: Option<Duration>,
    init_p99: Option<Duration>,
    init_no_keyframe: usize,
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

/// What a load thread is told during a run.
enum Cmd {
    /// A subscriber that has just been signalled: drive it from now on (true: a churn joiner,
    /// false: one of the initial subscribers).
    Join(Box<Peer>, bool),
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
/// subscriber's offer to its first keyframe (none: it got none), with whether it was a churn
/// joiner.
struct Driven {
    subs: Vec<Counted>,
    joins: Vec<(bool, Option<Duration>)>,
}

/// Ends a subscriber's session: WHEP DELETE (ours) or destroying its Janus session.
fn leave(resource: &str) {
    if resource.starts_with(janus::API) {
        janus::leave(resource);
    } else {
        delete(resource);
    }
}

/// Drives the subscribers that join until the run is done.
fn drive_subscribers(
    phase: &AtomicU8,
    connected: &AtomicUsize,
    cmds: mpsc::Receiver<Cmd>,
) -> Driven {
    let mut buf = vec![0u8; 2000];
    // (peer, counts at the window's start, joined by churn)
    let mut subs: Vec<(Peer, Option<Snap>, bool)> = Vec::new();
    let mut started = false;
    let mut joins = Vec::new();
    let join_time = |p: &Peer| p.first_frame.map(|f| f.duration_since(p.created));
    loop {
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                Cmd::Join(p, churn) => subs.push((*p, None, churn)),
                Cmd::Leave(k) => {
                    for (p, _, joined) in subs.drain(..k.min(subs.len())) {
                        joins.push((joined, join_time(&p)));
                        if p.connected {
                            connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        if let Some(r) = &p.resource {
                            leave(r);
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
    joins.extend(subs.iter().map(|s| (s.2, join_time(&s.0))));
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

/// The servers compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    Janus,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Janus => "janus",
        }
    }
}

/// How Janus runs: shared event loops (0: Janus's default, a thread per PeerConnection) and
/// its log level.
#[derive(Clone, Copy)]
struct JanusSettings {
    event_loops: usize,
    debug: u32,
}

/// A server under test, running while this lives.
enum Running {
    Ours(Server, String),
    Janus(Janus),
}

impl Running {
    fn start(
        kind: Kind,
        server_bin: &Path,
        port: u16,
        settings: JanusSettings,
    ) -> Result<Running, String> {
        match kind {
            Kind::Ours => {
                let server = Server(
                    Command::new(server_bin)
                        .args(["--port", &port.to_string()])
                        // Every load subscriber comes from 127.0.0.1, all joining at once.
                        .args(["--max-connecting", "1000"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("callserver: {e}"))?,
                );
                let start = Instant::now();
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err("callserver did not start".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Running::Ours(server, format!("http://127.0.0.1:{port}")))
            }
            Kind::Janus => Janus::start(settings.event_loops, settings.debug).map(Running::Janus),
        }
    }

    /// The server's process, whose CPU time is counted.
    fn pid(&self) -> u32 {
        match self {
            Running::Ours(s, _) => s.0.id(),
            Running::Janus(j) => j.pid,
        }
    }

    /// The publisher, connected (10 s at most).
    fn publisher(&self) -> Peer {
        let mut publisher = match self {
            Running::Ours(_, base) => connect_as(
                &format!("{base}/whip/bench?uid=pub"),
                Direction::SendOnly,
                false,
            ),
            Running::Janus(_) => {
                connect_on(janus::VETH, janus::WHIP_URL, Direction::SendOnly, false)
            }
        };
        let mut buf = vec![0u8; 2000];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !publisher.connected && Instant::now() < deadline {
            publisher.drive(&mut buf);
            std::thread::sleep(Duration::from_millis(1));
        }
        publisher
    }

    /// How a load subscriber joins: WHEP (ours) or a VideoRoom subscriber to the publisher
    /// (Janus, once the publisher is in the room).
    fn subscriber(&self) -> Result<Subscribe, String> {
        Ok(match self {
            Running::Ours(_, base) => Subscribe::Whep(format!("{base}/whep/bench/pub")),
            Running::Janus(j) => Subscribe::Janus(j.publisher(Duration::from_secs(10))?),
        })
    }
}

/// How a load subscriber joins.
#[derive(Clone)]
enum Subscribe {
    /// WHEP to this URL.
    Whep(String),
    /// VideoRoom subscriber to this publisher.
    Janus(u64),
}

impl Subscribe {
    fn join(&self) -> Option<Peer> {
        match self {
            Subscribe::Whep(url) => Some(connect_as(url, Direction::RecvOnly, true)),
            Subscribe::Janus(feed) => janus::subscribe(*feed, true)
                .inspect_err(|e| eprintln!("janus subscriber: {e}"))
                .ok(),
        }
    }
}

/// Between two rounds of churn, and the share of the subscribers that leave (and as many that
/// join) in each.
const CHURN_EVERY: Duration = Duration::from_secs(10);
const CHURN_SHARE: usize = 10;

/// The `q` quantile of sorted `times`.
fn quantile(times: &[Duration], q: f64) -> Option<Duration> {
    (!times.is_empty()).then(|| times[((times.len() - 1) as f64 * q).round() as usize])
}

/// One run of `n` subscribers of server `kind`; with `churn`, a tenth of them leave and as
/// many join every 10 s of the window.
#[allow(clippy::too_many_arguments)]
fn run(
    kind: Kind,
    server_bin: &Path,
    n: usize,
    secs: f64,
    port: u16,
    threads: usize,
    churn: bool,
    settings: JanusSettings,
) -> Result<Row, String> {
    let server = Running::start(kind, server_bin, port, settings)?;
    let mut buf = vec![0u8; 2000];
    let mut publisher = server.publisher();
    if !publisher.connected {
        return Err(format!("{}: the publisher did not connect", kind.name()));
    }
    let subscribe = server.subscriber()?;
    let phase = AtomicU8::new(WARMUP);
    let connected = AtomicUsize::new(0);
    let me = std::process::id();
    Ok(std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (phase, connected) = (&phase, &connected);
                let (tx, rx) = mpsc::channel();
                senders.push(tx);
                scope.spawn(move || drive_subscribers(phase, connected, rx))
            })
            .collect();
        // All the subscribers join at once (one after the other, as fast as the signalling
        // goes, each driven as soon as it is signalled), the hardest case for the handshakes;
        // one in twenty drops 2 % of its packets. From a thread of their own: the publisher
        // keeps its pace.
        {
            let (senders, subscribe) = (senders.clone(), subscribe.clone());
            scope.spawn(move || {
                for i in 0..n {
                    if let Some(mut peer) = subscribe.join() {
                        if i % 20 == 10 {
                            peer.drop_every = 50;
                        }
                        let _ = senders[i % senders.len()].send(Cmd::Join(Box::new(peer), false));
                    }
                }
            });
        }
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
                    cpu_seconds(server.pid()),
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
                let (senders, subscribe) = (senders.clone(), subscribe.clone());
                scope.spawn(move || {
                    for i in 0..k {
                        if let Some(peer) = subscribe.join() {
                            let _ =
                                senders[i % senders.len()].send(Cmd::Join(Box::new(peer), true));
                        }
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
        let cpu = cpu_seconds(server.pid()) - cpu0;
        let load_cpu = cpu_seconds(me) - load0;
        let published = publisher.wire.rtp_out - rtp0;
        phase.store(DONE, Ordering::Release);
        drop(senders);
        let mut results: Vec<Counted> = Vec::new();
        let mut joins: Vec<(bool, Option<Duration>)> = Vec::new();
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
        // lost everything; one that never joined (its signalling failed) is not counted.
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
        let times = |churned: bool| {
            let mut t: Vec<Duration> = joins
                .iter()
                .filter(|j| j.0 == churned)
                .filter_map(|j| j.1)
                .collect();
            t.sort();
            t
        };
        let (init, churned) = (times(false), times(true));
        let count = |churned: bool, none: bool| {
            joins
                .iter()
                .filter(|j| j.0 == churned && (!none || j.1.is_none()))
                .count()
        };
        Row {
            server: kind,
            n,
            init_p50: quantile(&init, 0.5),
            init_p99: quantile(&init, 0.99),
            init_no_keyframe: count(false, true),
            joins: count(true, false),
            no_keyframe: count(true, true),
            join_p50: quantile(&churned, 0.5),
            join_p99: quantile(&churned, 0.99),
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
    }))
}

/// "123 ms", or "-".
fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

/// Server CPU per subscriber, as a share of a core.
fn per_subscriber(r: &Row) -> f64 {
    r.cpu / r.secs / r.n as f64
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
    let list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .filter(|&n| n > 0)
            .collect()
    };
    let ns = list("FANOUT_N", "50,100,200,400");
    let secs = common::env_number("FANOUT_SECS", 20.0);
    let threads = common::env_number("FANOUT_LOAD_THREADS", 2.0) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = JanusSettings {
        // Janus's janus.jcfg: a static number of event loops instead of a thread per
        // PeerConnection, for many PeerConnections; as many as cores.
        event_loops: std::env::var("FANOUT_JANUS_EVENT_LOOPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cores),
        debug: std::env::var("FANOUT_JANUS_DEBUG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    };
    let mut servers: Vec<Kind> = std::env::var("FANOUT_SERVERS")
        .unwrap_or_else(|_| "ours,janus".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "ours" => Some(Kind::Ours),
            "janus" => Some(Kind::Janus),
            _ => None,
        })
        .collect();
    if servers.contains(&Kind::Janus)
        && let Err(e) = janus::installed()
    {
        println!("Janus is not installed, so only our server runs ({e})");
        servers.retain(|k| *k != Kind::Janus);
    }
    println!(
        "fan-out: one 1280x720@30 publisher ({} kbit/s), N subscribers, {secs} s each, servers: \
         {}; ours {}",
        FRAME_BYTES * 8 * FPS as usize / 1000,
        servers
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        server_bin.display()
    );
    if servers.contains(&Kind::Janus) {
        println!(
            "janus: Debian's Janus 1.1 VideoRoom (publisher over simple-whip-server, subscribers \
             over Janus's HTTP API), room bitrate = 0, fir_freq = 10, VP8, event_loops = {} ({}), \
             debug_level = {}, no STUN/TURN",
            settings.event_loops,
            if settings.event_loops == 0 {
                "a thread per PeerConnection, Janus's default".to_owned()
            } else {
                format!("{cores} cores")
            },
            settings.debug
        );
    }
    let mut rows: Vec<Row> = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        for &kind in &servers {
            let r = match run(
                kind,
                &server_bin,
                *n,
                secs,
                18500 + i as u16,
                threads,
                false,
                settings,
            ) {
                Ok(r) => r,
                Err(e) => {
                    println!("{} N={n}: {e}", kind.name());
                    continue;
                }
            };
            println!(
                "{} N={:>3} ({} connected): server CPU {:.2} s over {:.1} s = {:.1} % of a core, \
                 1/{:.0} of a core per subscriber; load client {:.1} % of a core ({threads} \
                 threads); at the subscribers' sockets {:.0} datagrams/s, {:.1} Mbit/s; publisher \
                 sent {} RTP packets; loss mean {:.2} % worst {:.2} %; the {} subscribers dropping \
                 2 % on purpose ({} packets) lost {:.2} % after retransmissions; first keyframe \
                 p50 {} p99 {} ({} without)",
                kind.name(),
                r.n,
                r.connected,
                r.cpu,
                r.secs,
                r.cpu / r.secs * 100.0,
                1.0 / per_subscriber(&r).max(1e-9),
                r.load_cpu / r.secs * 100.0,
                r.packets_per_sec,
                r.bits_per_sec / 1e6,
                r.published,
                r.mean_loss,
                r.worst_loss,
                r.dropping,
                r.dropped,
                r.dropping_loss.unwrap_or(0.0),
                ms(r.init_p50),
                ms(r.init_p99),
                r.init_no_keyframe,
            );
            rows.push(r);
        }
    }
    println!(
        "\nN     server  connected  core/subscriber  egress Mbit/s  datagrams/s  loss mean  loss \
         worst  join p50  join p99  load client"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<5} {:<7} {:<10} 1/{:<14.0} {:<14.1} {:<12.0} {:<10.2} {:<10.2} {:<9} {:<9} {:.0} % \
             of a core",
            r.n,
            r.server.name(),
            r.connected,
            1.0 / per_subscriber(r).max(1e-9),
            r.bits_per_sec / 1e6,
            r.packets_per_sec,
            r.mean_loss,
            r.worst_loss,
            ms(r.init_p50),
            ms(r.init_p99),
            r.load_cpu / r.secs * 100.0
        );
        let ours = i.checked_sub(1).map(|p| &rows[p]).filter(|o| o.n == r.n);
        if let (Kind::Janus, Some(o)) = (r.server, ours) {
            println!(
                "{:<5} ours/janus: CPU per subscriber {:.2}, egress {:.2}",
                r.n,
                per_subscriber(o) / per_subscriber(r).max(1e-12),
                o.bits_per_sec / r.bits_per_sec.max(1e-9)
            );
        }
    }
    println!("(join: from the offer (ours) or the Janus session's creation to the first keyframe)");
    // Churn: a tenth of the subscribers leave and as many join every 10 s.
    let churn_secs = common::env_number("FANOUT_CHURN_SECS", 30.0);
    for (i, n) in list("FANOUT_CHURN_N", "200").iter().enumerate() {
        for &kind in &servers {
            let r = match run(
                kind,
                &server_bin,
                *n,
                churn_secs,
                18600 + i as u16,
                threads,
                true,
                settings,
            ) {
                Ok(r) => r,
                Err(e) => {
                    println!("{} churn N={n}: {e}", kind.name());
                    continue;
                }
            };
            println!(
                "\n{} churn, N={} for {:.0} s, {} % leaving and joining every {} s: {} joined, \
                 first keyframe after the offer p50 {} p99 {}, {} without a keyframe by the end; \
                 server 1/{:.0} of a core per subscriber ({:.1} % of a core); loss mean {:.2} % \
                 worst {:.2} %; {:.1} Mbit/s at the subscribers' sockets",
                kind.name(),
                r.n,
                r.secs,
                100 / CHURN_SHARE,
                CHURN_EVERY.as_secs(),
                r.joins,
                ms(r.join_p50),
                ms(r.join_p99),
                r.no_keyframe,
                1.0 / per_subscriber(&r).max(1e-9),
                r.cpu / r.secs * 100.0,
                r.mean_loss,
                r.worst_loss,
                r.bits_per_sec / 1e6
            );
        }
    }
}
