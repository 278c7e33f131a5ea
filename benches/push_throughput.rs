// SPDX-License-Identifier: MPL-2.0
//! Push throughput: 1920x1080 I420 frames pushed by an application through `customvideosrc`
//! and, side by side in the same run, through `appsrc`, both into `fakesink sync=false`.
//! Prints frames per second delivered, drops, copies per frame, and the ratio. Both queues
//! hold 64 frames and make the pusher wait when full (`block=true`), so nothing is dropped
//! and the figure is the throughput of the push path itself.
//!
//! `cargo bench --bench push_throughput` (PUSH_FRAMES=N to change the count, default 100000).

use gst::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;

struct Result {
    pushed: u64,
    delivered: u64,
    copies: u64,
    secs: f64,
}

fn run(name: &str, launch: &str, frames: &[gst::Buffer], count: u64) -> Result {
    let pipeline = gst::parse::launch(launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline.by_name("src").unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    let originals: Arc<HashSet<usize>> = Arc::new(
        frames
            .iter()
            .map(|b| b.map_readable().unwrap().as_slice().as_ptr() as usize)
            .collect(),
    );
    let delivered = Arc::new(AtomicU64::new(0));
    let copies = Arc::new(AtomicU64::new(0));
    {
        let (d, c, o) = (delivered.clone(), copies.clone(), originals.clone());
        sink.connect("handoff", false, move |v| {
            let buffer = v[1].get::<gst::Buffer>().unwrap();
            let ptr = buffer.map_readable().unwrap().as_slice().as_ptr() as usize;
            if !o.contains(&ptr) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            d.fetch_add(1, Ordering::Relaxed);
            None
        });
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    // Both sources are live: measure from PLAYING on.
    while src.current_state() != gst::State::Playing {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    let mut pushed = 0;
    for i in 0..count {
        let buffer = frames[i as usize % frames.len()].clone();
        let ok = if name == "customvideosrc" {
            src.downcast_ref::<gstcustomvideo::CustomVideoSrc>()
                .unwrap()
                .push_frame(buffer)
                .is_ok()
        } else {
            src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buffer]) == gst::FlowReturn::Ok
        };
        if ok {
            pushed += 1;
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    // Wait (bounded) for what is still queued to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = u64::MAX;
    while Instant::now() < deadline {
        let n = delivered.load(Ordering::Relaxed);
        if n >= pushed || (n == last && n > 0) {
            break;
        }
        last = n;
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = (name == "customvideosrc").then(|| src.property::<gst::Structure>("stats"));
    pipeline.set_state(gst::State::Null).unwrap();
    let r = Result {
        pushed,
        delivered: delivered.load(Ordering::Relaxed),
        copies: copies.load(Ordering::Relaxed),
        secs,
    };
    println!(
        "{name:>15}: pushed {} delivered {} dropped {} in {:.2} s = {:.0} frames/s, {:.3} copies/frame",
        r.pushed,
        r.delivered,
        r.pushed - r.delivered.min(r.pushed),
        r.secs,
        r.delivered as f64 / r.secs,
        r.copies as f64 / r.delivered.max(1) as f64
    );
    if let Some(s) = stats {
        println!("{:>15}  {s}", "");
    }
    r
}

fn main() {
    gst::init().unwrap();
    gstcustomvideo::plugin_register_static().unwrap();
    let count: u64 = std::env::var("PUSH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .unwrap();
    let caps = info.to_caps().unwrap();
    // A few distinct frames, pushed over and over (as a capture ring buffer would).
    let frames: Vec<gst::Buffer> = (0..8u8)
        .map(|i| gst::Buffer::from_mut_slice(vec![i.wrapping_mul(30); info.size()]))
        .collect();
    println!(
        "pushing {count} frames of {WIDTH}x{HEIGHT} I420 ({} bytes each)",
        info.size()
    );
    let custom = run(
        "customvideosrc",
        &format!(
            "customvideosrc name=src max-buffers=64 block=true caps=\"{caps}\" ! fakesink name=sink sync=false signal-handoffs=true"
        ),
        &frames,
        count,
    );
    let app = run(
        "appsrc",
        &format!(
            "appsrc name=src is-live=true format=time do-timestamp=true block=true max-buffers=64 max-bytes=0 caps=\"{caps}\" ! fakesink name=sink sync=false signal-handoffs=true"
        ),
        &frames,
        count,
    );
    let fps = |r: &Result| r.delivered as f64 / r.secs;
    println!(
        "ratio customvideosrc/appsrc: {:.2} (target >= 1.0); copies per frame: customvideosrc {:.3}, appsrc {:.3} (target 0)",
        fps(&custom) / fps(&app),
        custom.copies as f64 / custom.delivered.max(1) as f64,
        app.copies as f64 / app.delivered.max(1) as f64
    );
}
