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
//!
//! Mixed links (opt-in, ours only: `FANOUT_MIX_N`, e.g. 100): a simulcast publisher (layers
//! q 320x180, h 640x360, f 1280x720 sharing 3000 kbit/s 10/25/65 % like callsink's
//! `simulcast=three`) and N subscribers of which 5 % (`FANOUT_MIX_SLOW`) sit behind a token
//! bucket of 600 kbit/s (`FANOUT_MIX_KBPS`) with a 200 ms queue (`FANOUT_MIX_QUEUE_MS`): an
//! htb class and a bfifo of their own on `lo`, chosen by a u32 filter on their socket's UDP
//! port, from before their first packet. The server estimates each subscriber's link from its
//! TWCC feedback and reads its loss from its receiver reports, which the load subscribers send
//! (str0m in RTP mode). After `FANOUT_MIX_SETTLE` s (15) from the moment all are connected, a
//! `FANOUT_MIX_SECS` s window (20): for fast and slow subscribers apart, the layer each gets
//! in every reading of `/api/channels/mix` (twice a second; the server lists subscribers in
//! the order they joined, which maps them to their sockets), frames per second (RTP marker
//! bits), loss after retransmissions and bitrate at their sockets; how long the slow ones took
//! to settle on a smaller layer; the server's CPU; and the verdict "the fast ones keep the top
//! layer at full frame rate". The publisher is by default a str0m peer in this process sending
//! VP8-shaped frames in the three layers (no encoder competes for the cores);
//! `FANOUT_MIX_PUBLISHER=callsink` publishes with `callsink simulcast=three max-bitrate=3000`
//! from a moving `customvideosrc` in a child process instead. Janus is not run: in this
//! harness it has no per-subscriber bandwidth estimate, so nothing would move its slow
//! subscribers to a smaller layer.
//!
//! ```text
//! FANOUT_N= FANOUT_CHURN_N= FANOUT_MIX_N=100 cargo bench --bench fanout   # mixed links only
//! ```

mod common;
#[path = "../tests/common/shape.rs"]
mod shape;

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
    vp8_frame(n, key, (1280, 720), FRAME_BYTES)
}

/// Frame `n` of a VP8-shaped stream of `size` pictures: a key frame header (with the size)
/// every 2 s and when `key`, else an inter frame header, padded to `bytes`.
fn vp8_frame(n: u64, key: bool, size: (u16, u16), bytes: usize) -> Vec<u8> {
    let mut f = if key || n.is_multiple_of(60) {
        let ([w0, w1], [h0, h1]) = (size.0.to_le_bytes(), size.1.to_le_bytes());
        vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, w0, w1, h0, h1]
    } else {
        vec![0x51, 0x42, 0x00]
    };
    f.resize(bytes, (n % 251) as u8);
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
    /// Frames received (RTP marker bits).
    frames: u64,
    connected: bool,
}

