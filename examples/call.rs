// SPDX-License-Identifier: MPL-2.0
//! The demo: a custom video track drawn by the application (a moving square and a running
//! clock) is published into the embedded call server; open the printed URL in a browser to
//! watch it.
//!
//! ```text
//! cargo run --release --bin customvideo-demo -- [--duration SECS] [--port 8080] [--channel demo]
//!     [--codec auto]
//! ```
//!
//! Without `--duration` it runs until Ctrl-C (or SIGTERM); either way it ends the stream, leaves
//! the call and prints the send statistics.

use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{HEIGHT, WIDTH};

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
            "--codec" => {
                args.codec = value()?;
                if !["auto", "vp8", "vp9", "h264", "av1"].contains(&args.codec.as_str()) {
                    return Err(format!(
                        "--codec {}: use auto, vp8, vp9, h264 or av1",
                        args.codec
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "unknown argument {a}\nusage: customvideo-demo [--duration SECS] [--port 8080] [--channel demo] [--codec auto|vp8|vp9|h264|av1]"
                ));
            }
        }
    }
    Ok(args)
}

/// Set by SIGINT and SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
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
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data_mut(0).expect("BGRA has one plane");
            common::draw_scene(data, stride, *c, start.elapsed());
            *c += 1;
            true
        },
    ));

    let sink = gst::ElementFactory::make("callsink")
        .property("channel", &args.channel)
        .property("uid", "demo-track")
        .property("port", args.port)
        .property_from_str("codec", &args.codec)
        .build()?;
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([src.upcast_ref(), &sink])?;
    src.link(&sink)?;
    pipeline.set_state(gst::State::Playing)?;

    let bus = pipeline.bus().expect("pipelines have a bus");
    let deadline = args.duration.map(|d| Instant::now() + d);
    // At the end of --duration, or on Ctrl-C / SIGTERM: end the stream, so that callsink
    // leaves the call, and wait for the EOS to reach the bus.
    let mut ending: Option<Instant> = None;
    let mut result = Ok(());
    loop {
        let now = Instant::now();
        if ending.is_none() && (STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d))
        {
            println!("ending the call");
            pipeline.send_event(gst::event::Eos::new());
            ending = Some(now);
        }
        if ending.is_some_and(|e| now.duration_since(e) > Duration::from_secs(5)) {
            result = Err("no EOS within 5 s of the end of the stream".to_owned());
            break;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
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
            gst::MessageView::Eos(_) => {
                println!("the call ended (EOS)");
                break;
            }
            _ => (),
        }
    }
    let stats: gst::Structure = sink.property("stats");
    println!("send stats: {stats}");
    pipeline.set_state(gst::State::Null)?;
    result.map_err(Into::into)
}
