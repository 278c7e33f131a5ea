// SPDX-License-Identifier: MPL-2.0
//! An application that renders its own frames (a moving square, a clock and a frame counter)
//! and pushes them into `customvideosrc`, which turns them into a steady track; the track is
//! encoded to a WebM file and its statistics are printed at the end.
//!
//! ```text
//! cargo run --example push -- [--duration SECS] [--output customvideo-demo.webm]
//! ```

mod common;

use common::{HEIGHT, WIDTH};
use gst::prelude::*;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (duration, output) = common::file_args("push", "customvideo-demo.webm")?;
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    let (pipeline, src) = common::file_pipeline("framerate=30/1", &output)?;
    // The frames the application makes: BGRA, as most drawing code produces.
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgra, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(30, 1))
        .build()?;
    src.set_property("caps", info.to_caps()?);
    pipeline.set_state(gst::State::Playing)?;

    // The application's own render loop, at its own pace (here 30 fps).
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let mut data = vec![0u8; info.size()];
        common::draw_scene(&mut data, info.stride()[0] as usize, n, start.elapsed());
        // The Vec becomes the buffer's memory: the element takes it without copying.
        src.push_frame(gst::Buffer::from_mut_slice(data))?;
        n += 1;
        let next = start + Duration::from_secs_f64(n as f64 / 30.0);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    src.end_of_stream()?;

    let result = common::wait_end(&pipeline);
    println!("pushed {n} frames");
    println!("track stats: {}", src.stats());
    pipeline.set_state(gst::State::Null)?;
    result?;
    println!("wrote {output}");
    Ok(())
}
