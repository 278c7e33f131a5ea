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
use gstcustomvideo::CustomVideoSrc;
use std::time::{Duration, Instant};

fn parse_args() -> Result<(Duration, String), String> {
    let (mut duration, mut output) = (Duration::from_secs(5), "customvideo-demo.webm".to_owned());
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
                    "unknown argument {a}\nusage: push [--duration SECS] [--output PATH]"
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
        "customvideosrc name=src framerate=30/1 ! videoconvert ! vp8enc deadline=1 ! webmmux ! filesink location=\"{output}\""
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<CustomVideoSrc>().ok())
        .ok_or("no customvideosrc")?;
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
    println!("pushed {n} frames");
    println!("track stats: {}", src.stats());
    pipeline.set_state(gst::State::Null)?;
    result?;
    println!("wrote {output}");
    Ok(())
}
