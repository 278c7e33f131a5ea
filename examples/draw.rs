// SPDX-License-Identifier: MPL-2.0
//! The draw-callback producer (the `canvas.captureStream()` analog): `customvideosrc` asks
//! the application for every frame at the track rate and hands it a writable frame from its
//! buffer pool. The track is encoded to a WebM file (or shown with `--display`); the
//! statistics are printed at the end.
//!
//! ```text
//! cargo run --example draw -- [--duration SECS (default 5)] [--output PATH (default customvideo-draw.webm)] [--display]
//! ```

mod common;

use common::{HEIGHT, WIDTH};
use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn run(args: &common::Args) -> Result<(), Box<dyn std::error::Error>> {
    // Without a graphical session autovideosink falls back to sinks such as the DirectFB one,
    // which crash the process instead of failing.
    if args.display
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        return Err("--display needs a graphical session (DISPLAY or WAYLAND_DISPLAY)".into());
    }
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    // No caps property: frames come in the default draw format, BGRA at the track size.
    let sink = if args.display {
        "autovideosink"
    } else {
        "vp8enc deadline=1 ! webmmux ! filesink name=out"
    };
    let pipeline = gst::parse::launch(&format!(
        "customvideosrc name=src framerate=30/1 width={WIDTH} height={HEIGHT} ! videoconvert ! {sink}"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    if let Some(out) = pipeline.by_name("out") {
        // Set as a property rather than in the description: any path is taken as it is.
        out.set_property("location", &args.output);
    }
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<CustomVideoSrc>().ok())
        .ok_or("no customvideosrc")?;

    let drawn = Arc::new(AtomicU64::new(0));
    let counter = drawn.clone();
    src.set_draw_callback(Some(
        move |frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
              running_time: gst::ClockTime| {
            if frame.format() != gst_video::VideoFormat::Bgra
                || (frame.width(), frame.height()) != (WIDTH, HEIGHT)
            {
                // Not the frame this drawing code knows: the track repeats the last one.
                return false;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let stride = frame.plane_stride()[0] as usize;
            let Ok(data) = frame.plane_data_mut(0) else {
                return false;
            };
            // The clock shows the running time the frame will carry, so the picture and the
            // timestamp agree even when the track runs late.
            common::draw_scene(
                data,
                stride,
                n,
                Duration::from_nanos(running_time.nseconds()),
            );
            true
        },
    ));

    let result = play(&pipeline, &src, args.duration);
    // Read before the pipeline stops: a stopped track starts counting anew.
    let stats = src.stats();
    pipeline.set_state(gst::State::Null)?;
    result?;
    println!("drew {} frames", drawn.load(Ordering::Relaxed));
    println!("track stats: {stats}");
    if !args.display {
        println!("wrote {}", args.output);
    }
    Ok(())
}

/// Plays the pipeline for `duration`, then ends the draw producer and waits for the end of
/// the stream.
fn play(
    pipeline: &gst::Pipeline,
    src: &CustomVideoSrc,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    if pipeline.set_state(gst::State::Playing).is_err() {
        let msg = bus.pop_filtered(&[gst::MessageType::Error]);
        return Err(msg
            .as_ref()
            .and_then(common::describe)
            .unwrap_or_else(|| "the pipeline cannot start".to_owned())
            .into());
    }
    // The element calls the callback on its own; meanwhile watch for errors (a full disk, a
    // closed window).
    let timeout = gst::ClockTime::from_nseconds(duration.as_nanos() as u64);
    if let Some(msg) =
        bus.timed_pop_filtered(timeout, &[gst::MessageType::Error, gst::MessageType::Eos])
    {
        return Err(common::describe(&msg)
            .unwrap_or_else(|| "the track ended early".to_owned())
            .into());
    }
    // Ending the draw producer: the track ends (on-producer-end=eos) and the file is closed.
    src.end_of_stream()
        .map_err(|e| format!("end_of_stream: {e:?}"))?;
    common::wait_end(pipeline)?;
    Ok(())
}

fn main() -> ExitCode {
    common::main("draw", "customvideo-draw.webm", true, run)
}
