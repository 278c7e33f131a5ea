// SPDX-License-Identifier: MPL-2.0
//! An application that renders its own I420 frames (a bouncing square and a frame counter in
//! big digits) at 30 fps and pushes them into `customvideosrc`, which turns them into a
//! steady track; the track is encoded to a WebM file and its statistics are printed at the end.
//!
//! ```text
//! cargo run --example push -- [--duration SECS (default 5)] [--output PATH (default customvideo-demo.webm)]
//! ```

mod common;

use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FPS: u32 = 30;

/// The first error the pipeline posted, if any, as a readable sentence.
fn posted_error(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
    common::describe(&msg)
}

/// BT.601 limited range, the colorimetry GStreamer gives I420 at this size.
const fn yuv(r: i32, g: i32, b: i32) -> [u8; 3] {
    [
        (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8,
        (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8,
        (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8,
    ]
}

const BACKGROUND: [u8; 3] = yuv(16, 24, 40);
const SQUARE: [u8; 3] = yuv(255, 160, 0);
const DIGITS: [u8; 3] = yuv(255, 255, 255);

/// Paints into the three planes of an I420 frame. Positions and sizes are kept even so that
/// every shape covers whole 2x2 chroma blocks and its edges stay crisp.
struct I420Canvas<'a, 'b> {
    frame: &'a mut gst_video::VideoFrameRef<&'b mut gst::BufferRef>,
}

impl I420Canvas<'_, '_> {
    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
        let (x1, y1) = ((x + w).min(WIDTH), (y + h).min(HEIGHT));
        if x >= x1 || y >= y1 {
            return;
        }
        for (plane, shift) in [(0, 0), (1, 1), (2, 1)] {
            let stride = self.frame.plane_stride()[plane] as usize;
            let data = self.frame.plane_data_mut(plane as u32).expect("I420 plane");
            let (cx0, cx1) = ((x >> shift) as usize, (x1 >> shift) as usize);
            for row in (y >> shift) as usize..(y1 >> shift) as usize {
                data[row * stride + cx0..row * stride + cx1].fill(colour[plane]);
            }
        }
    }

    /// `s` in the 5x7 font, each font pixel a `scale` x `scale` block.
    fn text(&mut self, x: u32, y: u32, scale: u32, s: &str, colour: [u8; 3]) {
        for (i, c) in s.chars().enumerate() {
            let gx = x + i as u32 * 6 * scale;
            for (row, bits) in common::glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let y = y + row as u32 * scale;
                        self.rect(gx + col * scale, y, scale, scale, colour);
                    }
                }
            }
        }
    }
}

/// Renders frame `n`: dark background, a square bouncing across, the frame number.
fn render(info: &gst_video::VideoInfo, n: u64) -> Result<gst::Buffer, Box<dyn std::error::Error>> {
    // The Vec becomes the buffer's memory, and the track takes the buffer as it is: it is
    // already in the track format, so nothing is copied on the way to the encoder.
    let mut buffer = gst::Buffer::from_mut_slice(vec![0u8; info.size()]);
    {
        let buffer = buffer.get_mut().expect("just created");
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
            .map_err(|_| "the frame does not fit its caps")?;
        let mut canvas = I420Canvas { frame: &mut frame };
        canvas.rect(0, 0, WIDTH, HEIGHT, BACKGROUND);
        let side = 80;
        let travel = u64::from(WIDTH - side);
        let pos = (n * 8) % (2 * travel);
        let x = if pos < travel { pos } else { 2 * travel - pos } as u32;
        canvas.rect(x & !1, 240, side, side, SQUARE);
        canvas.text(40, 60, 12, &format!("{n:05}"), DIGITS);
    }
    Ok(buffer)
}

fn run(args: &common::Args) -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    let pipeline = gst::parse::launch(&format!(
        "customvideosrc name=src framerate={FPS}/1 ! videoconvert ! vp8enc deadline=1 ! webmmux ! filesink name=out"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    // Set as a property rather than in the description: any path is taken as it is.
    pipeline
        .by_name("out")
        .ok_or("no filesink")?
        .set_property("location", &args.output);
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<CustomVideoSrc>().ok())
        .ok_or("no customvideosrc")?;
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(FPS as i32, 1))
        .build()?;
    src.set_property("caps", info.to_caps()?);

    let result = push_frames(&pipeline, &src, &info, args);
    // Read before the pipeline stops: a stopped track starts counting anew.
    let stats = src.stats();
    pipeline.set_state(gst::State::Null)?;
    let pushed = result?;
    println!("pushed {pushed} frames");
    println!("track stats: {stats}");
    println!("wrote {}", args.output);
    Ok(())
}

/// Plays the pipeline, pushes the frames at the frame rate, ends the stream and waits for the
/// file to be complete. Returns the number of frames pushed.
fn push_frames(
    pipeline: &gst::Pipeline,
    src: &CustomVideoSrc,
    info: &gst_video::VideoInfo,
    args: &common::Args,
) -> Result<u64, Box<dyn std::error::Error>> {
    if pipeline.set_state(gst::State::Playing).is_err() {
        return Err(posted_error(pipeline)
            .unwrap_or_else(|| "the pipeline cannot start".to_owned())
            .into());
    }
    // The application's own render loop, at its own pace: frame n is due at n / FPS.
    let frames = (args.duration.as_secs_f64() * f64::from(FPS))
        .round()
        .max(1.0) as u64;
    let start = Instant::now();
    for n in 0..frames {
        let due = start + Duration::from_secs_f64(n as f64 / f64::from(FPS));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        // A failing pipeline does not make pushes fail (the track queue just fills up), so
        // the bus is the place to notice it.
        if let Some(e) = posted_error(pipeline) {
            return Err(e.into());
        }
        src.push_frame(render(info, n)?)
            .map_err(|e| posted_error(pipeline).unwrap_or(format!("push_frame: {e:?}")))?;
    }
    src.end_of_stream()
        .map_err(|e| format!("end_of_stream: {e:?}"))?;
    // The file is complete (the muxer wrote its index) when end-of-stream reaches the sink.
    common::wait_end(pipeline)?;
    Ok(frames)
}

fn main() -> ExitCode {
    common::main("push", "customvideo-demo.webm", false, run)
}
