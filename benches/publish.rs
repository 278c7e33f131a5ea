// SPDX-License-Identifier: MPL-2.0
//! Publishing cost, side by side in one run, into the same call server on loopback: a
//! 1280x720@30 VP8 track of moving bars (`videotestsrc pattern=smpte horizontal-speed=4`,
//! ~2 Mbit/s) published by `callsink` and by the plain webrtcbin publisher
//! `tests/peers/whip_publish.py` with the same encoder settings. For each: CPU seconds per
//! 30 s, peak RSS, and the time to the first keyframe at a WHEP subscriber that joins as soon
//! as the publisher is listed. Runs inside a private network namespace.
//!
//! The callsink publisher is this benchmark run again as a child process (a GStreamer
//! application with the plugin, nothing else); it reports when its pipeline goes to PLAYING,
//! so the first frame is timed both from the process start (as for the reference) and from
//! PLAYING. It runs twice per round: started as soon as it is built (as `gst-launch-1.0`
//! does), and built a second ahead (as an application that prepares its call does). The
//! difference is the DTLS key: GStreamer's DTLS elements make a new RSA key once per process
//! (0.1 to 0.6 s of CPU here); callsink starts making it when it is created, so it is ready by
//! the time an application that built its pipeline ahead starts it. The publishers take
//! turns, `PUBLISH_ROUNDS` times each, in the order A B C C B A …, so that none gets a warmer
//! machine; the figures compared are the medians.
//!
//! ```text
//! cargo bench --bench publish        # PUBLISH_SECS=10 PUBLISH_ROUNDS=1 for a quicker run
//! ```

mod common;

use common::{Peer, connect, cpu_seconds, env_number, median, peak_rss_mb};
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use str0m::media::Direction;

const SOURCE: &str = "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1";
/// The encoder settings callsink uses for this track (src/callsink/codec.rs: real-time CBR
/// with the rate-control buffer of WebRTC's own VP8 encoder, keyframes every 2 s), given to
/// the reference too so that both publish the same bitstream and the comparison is of the
/// publishing machinery. With plain VBR settings (`vp8enc deadline=1 cpu-used=4
/// target-bitrate=2000000`) the encoder executes about 12 % fewer instructions for this source
/// (callgrind, 60 frames).
const VP8ENC: &str = "deadline=1 cpu-used=4 end-usage=cbr lag-in-frames=0 target-bitrate=2000000 \
     keyframe-max-dist=60 error-resilient=default buffer-size=1000 buffer-initial-size=500 \
     buffer-optimal-size=600";
/// Set in the child process: the pipeline description it publishes with.
const CHILD: &str = "PUBLISH_CHILD_PIPELINE";
/// Set in the child process when it builds its pipeline a second before starting it.
const CHILD_AHEAD: &str = "PUBLISH_CHILD_AHEAD";

#[derive(Clone, Copy, PartialEq)]
enum Publisher {
    /// A callsink pipeline started as soon as it is built, as gst-launch-1.0 does.
    CallSink,
    /// A callsink pipeline built a second before it starts, as an application that prepares
    /// its call does.
    CallSinkAhead,
    /// The reference publisher, tests/peers/whip_publish.py: plain webrtcbin.
    Reference,
}

impl Publisher {
    fn name(self) -> &'static str {
        match self {
            Publisher::CallSink => "callsink",
            Publisher::CallSinkAhead => "callsink-ahead",
            Publisher::Reference => "whip_publish.py",
        }
    }

    fn is_callsink(self) -> bool {
        self != Publisher::Reference
    }

    fn command(self, server: &CallServer, uid: &str) -> Command {
        match self {
            Publisher::CallSink | Publisher::CallSinkAhead => {
                let mut cmd = Command::new(std::env::current_exe().unwrap());
                if self == Publisher::CallSinkAhead {
                    cmd.env(CHILD_AHEAD, "1");
                }
                cmd.env(
                    CHILD,
                    format!(
                        "{SOURCE} ! callsink server={} channel=bench uid={uid} codec=vp8 \
                         max-bitrate=2000 min-bitrate=2000",
                        server.url()
                    ),
                );
                cmd
            }
            Publisher::Reference => {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/whip_publish.py");
                let mut cmd = Command::new("/usr/bin/python3");
                cmd.args([
                    script,
                    "-q",
                    "-u",
                    &format!("{}?uid={uid}", server.whip_url("bench")),
                    "--local-ip",
                    "127.0.0.1",
                    "-V",
                    &format!("{SOURCE} ! queue ! vp8enc {VP8ENC} ! rtpvp8pay pt=96 ssrc=2 picture-id-mode=15-bit mtu=1200 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"),
                ]);
                cmd
            }
        }
    }
}

struct Measure {
    cpu_per_30s: f64,
    rss_mb: f64,
    /// From the process start.
    first_frame: Option<Duration>,
    /// From the pipeline going to PLAYING, when the publisher says when that was.
    first_frame_from_playing: Option<Duration>,
    bitrate: u64,
}

