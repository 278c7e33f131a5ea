// SPDX-License-Identifier: MPL-2.0
//! The demo: a custom video track drawn by the application (a moving square and a running
//! clock) is published into the embedded call server; open the printed URL in a browser to
//! watch it.
//!
//! ```text
//! cargo run --example call -- [--duration SECS] [--port 8080] [--channel demo] [--codec auto]
//! ```
//!
//! Without `--duration` it runs until Ctrl-C.

use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::time::{Duration, Instant};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;

/// 5x7 bitmaps for the clock: digits, ':' and '.'.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        _ => [0; 7],
    }
}

struct Canvas<'a> {
    data: &'a mut [u8],
    stride: usize,
}

impl Canvas<'_> {
    fn rect(&mut self, x: u32, y: u32, w: u32, h: u32, bgra: [u8; 4]) {
        let x1 = (x + w).min(WIDTH) as usize;
        let y1 = (y + h).min(HEIGHT) as usize;
        for row in y as usize..y1 {
            let line = &mut self.data[row * self.stride..row * self.stride + x1 * 4];
            for px in line[x as usize * 4..].chunks_exact_mut(4) {
                px.copy_from_slice(&bgra);
            }
        }
    }

    fn text(&mut self, x: u32, y: u32, scale: u32, s: &str, bgra: [u8; 4]) {
        for (i, c) in s.chars().enumerate() {
            let gx = x + i as u32 * 6 * scale;
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(gx + col * scale, y + row as u32 * scale, scale, scale, bgra);
                    }
                }
            }
        }
    }
}

/// Draws one frame: dark background, a square bouncing across, the time since start.
fn draw(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, start: Instant, n: u64) {
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data_mut(0).expect("BGRA has one plane");
    // Background: one row built once, copied to every row.
    let row: Vec<u8> = [40u8, 24, 16, 255].repeat(WIDTH as usize);
    for y in 0..HEIGHT as usize {
        data[y * stride..y * stride + row.len()].copy_from_slice(&row);
    }
    let mut c = Canvas { data, stride };
    let period = 2 * (WIDTH - 80) as u64;
    let pos = (n * 8) % period;
    let x = if pos < period / 2 { pos } else { period - pos } as u32;
    c.rect(x, 220, 80, 80, [0, 160, 255, 255]);
    let t = start.elapsed();
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.as_secs() / 3600,
        t.as_secs() / 60 % 60,
        t.as_secs() % 60,
        t.subsec_millis()
    );
    c.text(40, 60, 6, &clock, [255, 255, 255, 255]);
    c.text(40, 150, 3, &format!("{n:08}"), [180, 180, 180, 255]);
}

struct Args {
    duration: Option<Duration>,
    port: u32,
    channel: String,
    codec: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: None,
        port: 8080,
        channel: "demo".into(),
        codec: "auto".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => {
                let secs: f64 = value()?.parse().map_err(|e| format!("--duration: {e}"))?;
                args.duration = Some(Duration::from_secs_f64(secs));
            }
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--channel" => args.channel = value()?,
            "--codec" => args.codec = value()?,
            _ => {
                return Err(format!(
                    "unknown argument {a}\nusage: call [--duration SECS] [--port 8080] [--channel demo] [--codec auto|vp8|vp9|h264|av1]"
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    gst::init()?;
    gstcustomvideo::plugin_register_static()?;

    let src = CustomVideoSrc::new(Some("track"));
    src.set_property("framerate", gst::Fraction::new(30, 1));
    src.set_property("label", "customvideo demo");
    src.set_property(
        "caps",
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgra, WIDTH, HEIGHT)
            .fps(gst::Fraction::new(30, 1))
            .build()?
            .to_caps()?,
    );
    let start = Instant::now();
    let counter = std::sync::Mutex::new(0u64);
    src.set_draw_callback(Some(
        move |frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, _rt| {
            let mut c = counter.lock().unwrap();
            draw(frame, start, *c);
            *c += 1;
            true
        },
    ));

    let sink = gst::ElementFactory::make("callsink")
        .property("channel", &args.channel)
        .property("uid", "demo-track")
        .property("port", args.port)
        .property("codec", &args.codec)
        .build()?;
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([src.upcast_ref(), &sink])?;
    src.link(&sink)?;
    pipeline.set_state(gst::State::Playing)?;

    let bus = pipeline.bus().expect("pipelines have a bus");
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut result = Ok(());
    loop {
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        if wait.is_zero() {
            break;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(wait.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure() else { continue };
                match s.name().as_str() {
                    "callsink-viewer" => {
                        let url = s.get::<String>("url").unwrap_or_default();
                        println!("Publishing the custom track to the embedded call.");
                        println!("Watch it in a browser: {url}");
                    }
                    "callsink-connection-state" => {
                        println!(
                            "connection: {}",
                            s.get::<String>("state").unwrap_or_default()
                        );
                    }
                    _ => (),
                }
            }
            gst::MessageView::Error(e) => {
                result = Err(format!(
                    "{}: {}",
                    e.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    e.error()
                ));
                break;
            }
            gst::MessageView::Eos(_) => break,
            _ => (),
        }
    }
    let stats: gst::Structure = sink.property("stats");
    println!("send stats: {stats}");
    pipeline.set_state(gst::State::Null)?;
    result.map_err(Into::into)
}
