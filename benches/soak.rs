// SPDX-License-Identifier: MPL-2.0
//! Soak: one call held for minutes. A callsink publisher (`gst-launch-1.0` with this build of
//! the plugin, a process of its own) sends a 640x360@30 track into the call server (the
//! `callserver` binary, a process of its own), watched by three viewers: the viewer page in
//! headless Chromium, gst-plugins-rs `whepclientsrc` and a plain webrtcbin WHEP viewer (both
//! in this process). Prints callsink's reconnects, each viewer's freezes (pauses over 1 s)
//! and frames, and the memory, threads and open files of the server and the publisher a
//! minute into the call and at its end.
//!
//! With `--kill-server-every SECS` the server is killed (SIGKILL) that often and started
//! again on the same port at once; the benchmark prints how long callsink took to publish
//! again and the viewers to show pictures again (p50, max). The WHEP viewers' sessions die
//! with the server: they are made anew once the publisher is back, as an application would.
//!
//! ```text
//! cargo bench --bench soak -- [--minutes 10] [--kill-server-every SECS]
//! ```
//!
//! Targets (without kills): 0 reconnects, 0 freezes, RSS growth under 5 MB, no growth in
//! threads or open files. Runs inside a private network namespace.

mod common;
#[path = "../tests/common/mod.rs"]
mod harness;

use harness::browser::Browser;
use harness::callserver::{ServerProcess, free_port};
use harness::peers::Viewer;
use harness::{epoch_ms, wait_for};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHANNEL: &str = "soak";
const UID: &str = "cam";
const SEC: Duration = Duration::from_secs(1);
/// When the first resource reading is taken: the processes have set up by then.
const WARM_UP: Duration = Duration::from_secs(60);

struct Args {
    minutes: f64,
    kill_every: Option<Duration>,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        kill_every: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => a.minutes = it.next().and_then(|v| v.parse().ok()).expect("--minutes N"),
            "--kill-server-every" => {
                a.kill_every = it
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|s| *s > 0.0)
                    .map(Duration::from_secs_f64)
            }
            // cargo bench passes --bench.
            "--bench" => (),
            other => panic!("unknown argument {other}: use --minutes N, --kill-server-every SECS"),
        }
    }
    a
}

/// The publishing process and what it reported.
struct Publisher {
    child: Child,
    /// callsink's connection states, with when they were printed.
    states: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Publisher {
    fn start(server: &str) -> Publisher {
        let mut child = Command::new("gst-launch-1.0")
            .args([
                "-m",
                "customvideosrc",
                "producer=videotestsrc is-live=true pattern=ball",
                "framerate=30/1",
                "width=640",
                "height=360",
                "!",
                "callsink",
                &format!("server={server}"),
                &format!("channel={CHANNEL}"),
                &format!("uid={UID}"),
            ])
            .env("GST_PLUGIN_PATH", harness::build::plugin_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 runs");
        let states: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let s = states.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line
                    .split("callsink-connection-state, state=(string)")
                    .nth(1)
                {
                    let state = rest.trim_end_matches(';').trim().to_owned();
                    s.lock().unwrap().push((Instant::now(), state));
                }
            }
        });
        Publisher { child, states }
    }

    fn count(&self, state: &str) -> usize {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s == state)
            .count()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The WHEP viewers of this process.
fn whep_viewers(server: &ServerProcess) -> Vec<Viewer> {
    let url = server.whep_url(CHANNEL, UID);
    let mut v = vec![Viewer::whepclientsrc(&url)];
    match Viewer::webrtcbin(&url) {
        Ok(w) => v.push(w),
        Err(e) => panic!("webrtcbin viewer: {e}"),
    }
    v
}