/// Starts publisher `who` as `uid`, subscribes as soon as it is listed, measures.
fn measure(server: &CallServer, who: Publisher, uid: &str, secs: f64) -> Measure {
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let mut child: Child = who
        .command(server, uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("publisher starts");
    let (playing_tx, playing_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ns) = line.strip_prefix("playing ").and_then(|n| n.parse().ok()) {
                let _ = playing_tx.send(UNIX_EPOCH + Duration::from_nanos(ns));
            }
        }
    });
    let listed = |server: &CallServer| {
        server
            .channels()
            .into_iter()
            .flat_map(|c| c.publishers)
            .find(|p| p.uid == uid)
    };
    while listed(server).is_none() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut sub: Peer = connect(&server.whep_url("bench", uid), Direction::RecvOnly);
    let mut buf = vec![0u8; 2000];
    while sub.first_frame.is_none() && start.elapsed() < Duration::from_secs(20) {
        sub.drive(&mut buf);
        std::thread::sleep(Duration::from_millis(1));
    }
    let first_frame = sub.first_frame.map(|t| t.duration_since(start));
    drop(sub);
    let first_frame_from_playing = playing_rx.try_recv().ok().and_then(|playing| {
        let at = start_wall + first_frame?;
        at.duration_since(playing).ok()
    });
    // Warm-up, then the measured window.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    let cpu0 = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu = cpu_seconds(child.id()) - cpu0;
    let bitrate = listed(server).map(|p| p.bitrate).unwrap_or(0);
    let rss_mb = peak_rss_mb(child.id());
    // The callsink child stops when its input closes, the reference on SIGINT; both send their
    // WHIP DELETE. Then make sure they are gone.
    if !who.is_callsink() {
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
    }
    common::end_child(&mut child);
    Measure {
        cpu_per_30s: cpu * 30.0 / secs,
        rss_mb,
        first_frame,
        first_frame_from_playing,
        bitrate,
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{} ms", d.as_millis()))
        .unwrap_or_else(|| "never".into())
}

fn print(name: &str, m: &Measure) {
    println!(
        "{name:>15}: {:.2} CPU-s per 30 s ({:.0} % of a core), peak RSS {:.0} MB, {:.2} Mbit/s, first keyframe at the subscriber {} after the process start{}",
        m.cpu_per_30s,
        m.cpu_per_30s / 30.0 * 100.0,
        m.rss_mb,
        m.bitrate as f64 / 1e6,
        ms(m.first_frame),
        m.first_frame_from_playing
            .map(|d| format!(", {} ms after PLAYING", d.as_millis()))
            .unwrap_or_default(),
    );
}

fn main() {
    if let Ok(desc) = std::env::var(CHILD) {
        // Says on standard output when its pipeline went to PLAYING (nanoseconds since the
        // Unix epoch).
        common::run_child(
            &desc,
            || {
                if std::env::var_os(CHILD_AHEAD).is_some() {
                    std::thread::sleep(Duration::from_secs(1));
                }
            },
            |at| {
                println!(
                    "playing {}",
                    at.duration_since(UNIX_EPOCH).unwrap().as_nanos()
                )
            },
        );
        return;
    }
    common::in_private_netns();
    gst::init().unwrap();
    let secs = env_number("PUBLISH_SECS", 30.0);
    let rounds = env_number("PUBLISH_ROUNDS", 2.0) as usize;
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server");
    println!(
        "publish 1280x720@30 VP8 (moving bars, 2 Mbit/s), {secs} s window, {rounds} round(s) each\nvp8enc {VP8ENC}"
    );

    let mut results: Vec<(Publisher, Measure)> = Vec::new();
    for round in 0..rounds {
        let mut order = [
            Publisher::CallSink,
            Publisher::Reference,
            Publisher::CallSinkAhead,
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        for who in order {
            let m = measure(&server, who, &format!("{}-{round}", who.name()), secs);
            print(who.name(), &m);
            results.push((who, m));
        }
    }

    // Both callsink variants run the same pipeline once started: CPU and memory are theirs
    // together.
    let of = |who: Publisher| {
        results
            .iter()
            .filter(move |(p, _)| *p == who || (who.is_callsink() && p.is_callsink()))
    };
    let cpu = |who| median(of(who).map(|(_, m)| m.cpu_per_30s)).unwrap_or(0.0);
    let rss = |who| median(of(who).map(|(_, m)| m.rss_mb)).unwrap_or(0.0);
    // A publisher that never delivered a frame counts as infinitely late.
    let first = |who, f: fn(&Measure) -> Option<Duration>| {
        let runs = results.iter().filter(|(p, _)| *p == who);
        median(runs.map(|(_, m)| f(m).map_or(f64::INFINITY, |d| d.as_secs_f64())))
            .filter(|s| s.is_finite())
            .map(Duration::from_secs_f64)
    };
    println!("medians");
    for who in [Publisher::CallSink, Publisher::Reference] {
        println!(
            "{:>15}: {:.2} CPU-s per 30 s, peak RSS {:.0} MB",
            who.name(),
            cpu(who),
            rss(who),
        );
    }
    for who in [
        Publisher::CallSink,
        Publisher::CallSinkAhead,
        Publisher::Reference,
    ] {
        println!(
            "{:>15}: first keyframe at the subscriber {} after the process start{}",
            who.name(),
            ms(first(who, |m| m.first_frame)),
            first(who, |m| m.first_frame_from_playing)
                .map(|d| format!(", {} ms after PLAYING", d.as_millis()))
                .unwrap_or_default()
        );
    }
    println!(
        "ratio callsink/whip_publish.py CPU: {:.2} (target <= 1.0); callsink peak RSS {:.0} MB (target < 80); callsink first keyframe {} after PLAYING, {} when built ahead (target < 300 ms)",
        cpu(Publisher::CallSink) / cpu(Publisher::Reference).max(1e-9),
        rss(Publisher::CallSink),
        ms(first(Publisher::CallSink, |m| m.first_frame_from_playing)),
        ms(first(Publisher::CallSinkAhead, |m| m.first_frame_from_playing)),
    );
}