impl Snap {
    fn of(p: &Peer) -> Snap {
        Snap {
            wire: p.wire,
            delivered: p.delivered,
            frames: p.marks,
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
    /// The UDP port of its socket.
    port: u16,
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
                port: p.local_addr().port(),
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

/// The mixed-links case: the channel, the publisher's uid, and the variable that makes this
/// benchmark a `callsink` publisher (a child process) with that pipeline.
const MIX_CHANNEL: &str = "mix";
const MIX_UID: &str = "cam";
const MIX_CHILD: &str = "FANOUT_MIX_CHILD";
/// The simulcast publisher's bitrate, kbit/s, and its layers, smallest first: rid, size and
/// share of the bitrate, as callsink's `simulcast=three` makes them (src/callsink/mod.rs).
const MIX_KBPS: u64 = 3000;
const MIX_LAYERS: [(&str, (u16, u16), u64); 3] = [
    ("q", (320, 180), 10),
    ("h", (640, 360), 25),
    ("f", (1280, 720), 65),
];

/// Who publishes in the mixed-links case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MixPublisher {
    /// A str0m peer in this process sending VP8-shaped frames in the three layers at 30
    /// frames/s (300, 750 and 1950 kbit/s): no encoder competes for the cores.
    Synthetic,
    /// `callsink simulcast=three` in a child process (a real VP8 encoder).
    Callsink,
}

/// The mixed-links case: `n` subscribers of a simulcast publisher, `slow` of them behind a
/// token bucket of `kbps` with a queue of `queue`.
struct Mix {
    n: usize,
    slow: usize,
    kbps: u32,
    queue: Duration,
    /// From the moment every subscriber is connected to the window.
    settle: Duration,
    secs: f64,
    publisher: MixPublisher,
    threads: usize,
}

impl Mix {
    /// Whether the `i`-th subscriber to join is a slow one: spread evenly (for 5 of 100: the
    /// 11th, 31st, … 91st).
    fn is_slow(&self, i: usize) -> bool {
        (0..self.slow).any(|k| (k * self.n + self.n / 2) / self.slow == i)
    }
}

/// A subscriber as it joined.
struct Joined {
    port: u16,
    slow: bool,
    /// When its offer was made.
    at: Instant,
}

/// One reading of the channel from the server's `/api/channels/mix`.
struct Sample {
    at: Instant,
    /// Its subscribers in the order they joined (the server lists them in the order it
    /// accepted them): the layer each gets and the estimate of its link (bits/s).
    subs: Vec<(Option<String>, Option<u64>)>,
    /// The publisher's layers, smallest first: rid, size and frames so far.
    layers: Vec<(String, String, u64)>,
    /// What the publisher sends (all its layers), bits/s over the last second.
    bitrate: u64,
}

fn sample(url: &str) -> Option<Sample> {
    let body = common::get(url).ok()?;
    let c: serde_json::Value = serde_json::from_str(&body).ok()?;
    let subs = c["subscribers"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["layer"].as_str().map(str::to_owned),
                s["estimate"].as_u64(),
            )
        })
        .collect();
    let layers = c["publishers"][0]["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["rid"].as_str().unwrap_or("?").to_owned(),
                        format!("{}x{}", l["width"], l["height"]),
                        l["frames"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Sample {
        at: Instant::now(),
        subs,
        layers,
        bitrate: c["publishers"][0]["bitrate"].as_u64().unwrap_or(0),
    })
}

/// A simulcast str0m publisher on WHIP `url` (layers [`MIX_LAYERS`]), connected (10 s at
/// most).
fn simulcast_publisher(url: &str) -> Result<Peer, String> {
    use str0m::change::SdpAnswer;
    use str0m::media::{MediaKind, Simulcast, SimulcastLayer};
    let mut peer = Peer::answerer(std::net::Ipv4Addr::LOCALHOST.into(), false);
    let mut simulcast = Simulcast::new();
    for (rid, ..) in MIX_LAYERS {
        simulcast.add_send_layer(SimulcastLayer::new(rid));
    }
    let mut api = peer.rtc.sdp_api();
    let mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(simulcast),
    );
    let (offer, pending) = api.apply().ok_or("no offer")?;
    peer.mid = Some(mid);
    let (answer, resource) = common::post(url, &offer.to_sdp_string());
    peer.resource = resource;
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
    peer.rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 2000];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peer.connected && Instant::now() < deadline {
        peer.drive(&mut buf);
        std::thread::sleep(Duration::from_millis(1));
    }
    if peer.connected {
        Ok(peer)
    } else {
        Err("the simulcast publisher did not connect".into())
    }
}

