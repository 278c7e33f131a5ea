// SPDX-License-Identifier: MPL-2.0
//! Drawing shared by the examples: an application's own frames (BGRA), a moving square, a
//! clock and a frame counter, with a built-in 5x7 font. No drawing library needed.
#![allow(dead_code)]

use gst::prelude::*;
use std::time::Duration;

/// What the examples that write a file take on their command line.
pub struct Args {
    pub duration: Duration,
    pub output: String,
    /// Show the track in a window instead of writing the file (where allowed).
    pub display: bool,
}

/// `--duration SECS` (default 5), `--output PATH`, and `--display` when `display` is
/// allowed. `name` and the usage line are for the messages.
pub fn parse_args(name: &str, default_output: &str, display: bool) -> Result<Args, String> {
    let usage = format!(
        "usage: {name} [--duration SECS] [--output PATH]{}",
        if display { " [--display]" } else { "" }
    );
    let mut args = Args {
        duration: Duration::from_secs(5),
        output: default_output.to_owned(),
        display: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value\n{usage}"));
        match a.as_str() {
            "--duration" => {
                let v = value()?;
                args.duration = v
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .filter(|d| !d.is_zero())
                    .ok_or(format!(
                        "--duration: {v:?} is not a positive number of seconds"
                    ))?;
            }
            "--output" => args.output = value()?,
            "--display" if display => args.display = true,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a}\n{usage}")),
        }
    }
    Ok(args)
}

/// The examples' `main`: parses the arguments (exit code 2 and the usage on a bad one), runs
/// `run`, and prints what went wrong (exit code 1).
pub fn main(
    name: &str,
    default_output: &str,
    display: bool,
    run: impl FnOnce(&Args) -> Result<(), Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    let args = match parse_args(name, default_output, display) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error message from the bus as a readable sentence: the element, the error, the details.
pub fn describe(msg: &gst::Message) -> Option<String> {
    let gst::MessageView::Error(e) = msg.view() else {
        return None;
    };
    let src = e.src().map(|s| s.path_string()).unwrap_or_default();
    Some(match e.debug() {
        Some(debug) => format!("{src}: {} ({debug})", e.error()),
        None => format!("{src}: {}", e.error()),
    })
}

/// Waits (10 s at most) for the end of the stream, or an error.
pub fn wait_end(pipeline: &gst::Pipeline) -> Result<(), String> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    match bus
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
    }
}

/// Size of the frames the examples make.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;

/// 5x7 bitmaps for the clock: digits, ':' and '.'.
pub fn glyph(c: char) -> [u8; 7] {
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

/// Draws frame `n` into a `WIDTH` x `HEIGHT` BGRA image: dark background, a square bouncing
/// across, the time `t` and the frame number.
pub fn draw_scene(data: &mut [u8], stride: usize, n: u64, t: Duration) {
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
