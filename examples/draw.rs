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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (duration, output) = common::file_args("draw", "customvideo-draw.webm")?;
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    let (pipeline, src) = common::file_pipeline(
        &format!("framerate=30/1 width={WIDTH} height={HEIGHT}"),
        &output,
    )?;
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
    let result = common::wait_end(&pipeline);
    println!("drew {} frames", drawn.load(Ordering::Relaxed));
    println!("track stats: {}", src.stats());
    pipeline.set_state(gst::State::Null)?;
    result?;
    println!("wrote {output}");
    Ok(())
}
