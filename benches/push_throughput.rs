// SPDX-License-Identifier: MPL-2.0
//! Push throughput: 1920x1080 I420 frames pushed by an application through `customvideosrc`
//! (`push_frame`) and, side by side in the same run, through `appsrc` (`push_buffer`), both
//! into `fakesink sync=false`.
//!
//! Both queues hold 64 frames and make the pusher wait when full (`block=true`), so nothing
//! should be dropped and the figure is the cost of the push path itself. The frames are clones
//! of a few pre-allocated buffers; the sink compares the data pointer of every buffer that
//! arrives with the one pushed, which counts the frames copied on the way. The two sources
//! take turns over several rounds so that neither gets a warmer machine; the figures compared
//! are the medians.
//!
//! ```text
//! cargo bench --bench push_throughput
//! ```
//!
//! `PUSH_FRAMES` (default 100000) frames per round, `PUSH_ROUNDS` (default 3) rounds.

use gst::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
const QUEUE: u32 = 64;
/// Distinct frames pushed in turn, as a capture ring buffer would hand them out.
const RING: usize = 8;
/// Bound on one round, whatever the frame count.
const ROUND_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq)]
enum Source {
    CustomVideoSrc,
    AppSrc,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::CustomVideoSrc => "customvideosrc",
            Source::AppSrc => "appsrc",
        }
    }

    fn launch(self, caps: &gst::Caps) -> String {
        let src = match self {
            // No framerate property: the track is not paced, frames leave as they come.
            Source::CustomVideoSrc => {
                format!("customvideosrc name=src max-buffers={QUEUE} block=true caps=\"{caps}\"")
            }
            Source::AppSrc => format!(
                "appsrc name=src is-live=true format=time do-timestamp=true block=true \
                 max-buffers={QUEUE} max-bytes=0 max-time=0 caps=\"{caps}\""
            ),
        };
        format!("{src} ! fakesink name=sink sync=false signal-handoffs=true")
    }
}

struct Round {
    pushed: u64,
    delivered: u64,
    /// Frames whose data reached the sink at another address than the one pushed.
    copies: u64,
    /// Frames that arrived uncopied but not in the order pushed.
    out_of_order: u64,
    secs: f64,
}

impl Round {
    fn fps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    fn copies_per_frame(&self) -> f64 {
        self.copies as f64 / self.delivered.max(1) as f64
    }
}

/// What the sink's handoff handler shares with the pusher.
#[derive(Default)]
struct Arrivals {
    delivered: AtomicU64,
    copies: AtomicU64,
    out_of_order: AtomicU64,
    /// Nanoseconds from the round's epoch to the latest arrival.
    last_ns: AtomicU64,
}

fn data_ptr(buffer: &gst::BufferRef) -> usize {
    buffer
        .map_readable()
        .expect("system memory maps")
        .as_slice()
        .as_ptr() as usize
}

fn run(source: Source, caps: &gst::Caps, frames: &[gst::Buffer], count: u64) -> Round {
    let pipeline = gst::parse::launch(&source.launch(caps))
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let src = pipeline.by_name("src").expect("src");
    let sink = pipeline.by_name("sink").expect("sink");

    let ptrs: Arc<Vec<usize>> = Arc::new(frames.iter().map(|b| data_ptr(b)).collect());
    let arrivals = Arc::new(Arrivals::default());
    let epoch = Instant::now();
    {
        let (arrivals, ptrs) = (arrivals.clone(), ptrs.clone());
        sink.connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().expect("handoff buffer");
            let ptr = data_ptr(&buffer);
            let n = arrivals.delivered.load(Ordering::Relaxed);
            // Frame n was pushed as a clone of ring entry n % RING.
            if ptr != ptrs[n as usize % ptrs.len()] {
                if ptrs.contains(&ptr) {
                    arrivals.out_of_order.fetch_add(1, Ordering::Relaxed);
                } else {
                    arrivals.copies.fetch_add(1, Ordering::Relaxed);
                }
            }
            arrivals
                .last_ns
                .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            arrivals.delivered.store(n + 1, Ordering::Release);
            None
        });
    }
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    // Wait for the source to be PLAYING so that the round measures the running pipeline (the
    // sink completes its state change only once the first frame reaches it).
    let (res, state, _) = src.state(gst::ClockTime::from_seconds(5));
    assert!(
        res.is_ok() && state == gst::State::Playing,
        "{} did not start",
        source.name()
    );

    let custom = src.downcast_ref::<gstcustomvideo::CustomVideoSrc>();
    let app = src.downcast_ref::<gst_app::AppSrc>();
    let start = Instant::now();
    let mut pushed = 0;
    for i in 0..count {
        let buffer = frames[i as usize % frames.len()].clone();
        let res = match source {
            Source::CustomVideoSrc => custom.expect("customvideosrc").push_frame(buffer),
            Source::AppSrc => app.expect("appsrc").push_buffer(buffer),
        };
        if let Err(e) = res {
            eprintln!("{}: push {i} failed: {e:?}", source.name());
            break;
        }
        pushed += 1;
        if start.elapsed() > ROUND_LIMIT {
            break;
        }
    }
    // What is still queued arrives (bounded: stop when nothing arrives for a second).
    let mut seen = (arrivals.delivered.load(Ordering::Acquire), Instant::now());
    while seen.0 < pushed && seen.1.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
        let n = arrivals.delivered.load(Ordering::Acquire);
        if n != seen.0 {
            seen = (n, Instant::now());
        }
    }
    pipeline.set_state(gst::State::Null).expect("NULL");

    let last = epoch + Duration::from_nanos(arrivals.last_ns.load(Ordering::Relaxed));
    Round {
        pushed,
        delivered: arrivals.delivered.load(Ordering::Acquire),
        copies: arrivals.copies.load(Ordering::Relaxed),
        out_of_order: arrivals.out_of_order.load(Ordering::Relaxed),
        secs: last
            .saturating_duration_since(start)
            .as_secs_f64()
            .max(1e-9),
    }
}

