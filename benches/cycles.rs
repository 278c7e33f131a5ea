// SPDX-License-Identifier: MPL-2.0
//! Start and stop, many times in one process: what users do when they make and end calls
//! from one application. Each run goes NULL → PLAYING → (connected) → NULL and the process's
//! threads, open files and resident memory are read after a warm-up and at the end:
//!
//! - `customvideosrc ! callsink` into the call server (the `callserver` binary, a process of
//!   its own), 200 times, side by side with the same number of runs of a plain webrtcbin
//!   publisher (the reference: what GStreamer's own WebRTC stack leaves per call);
//! - `customvideosrc` alone (`producer="videotestsrc"`, into `fakesink`), 1000 times.
//!
//! ```text
//! cargo bench --bench cycles            # CYCLES_CALLS=200 CYCLES_TRACK=1000 to change
//! ```
//!
//! Target: flat threads and open files, RSS growth per run no larger than the reference's.
//! Runs inside a private network namespace.

mod common;
#[path = "../tests/common/mod.rs"]
mod harness;

use gst::prelude::*;
use harness::callserver::{ServerProcess, free_port};
use harness::peers::Publisher;
use harness::{Launched, process_resources, wait_for};
use std::time::{Duration, Instant};

const WARM_UP: usize = 20;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    name: &'static str,
    runs: usize,
    warm: (f64, u64, u64),
    end: (f64, u64, u64),
    per_run: Duration,
}

impl Outcome {
    fn kb_per_run(&self) -> f64 {
        (self.end.0 - self.warm.0) * 1024.0 / (self.runs - WARM_UP) as f64
    }

    fn print(&self) {
        println!(
            "{:<30}{:>6} runs  {:>5.0} ms/run   threads {:>3} -> {:<3}  files {:>3} -> {:<3}  RSS {:>6.1} -> {:<6.1} MB ({:+.1} kB per run)",
            self.name,
            self.runs,
            self.per_run.as_secs_f64() * 1000.0,
            self.warm.1,
            self.end.1,
            self.warm.2,
            self.end.2,
            self.warm.0,
            self.end.0,
            self.kb_per_run()
        );
    }
}

/// Runs `one` `runs` times; readings after WARM_UP runs and at the end (after a short rest,
/// so that what a stop hands to other threads is done).
fn cycle(name: &'static str, runs: usize, mut one: impl FnMut(usize)) -> Outcome {
    let rest = || std::thread::sleep(Duration::from_millis(300));
    let mut warm = None;
    let start = Instant::now();
    for i in 0..runs {
        one(i);
        if i + 1 == WARM_UP {
            rest();
            warm = Some(process_resources());
        }
    }
    let per_run = start.elapsed() / runs as u32;
    rest();
    Outcome {
        name,
        runs,
        warm: warm.expect("more runs than the warm-up"),
        end: process_resources(),
        per_run,
    }
}

fn main() {
    common::in_private_netns();
    harness::init();
    let calls = count("CYCLES_CALLS", 200).max(WARM_UP + 1);
    let tracks = count("CYCLES_TRACK", 1000).max(WARM_UP + 1);
    let server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let whip = format!("{}/whip/cycles", server.url());

    let callsink = Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 width=320 height=240 \
         ! callsink server={} channel=cycles uid=callsink",
        server.url()
    ));
    let with_callsink = cycle("customvideosrc ! callsink", calls, |i| {
        callsink.pipeline.set_state(gst::State::Playing).unwrap();
        let connected = wait_for(Duration::from_secs(20), || {
            callsink
                .connection_states()
                .iter()
                .filter(|(_, s)| s == "connected")
                .count()
                > i
        });
        assert!(
            connected,
            "run {i}: never connected: {:?}",
            callsink.error()
        );
        callsink.pipeline.set_state(gst::State::Null).unwrap();
        // The record of what the bus said grows with the runs; only what is new matters.
        callsink
            .messages
            .lock()
            .unwrap()
            .retain(|p| p.structure.is_some());
    });
    drop(callsink);

    let reference = cycle("plain webrtcbin publisher", calls, |i| {
        let p = Publisher::webrtcbin(&format!("{whip}?uid=reference"), 0xff00_80ff)
            .unwrap_or_else(|e| panic!("run {i}: {e}"));
        assert!(
            wait_for(Duration::from_secs(20), || p.state().as_deref()
                == Some("connected")),
            "run {i}: the reference never connected"
        );
    });

    let track = Launched::new(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 width=320 height=240 \
         ! fakesink name=sink",
    );
    let frames = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = frames.clone();
    track
        .pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    let alone = cycle("customvideosrc alone", tracks, |i| {
        let before = frames.load(std::sync::atomic::Ordering::Relaxed);
        track.pipeline.set_state(gst::State::Playing).unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || frames
                .load(std::sync::atomic::Ordering::Relaxed)
                > before),
            "run {i}: no frame"
        );
        track.pipeline.set_state(gst::State::Null).unwrap();
        track.messages.lock().unwrap().clear();
    });

    println!();
    for o in [&with_callsink, &reference, &alone] {
        o.print();
    }
    println!();
    println!(
        "RSS growth per call, callsink / plain webrtcbin: {:.1} / {:.1} kB (ratio {:.2}); per run of customvideosrc alone: {:.1} kB",
        with_callsink.kb_per_run(),
        reference.kb_per_run(),
        with_callsink.kb_per_run() / reference.kb_per_run().max(0.1),
        alone.kb_per_run()
    );
    let flat = |o: &Outcome| o.end.1 <= o.warm.1 + 1 && o.end.2 <= o.warm.2 + 1;
    println!(
        "threads and open files flat: callsink {}, customvideosrc {}",
        if flat(&with_callsink) { "yes" } else { "NO" },
        if flat(&alone) { "yes" } else { "NO" }
    );
}