/// Frame `n` of every layer, from the synthetic publisher (key frames in all layers when the
/// server asked for one).
fn write_layers(publisher: &mut Peer, n: u64, now: Instant) {
    let Some(mid) = publisher.mid else { return };
    let key = std::mem::take(&mut publisher.keyframe_wanted);
    let time = MediaTime::from_90khz(n * 90_000 / FPS);
    for (rid, size, share) in MIX_LAYERS {
        let Some(w) = publisher.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return;
        };
        let bytes = (MIX_KBPS * 1000 * share / 100 / 8 / FPS) as usize;
        let _ = w.rid(str0m::media::Rid::from(rid)).write(
            pt,
            now,
            time,
            vp8_frame(n, key, size, bytes),
        );
    }
}

/// The `callsink` publisher, a child process, stopped when dropped (its standard input
/// closed, so that it leaves with DELETE; killed after 5 s).
struct Publishing(Child);

impl Publishing {
    fn start(base: &str) -> Result<Publishing, String> {
        let desc = format!(
            "customvideosrc producer=\"videotestsrc is-live=true pattern=smpte \
             horizontal-speed=4\" framerate=30/1 width=1280 height=720 ! callsink \
             server={base} channel={MIX_CHANNEL} uid={MIX_UID} simulcast=three \
             max-bitrate={MIX_KBPS}"
        );
        Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .env(MIX_CHILD, desc)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map(Publishing)
            .map_err(|e| format!("callsink publisher: {e}"))
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        common::end_child(&mut self.0);
    }
}

/// Adds one to `key`'s count.
fn count(counts: &mut Vec<(String, usize)>, key: &str) {
    match counts.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 += 1,
        None => counts.push((key.to_owned(), 1)),
    }
}

/// One group of subscribers (fast or slow) over the window.
#[derive(Default)]
struct Group {
    n: usize,
    connected: usize,
    /// Those on the same layer in every reading of the window, by layer.
    steady: Vec<(String, usize)>,
    /// Those whose layer changed in the window (or that had none), by the layers they went
    /// through ("q>h").
    changed: Vec<(String, usize)>,
    /// Those on a layer below the top one in every reading of the window.
    below: usize,
    /// Frames per second, loss (%, after retransmissions) and kbit/s at the socket.
    fps: Vec<f64>,
    loss: Vec<f64>,
    kbps: Vec<f64>,
    /// The server's estimates of their links at the window's end, bits/s.
    estimates: Vec<u64>,
    /// Loss (%, after retransmissions) from the first packet to the end of the window.
    run_loss: Vec<f64>,
    /// From the offer until the layer stayed below the top one (none: it did not); layer
    /// switches over the run.
    settled: Vec<Option<Duration>>,
    switches: Vec<usize>,
}

impl Group {
    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    fn min(v: &[f64]) -> f64 {
        v.iter().cloned().fold(f64::INFINITY, f64::min)
    }

    fn max(v: &[f64]) -> f64 {
        v.iter().cloned().fold(0.0, f64::max)
    }

    /// "95 on f, 1 changed".
    fn layers(&self) -> String {
        let mut parts: Vec<String> = self
            .steady
            .iter()
            .map(|(rid, k)| format!("{k} on {rid}"))
            .collect();
        parts.extend(
            self.changed
                .iter()
                .map(|(path, k)| format!("{k} moved {path}")),
        );
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }

    /// Whether all of them were on layer `rid` throughout the window.
    fn all_on(&self, rid: &str) -> bool {
        self.n > 0 && self.steady.iter().any(|(r, k)| r == rid && *k == self.n)
    }
}

/// Loss (%) over the window from the media packets str0m delivered to a subscriber against
/// its sequence numbers; all of it for one that had nothing when the window opened.
fn window_loss(c: &Counted) -> f64 {
    let (Some(a), b) = (&c.start, &c.end) else {
        return 100.0;
    };
    match (a.delivered.highest, b.delivered.highest) {
        (Some(h0), Some(h1)) if h1 > h0 && b.connected => {
            let got = b.delivered.packets - a.delivered.packets;
            (1.0 - got as f64 / (h1 - h0) as f64).max(0.0) * 100.0
        }
        _ => 100.0,
    }
}