fn report(name: &str, r: &Round) {
    println!(
        "{name:>15}: pushed {:>7} delivered {:>7} dropped {:>5} in {:.3} s = {:>7.0} frames/s, {:.3} copies/frame{}",
        r.pushed,
        r.delivered,
        r.pushed.saturating_sub(r.delivered),
        r.secs,
        r.fps(),
        r.copies_per_frame(),
        if r.out_of_order > 0 {
            format!(", {} out of order", r.out_of_order)
        } else {
            String::new()
        }
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn main() {
    gst::init().expect("GStreamer");
    gstcustomvideo::plugin_register_static().expect("customvideo plugin");
    let count = env_number("PUSH_FRAMES", 100_000);
    let rounds = env_number("PUSH_ROUNDS", 3);

    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, WIDTH, HEIGHT)
        .build()
        .expect("video info");
    let caps = info.to_caps().expect("caps");
    let frames: Vec<gst::Buffer> = (0..RING)
        .map(|i| gst::Buffer::from_mut_slice(vec![(i * 30) as u8; info.size()]))
        .collect();
    println!(
        "{rounds} rounds of {count} frames of {WIDTH}x{HEIGHT} I420 ({} bytes each), queues of {QUEUE}",
        info.size()
    );

    let mut results: Vec<(Source, Round)> = Vec::new();
    for round in 1..=rounds {
        println!("round {round}");
        for source in [Source::CustomVideoSrc, Source::AppSrc] {
            let r = run(source, &caps, &frames, count);
            report(source.name(), &r);
            results.push((source, r));
        }
    }

    let summary = |source: Source| {
        let rs: Vec<&Round> = results
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, r)| r)
            .collect();
        let fps = median(rs.iter().map(|r| r.fps()).collect());
        let pushed: u64 = rs.iter().map(|r| r.pushed).sum();
        let delivered: u64 = rs.iter().map(|r| r.delivered).sum();
        let copies: u64 = rs.iter().map(|r| r.copies).sum();
        println!(
            "{:>15}: median {fps:.0} frames/s; over all rounds pushed {pushed} delivered {delivered} dropped {}, {:.3} copies/frame",
            source.name(),
            pushed.saturating_sub(delivered),
            copies as f64 / delivered.max(1) as f64
        );
        (fps, copies, pushed.saturating_sub(delivered))
    };
    println!("summary");
    let (custom_fps, custom_copies, custom_dropped) = summary(Source::CustomVideoSrc);
    let (app_fps, _, _) = summary(Source::AppSrc);
    let ratio = custom_fps / app_fps;
    println!(
        "ratio customvideosrc/appsrc: {ratio:.2} (target >= 1.0); customvideosrc copies {custom_copies}, dropped {custom_dropped} (target 0): target {}",
        if ratio >= 1.0 && custom_copies == 0 && custom_dropped == 0 {
            "met"
        } else {
            "missed"
        }
    );
}