fn main() {
    common::in_private_netns();
    let args = args();
    harness::init();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let mut server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let publisher = Publisher::start(&server.url());
    assert!(
        wait_for(30 * SEC, || server.frames(CHANNEL, UID) > 30),
        "the publisher never published"
    );
    let mut viewers = whep_viewers(&server);
    let page = Browser::start();
    page.open(&server.viewer_url(CHANNEL));
    assert!(
        wait_for(30 * SEC, || page.viewer_state(UID)["framesPresented"]
            .as_u64()
            .unwrap_or(0)
            > 10),
        "the viewer page shows nothing: {}",
        page.viewer_state(UID)
    );
    // Counted from here: the call's window.
    let server_frames0 = server.frames(CHANNEL, UID);
    let page_frames0 = page.viewer_state(UID)["framesPresented"]
        .as_u64()
        .unwrap_or(0);
    let start = Instant::now();
    println!(
        "soak: {:.1} min, 640x360@30 VP8 from callsink, {}",
        args.minutes,
        match args.kill_every {
            Some(k) => format!("server killed every {} s", k.as_secs_f64()),
            None => "server left alone".into(),
        }
    );

    let mut first_reading: Option<[(f64, u64, u64); 2]> = None;
    let read = |server: &ServerProcess, publisher: &Publisher| {
        [
            server.pid().map(common::resources).unwrap_or_default(),
            common::resources(publisher.child.id()),
        ]
    };
    let mut next_kill = args.kill_every.map(|k| start + k);
    let (mut republish, mut page_back, mut whep_back) = (vec![], vec![], vec![]);
    // Frames of viewers replaced after a kill, so that the totals cover the whole call.
    let mut retired: Vec<(i64, u32)> = viewers
        .iter()
        .map(|v| (-(v.log().frames as i64), 0))
        .collect();
    let mut kills = 0;
    // The page's counts from subscriptions it replaced after a kill.
    let (mut page_freezes_before, mut page_frames_before) = (0u64, 0u64);
    while start.elapsed() < duration {
        std::thread::sleep(SEC / 2);
        if first_reading.is_none() && start.elapsed() >= WARM_UP.min(duration / 2) {
            first_reading = Some(read(&server, &publisher));
        }
        if next_kill.is_some_and(|k| Instant::now() >= k) {
            kills += 1;
            server.kill();
            let frames_before = page.viewer_state(UID)["joins"].as_u64().unwrap_or(0);
            let st = page.viewer_state(UID);
            page_freezes_before += st["freezes"].as_u64().unwrap_or(0);
            page_frames_before += st["framesPresented"].as_u64().unwrap_or(0);
            std::thread::sleep(SEC);
            let back = Instant::now();
            server.restart();
            let listed = wait_for(30 * SEC, || server.frames(CHANNEL, UID) > 0);
            if listed {
                republish.push(back.elapsed().as_secs_f64() * 1000.0);
            }
            for (i, v) in viewers.iter().enumerate() {
                let log = v.log();
                retired[i].0 += log.frames as i64;
                retired[i].1 += log.freezes;
            }
            viewers = whep_viewers(&server);
            for v in &viewers {
                if wait_for(10 * SEC, || v.log().frames > 0) {
                    let first = v.log().first.unwrap();
                    whep_back.push(first.saturating_duration_since(back).as_secs_f64() * 1000.0);
                }
            }
            let resumed = wait_for(10 * SEC, || {
                let st = page.viewer_state(UID);
                st["joins"].as_u64().unwrap_or(0) > frames_before
                    && st["framesPresented"].as_u64().unwrap_or(0) > 0
            });
            if resumed {
                let first = page.viewer_state(UID)["firstFrameAt"]
                    .as_f64()
                    .unwrap_or(0.0);
                page_back.push(first - epoch_ms(back));
            }
            next_kill = args.kill_every.map(|k| Instant::now() + k);
        }
    }
    let elapsed = start.elapsed();
    let last_reading = read(&server, &publisher);
    let first_reading = first_reading.unwrap_or(last_reading);
    let server_frames = server.frames(CHANNEL, UID);
    let page_state: Value = page.viewer_state(UID);

    println!();
    println!(
        "call of {:.1} min; callsink reconnects: {} (connection states: {:?})",
        elapsed.as_secs_f64() / 60.0,
        publisher.count("reconnecting"),
        publisher
            .states
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
    );
    if kills == 0 {
        println!(
            "frames: {:.0} sent at 30 fps over the call, {} received by the server",
            elapsed.as_secs_f64() * 30.0,
            server_frames - server_frames0
        );
    }
    println!(
        "{:<26}{:>10}{:>16}{:>18}",
        "viewer", "frames", "freezes > 1 s", "longest pause"
    );
    let mut freezes_total = 0u64;
    for (i, v) in viewers.iter().enumerate() {
        let log = v.log();
        let freezes = log.freezes + retired[i].1;
        freezes_total += freezes as u64;
        println!(
            "{:<26}{:>10}{:>16}{:>15} ms",
            v.kind,
            log.frames as i64 + retired[i].0,
            freezes,
            log.max_gap.as_millis()
        );
    }
    let page_freezes = page_state["freezes"].as_u64().unwrap_or(0) + page_freezes_before;
    freezes_total += page_freezes;
    println!(
        "{:<26}{:>10}{:>16}{:>15} ms  (frames presented; joins {})",
        "viewer page (Chromium)",
        page_state["framesPresented"].as_u64().unwrap_or(0) + page_frames_before - page_frames0,
        page_freezes,
        page_state["maxGapMs"].as_f64().unwrap_or(0.0).round(),
        page_state["joins"]
    );
    println!();
    println!(
        "{:<12}{:>28}{:>18}{:>14}",
        "process", "RSS MB (1 min in -> end)", "threads", "open files"
    );
    for (name, (a, b)) in ["callserver", "publisher"]
        .iter()
        .zip(first_reading.iter().zip(last_reading.iter()))
    {
        println!(
            "{:<12}{:>14.1} -> {:<6.1}({:+.1}){:>8} -> {:<6}{:>6} -> {}",
            name,
            a.0,
            b.0,
            b.0 - a.0,
            a.1,
            b.1,
            a.2,
            b.2
        );
    }
    if kills > 0 {
        println!();
        println!("server killed {kills} times");
        for (what, v, per_kill) in [
            ("callsink published again", &mut republish, 1),
            ("viewer page showed the publisher again", &mut page_back, 1),
            ("new WHEP viewers' first frame", &mut whep_back, 2),
        ] {
            println!(
                "  {what}: p50 {:.0} ms, max {:.0} ms after the restart ({} of {})",
                percentile(v, 0.5),
                percentile(v, 1.0),
                v.len(),
                kills * per_kill
            );
        }
    } else {
        let rss_growth = [0, 1].map(|i| last_reading[i].0 - first_reading[i].0);
        let flat = (0..2).all(|i| {
            last_reading[i].1 <= first_reading[i].1 && last_reading[i].2 <= first_reading[i].2
        });
        println!();
        println!(
            "targets: reconnects {} (0), freezes {} (0), RSS growth {:+.1} / {:+.1} MB (< 5), threads and files {}",
            publisher.count("reconnecting"),
            freezes_total,
            rss_growth[0],
            rss_growth[1],
            if flat { "flat" } else { "GREW" }
        );
    }
}