/// One run of the mixed-links case (our server only); prints what it measured.
fn run_mix(server_bin: &Path, port: u16, mix: &Mix) -> Result<(), String> {
    let settings = JanusSettings {
        event_loops: 0,
        debug: 0,
    };
    let server = Running::start(Kind::Ours, server_bin, port, settings)?;
    let Running::Ours(_, base) = &server else {
        unreachable!()
    };
    let base = base.clone();
    let channel_url = format!("{base}/api/channels/{MIX_CHANNEL}");
    let (mut publisher, child) = match mix.publisher {
        MixPublisher::Synthetic => (
            Some(simulcast_publisher(&format!(
                "{base}/whip/{MIX_CHANNEL}?uid={MIX_UID}"
            ))?),
            None,
        ),
        MixPublisher::Callsink => (None, Some(Publishing::start(&base)?)),
    };
    let links = std::sync::Mutex::new(shape::SlowLinks::new()?);
    let phase = AtomicU8::new(WARMUP);
    let connected = AtomicUsize::new(0);
    let me = std::process::id();
    let child_pid = child.as_ref().map(|c| c.0.id());
    let n = mix.n;
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let handles: Vec<_> = (0..mix.threads)
            .map(|_| {
                let (phase, connected) = (&phase, &connected);
                let (tx, rx) = mpsc::channel();
                senders.push(tx);
                scope.spawn(move || drive_subscribers(phase, connected, rx))
            })
            .collect();
        // The server's view of the channel, twice a second, until the run is done.
        let poller = {
            let (phase, url) = (&phase, &channel_url);
            scope.spawn(move || {
                let mut samples = vec![];
                while phase.load(Ordering::Acquire) != DONE {
                    samples.extend(sample(url));
                    std::thread::sleep(Duration::from_millis(500));
                }
                samples
            })
        };
        // Once the server sees the three layers (a keyframe of each, 20 s at the most), the
        // subscribers join one after the other; a slow one's socket gets its token bucket
        // before anything is sent to it.
        let joiner = {
            let (senders, links, base, url) = (senders.clone(), &links, &base, &channel_url);
            scope.spawn(move || -> Result<Vec<Joined>, String> {
                let start = Instant::now();
                let sized = |s: &Sample| {
                    s.layers.len() == MIX_LAYERS.len()
                        && s.layers.iter().all(|l| !l.1.contains("null"))
                };
                while !sample(url).is_some_and(|s| sized(&s)) {
                    if start.elapsed() > Duration::from_secs(20) {
                        return Err(format!(
                            "the server does not list the publisher's three layers: {:?}",
                            sample(url).map(|s| s.layers)
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let whep = format!("{base}/whep/{MIX_CHANNEL}/{MIX_UID}");
                let mut joined = Vec::with_capacity(n);
                for i in 0..n {
                    let peer = connect_as(&whep, Direction::RecvOnly, true);
                    let port = peer.local_addr().port();
                    let slow = mix.is_slow(i);
                    if slow {
                        links.lock().unwrap().limit(&[port], mix.kbps, mix.queue)?;
                    }
                    joined.push(Joined {
                        port,
                        slow,
                        at: peer.created,
                    });
                    let _ = senders[i % senders.len()].send(Cmd::Join(Box::new(peer), false));
                }
                Ok(joined)
            })
        };
        let mut buf = vec![0u8; 2000];
        let t0 = Instant::now();
        let (mut sent, mut next_frame) = (0u64, t0);
        let mut all_at: Option<Instant> = None;
        // (opened, server CPU, load CPU, publisher CPU, datagrams the buckets dropped)
        let mut window: Option<(Instant, f64, f64, f64, u64)> = None;
        // How late the synthetic publisher wrote a frame at worst in the window.
        let mut lag = Duration::ZERO;
        let mut joiner = Some(joiner);
        let mut joined = None;
        let result = loop {
            let now = Instant::now();
            if let Some(p) = publisher.as_mut() {
                if now >= next_frame {
                    if window.is_some() {
                        lag = lag.max(now.duration_since(next_frame));
                    }
                    write_layers(p, sent, now);
                    sent += 1;
                    next_frame += Duration::from_nanos(1_000_000_000 / FPS);
                }
                p.drive(&mut buf);
            }
            if joiner.as_ref().is_some_and(|j| j.is_finished()) {
                match joiner.take().unwrap().join().unwrap() {
                    Ok(j) => joined = Some(j),
                    Err(e) => break Err(e),
                }
            }
            // Settling starts once every subscriber is connected (60 s at the most).
            let all = joined.is_some() && connected.load(Ordering::Relaxed) >= n;
            if all_at.is_none() && (all || now.duration_since(t0) >= Duration::from_secs(60)) {
                all_at = Some(now);
            }
            if window.is_none() && all_at.is_some_and(|a| now >= a + mix.settle) {
                window = Some((
                    now,
                    cpu_seconds(server.pid()),
                    cpu_seconds(me),
                    child_pid.map_or(0.0, cpu_seconds),
                    links.lock().unwrap().dropped(),
                ));
                phase.store(WINDOW, Ordering::Release);
            }
            if let Some((w0, ..)) = window
                && now.duration_since(w0).as_secs_f64() >= mix.secs
            {
                break Ok(());
            }
            std::thread::sleep(Duration::from_micros(if publisher.is_some() {
                500
            } else {
                5000
            }));
        };
        let last = sample(&channel_url);
        let window = window.map(|(w0, cpu0, load0, pub0, drop0)| {
            let dropped = links.lock().unwrap().dropped();
            MixWindow {
                w0,
                secs: w0.elapsed().as_secs_f64(),
                cpu: cpu_seconds(server.pid()) - cpu0,
                load_cpu: cpu_seconds(me) - load0,
                publisher_cpu: child_pid.map(|pid| cpu_seconds(pid) - pub0),
                publisher_lag: publisher.is_some().then_some(lag),
                dropped: dropped - drop0,
                dropped_run: dropped,
            }
        });
        phase.store(DONE, Ordering::Release);
        drop(senders);
        let mut results: Vec<Counted> = Vec::new();
        for h in handles {
            results.extend(h.join().unwrap().subs);
        }
        let mut samples = poller.join().unwrap();
        samples.extend(last);
        if let Some(j) = joiner {
            joined = j.join().unwrap().ok();
        }
        result?;
        let (Some(window), Some(joined)) = (window, joined) else {
            return Err("the window never opened".into());
        };
        report_mix(&joined, &results, &samples, &window);
        Ok(())
    })
}

/// What the mixed-links run measured over its window, besides the subscribers.
struct MixWindow {
    w0: Instant,
    secs: f64,
    /// CPU seconds of the server, the load client (this process) and the `callsink`
    /// publisher.
    cpu: f64,
    load_cpu: f64,
    publisher_cpu: Option<f64>,
    /// How late the synthetic publisher wrote a frame at worst.
    publisher_lag: Option<Duration>,
    /// Datagrams the slow links' queues dropped in the window, and over the run.
    dropped: u64,
    dropped_run: u64,
}

/// Prints the mixed-links run: the table, the slow subscribers' settling, the verdict.
fn report_mix(joined: &[Joined], results: &[Counted], samples: &[Sample], w: &MixWindow) {
    let (w0, secs) = (w.w0, w.secs);
    let in_window: Vec<&Sample> = samples.iter().filter(|s| s.at >= w0).collect();
    let (first, last) = (in_window.first(), in_window.last());
    // The publisher's layers at the server over the window.
    let layer_fps: Vec<(String, String, f64)> = match (first, last) {
        (Some(a), Some(b)) if b.at > a.at => b
            .layers
            .iter()
            .map(|(rid, size, f1)| {
                let f0 = a.layers.iter().find(|l| &l.0 == rid).map_or(0, |l| l.2);
                let fps = (f1 - f0) as f64 / b.at.duration_since(a.at).as_secs_f64();
                (rid.clone(), size.clone(), fps)
            })
            .collect(),
        _ => vec![],
    };
    let top = layer_fps.last().map_or("f".to_owned(), |l| l.0.clone());
    let top_fps = layer_fps.last().map_or(FPS as f64, |l| l.2);
    let listed = last.map_or(0, |s| s.subs.len());
    if listed != joined.len() {
        println!(
            "note: the server lists {listed} subscribers, {} joined: the layers by order of \
             joining are not reliable",
            joined.len()
        );
    }
    let mut groups = [Group::default(), Group::default()];
    for c in results {
        let Some(k) = joined.iter().position(|j| j.port == c.port) else {
            continue;
        };
        let j = &joined[k];
        let g = &mut groups[usize::from(j.slow)];
        g.n += 1;
        g.connected += usize::from(c.end.connected);
        let start = c.start.unwrap_or_default();
        g.fps.push((c.end.frames - start.frames) as f64 / secs);
        g.loss.push(window_loss(c));
        g.run_loss.push(match c.end.delivered {
            Delivered {
                packets,
                first: Some(f),
                highest: Some(h),
            } => (1.0 - packets as f64 / (h - f + 1) as f64).max(0.0) * 100.0,
            _ => 100.0,
        });
        g.kbps
            .push((c.end.wire.bytes_in - start.wire.bytes_in) as f64 * 8.0 / secs / 1000.0);
        let layer = |s: &Sample| s.subs.get(k).and_then(|l| l.0.clone());
        let seen: Vec<Option<String>> = in_window.iter().map(|s| layer(s)).collect();
        let mut path: Vec<&str> = seen
            .iter()
            .map(|l| l.as_deref().unwrap_or("none"))
            .collect();
        path.dedup();
        match path[..] {
            [rid] if rid != "none" => count(&mut g.steady, rid),
            _ => count(&mut g.changed, &path.join(">")),
        }
        if !seen.is_empty() && seen.iter().all(|l| l.as_deref().is_some_and(|r| r != top)) {
            g.below += 1;
        }
        g.estimates
            .extend(last.and_then(|s| s.subs.get(k)).and_then(|l| l.1));
        // Settled: from the first reading after the last one on the top layer (or none),
        // when the last reading has it below.
        let run: Vec<(Instant, Option<String>)> =
            samples.iter().map(|s| (s.at, layer(s))).collect();
        let on_top = |l: &Option<String>| l.as_deref().is_none_or(|r| r == top);
        g.settled.push(match run.last() {
            Some((_, l)) if !on_top(l) => {
                let i = run
                    .iter()
                    .rposition(|(_, l)| on_top(l))
                    .map_or(0, |i| i + 1);
                Some(run[i].0.saturating_duration_since(j.at))
            }
            _ => None,
        });
        let layers: Vec<&String> = run.iter().filter_map(|(_, l)| l.as_ref()).collect();
        g.switches
            .push(layers.windows(2).filter(|w| w[0] != w[1]).count());
    }
    for g in groups.iter_mut() {
        g.steady.sort_by_key(|e| std::cmp::Reverse(e.1));
    }
    let [fast, slow] = &groups;
    println!(
        "publisher's layers at the server over the window: {}; {:.2} Mbit/s in all (mean of \
         the readings)",
        layer_fps
            .iter()
            .map(|(rid, size, fps)| format!("{rid} {size} {fps:.1} fps"))
            .collect::<Vec<_>>()
            .join(", "),
        in_window.iter().map(|s| s.bitrate as f64).sum::<f64>()
            / in_window.len().max(1) as f64
            / 1e6
    );
    println!(
        "\ngroup  subscribers  connected  layer throughout the window  fps mean  fps min  loss \
         mean  loss worst  kbit/s mean  estimate min/median"
    );
    for (name, g) in [("fast", fast), ("slow", slow)] {
        let mut est = g.estimates.clone();
        est.sort();
        println!(
            "{name:<6} {:<12} {:<10} {:<28} {:<9.2} {:<8.2} {:<10} {:<11} {:<12.0} {}",
            g.n,
            g.connected,
            g.layers(),
            Group::mean(&g.fps),
            Group::min(&g.fps),
            format!("{:.2} %", Group::mean(&g.loss)),
            format!("{:.2} %", Group::max(&g.loss)),
            Group::mean(&g.kbps),
            match (est.first(), est.get(est.len() / 2)) {
                (Some(lo), Some(mid)) => format!(
                    "{:.0}/{:.0} kbit/s",
                    *lo as f64 / 1000.0,
                    *mid as f64 / 1000.0
                ),
                _ => "-".into(),
            },
        );
    }
    let mut by_layer: Vec<(String, usize)> = Vec::new();
    for (l, _) in last.map_or(&[][..], |s| &s.subs[..]) {
        let rid = l.clone().unwrap_or_else(|| "none".into());
        match by_layer.iter_mut().find(|(r, _)| *r == rid) {
            Some(e) => e.1 += 1,
            None => by_layer.push((rid, 1)),
        }
    }
    by_layer.sort_by_key(|e| std::cmp::Reverse(e.1));
    // An estimate comes only from the subscriber's TWCC feedback.
    let estimated = last.map_or(0, |s| s.subs.iter().filter(|l| l.1.is_some()).count());
    println!(
        "the server lists at the window's end (whatever the order): {}; {estimated} with an \
         estimate of their link (from their TWCC feedback)",
        by_layer
            .iter()
            .map(|(r, k)| format!("{k} on {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "slow subscribers: on a smaller layer for good {} after their offer; layer switches \
         over the run {:?}; loss while settling (from their first packet to the window's end) {}; their token buckets dropped \
         {} datagrams over the run, {} in the window",
        slow.settled
            .iter()
            .map(|s| s.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())))
            .collect::<Vec<_>>()
            .join(", "),
        slow.switches,
        slow.run_loss
            .iter()
            .map(|l| format!("{l:.1} %"))
            .collect::<Vec<_>>()
            .join(", "),
        w.dropped_run,
        w.dropped,
    );
    let fast_switches = fast.switches.iter().filter(|&&k| k > 0).count();
    if fast_switches > 0 {
        println!(
            "fast subscribers whose layer changed during the run: {fast_switches} (switches: \
             {:?})",
            fast.switches.iter().filter(|&&k| k > 0).collect::<Vec<_>>()
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "server CPU {:.2} s over {secs:.1} s = {:.1} % of a core ({cores} cores); load client \
         {:.1} % of a core{}{}",
        w.cpu,
        w.cpu / secs * 100.0,
        w.load_cpu / secs * 100.0,
        w.publisher_cpu.map_or(String::new(), |c| format!(
            "; callsink publisher {:.1} % of a core",
            c / secs * 100.0
        )),
        w.publisher_lag.map_or(String::new(), |l| format!(
            "; the synthetic publisher wrote its frames at most {} ms late",
            l.as_millis()
        )),
    );
    let full = top_fps * 0.95;
    let fast_ok = fast.all_on(&top)
        && fast.connected == fast.n
        && Group::min(&fast.fps) >= full
        && Group::max(&fast.loss) < 1.0;
    let slow_below = slow.n > 0 && slow.below == slow.n;
    println!(
        "verdict: the fast ones keep the top layer at full frame rate: {} (fast: {}/{} on {top} \
         throughout, mean {:.1} fps, min {:.1} fps against the layer's {:.1} at the server, loss \
         mean {:.2} % worst {:.2} %; slow: {}, mean {:.1} fps, min {:.1} fps, loss mean {:.2} %); \
         the slow ones on a smaller layer throughout the window: {}",
        if fast_ok { "yes" } else { "NO" },
        fast.steady
            .iter()
            .find(|(r, _)| *r == top)
            .map_or(0, |e| e.1),
        fast.n,
        Group::mean(&fast.fps),
        Group::min(&fast.fps),
        top_fps,
        Group::mean(&fast.loss),
        Group::max(&fast.loss),
        slow.layers(),
        Group::mean(&slow.fps),
        Group::min(&slow.fps),
        Group::mean(&slow.loss),
        if slow_below { "yes" } else { "NO" },
    );
}

fn main() {
    if let Ok(desc) = std::env::var(MIX_CHILD) {
        common::run_child(&desc, || (), |_| ());
        return;
    }
    let target = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let server_bin = target.join("callserver");
    if std::env::var_os(common::MARK).is_none() && stale(&server_bin) {
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
    // Mixed links (opt-in): a simulcast publisher, a share of the subscribers behind a slow
    // link; ours only.
    let mix_ns = list("FANOUT_MIX_N", "");
    if !mix_ns.is_empty() && !servers.contains(&Kind::Ours) {
        println!(
            "\nmixed links: FANOUT_MIX_N runs with our server only, which FANOUT_SERVERS leaves out"
        );
    }
    let publisher = match std::env::var("FANOUT_MIX_PUBLISHER").as_deref() {
        Ok("callsink") => MixPublisher::Callsink,
        _ => MixPublisher::Synthetic,
    };
    for (i, n) in mix_ns.iter().enumerate() {
        if !servers.contains(&Kind::Ours) {
            break;
        }
        let share = common::env_number("FANOUT_MIX_SLOW", 5.0);
        let mix = Mix {
            n: *n,
            slow: ((*n as f64 * share / 100.0).round() as usize).clamp(1, *n),
            kbps: common::env_number("FANOUT_MIX_KBPS", 600.0) as u32,
            queue: Duration::from_millis(common::env_number("FANOUT_MIX_QUEUE_MS", 200.0) as u64),
            settle: Duration::from_secs_f64(common::env_number("FANOUT_MIX_SETTLE", 15.0)),
            secs: common::env_number("FANOUT_MIX_SECS", 20.0),
            publisher,
            threads,
        };
        println!(
            "\nmixed links, ours only (Janus has no per-subscriber bandwidth estimate in this \
             harness: nothing would move its slow subscribers to a smaller layer): {}; N={}, {} \
             of them behind {} kbit/s each (htb class + {} ms bfifo, u32 filter on the \
             subscriber's UDP port), {:.0} s to settle once all are connected, then a {:.0} s \
             window",
            match mix.publisher {
                MixPublisher::Synthetic => format!(
                    "a str0m simulcast publisher, VP8-shaped 1280x720 + 640x360 + 320x180 at {FPS} \
                     frames/s, {MIX_KBPS} kbit/s shared 65/25/10 % like callsink's \
                     (FANOUT_MIX_PUBLISHER=callsink for a real encoder)"
                ),
                MixPublisher::Callsink => format!(
                    "callsink simulcast=three max-bitrate={MIX_KBPS}, 1280x720@30 moving smpte \
                     from customvideosrc, in a child process"
                ),
            },
            mix.n,
            mix.slow,
            mix.kbps,
            mix.queue.as_millis(),
            mix.settle.as_secs_f64(),
            mix.secs,
        );
        if let Err(e) = run_mix(&server_bin, 18700 + i as u16, &mix) {
            println!("mixed links N={n}: {e}");
        }
    }
}

/// Whether `bin` is missing or older than a file of the crate's sources (`src/`, `vendor/`,
/// `Cargo.toml`): then it is built again before the run.
fn stale(bin: &std::path::Path) -> bool {
    fn newest(path: &std::path::Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| newest(&e.ok()?.path()))
            .max()
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return true;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    ["src", "vendor", "Cargo.toml"]
        .iter()
        .filter_map(|p| newest(&root.join(p)))
        .any(|t| t > built)
}
