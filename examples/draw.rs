// SPDX-License-Identifier: MPL-2.0
//! The draw-callback producer (the `canvas.captureStream()` analog): `customvideosrc` asks
//! the application for every frame at the track rate and hands it a writable frame from its
//! buffer pool. The track is encoded to a WebM file; the statistics are printed at the end.
//!
//! ```text
//! cargo run --example draw -- [--duration SECS] [--output customvideo-draw.webm]
//! ```

mod common;

use common::{HEIGHT, WIDTH};
use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn parse_args() -> Result<(Duration, String), String> {
    let (mut duration, mut output) = (Duration::from_secs(5), "customvideo-draw.webm".to_owned());
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => {
                duration = Duration::from_secs_f64(
                    value()?.parse().map_err(|e| format!("--duration: {e}"))?,
                )
            }
            "--output" => output = value()?,
            _ => {
                return Err(format!(
                    "unknown argument {a}\nusage: draw [--duration SECS] [--output PATH]"
                ));
            }
        }
    }
    Ok((duration, output))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (duration, output) = parse_args()?;
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    let pipeline = gst::parse::launch(&format!(
        "customvideosrc name=src framerate=30/1 width={WIDTH} height={HEIGHT} ! videoconvert ! vp8enc deadline=1 ! webmmux ! filesink location=\"{output}\""
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<CustomVideoSrc>().ok())
        .ok_or("no customvideosrc")?;
    let start = Instant::now();
    let drawn = std::sync::Arc::new(AtomicU64::new(0));
    let counter = drawn.clone();
    // Frames come in the default draw format: BGRA at the track size.
    src.set_draw_callback(Some(
        move |frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, _running_time| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data_mut(0).expect("BGRA has one plane");
            common::draw_scene(data, stride, n, start.elapsed());
            true
        },
    ));
    pipeline.set_state(gst::State::Playing)?;
    std::thread::sleep(duration);
    // Ending the draw producer: the track ends (on-producer-end=eos) and the file is closed.
    src.end_of_stream()?;
    let bus = pipeline.bus().expect("pipelines have a bus");
    let result = match bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .as_ref()
        .map(|m| m.view())
    {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => {
            Err(format!("pipeline error: {} ({:?})", e.error(), e.debug()))
        }
        _ => Err("the pipeline did not finish within 10 s".to_owned()),
    };
    println!("drew {} frames", drawn.load(Ordering::Relaxed));
    println!("track stats: {}", src.stats());
    pipeline.set_state(gst::State::Null)?;
    result?;
    println!("wrote {output}");
    Ok(())
}
