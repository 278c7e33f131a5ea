// SPDX-License-Identifier: MPL-2.0
//! A call bot: it watches one publisher of a channel (`callsrc`), processes the video (by
//! default a mirror image, `videoflip video-direction=horiz`; any GStreamer filters with
//! `--filter`) and publishes the result back into the same channel as a track of its own
//! (`callsink`). The whole watch-and-process part is the producer of a `customvideosrc`:
//!
//! ```text
//! customvideosrc producer="callsrc server=… channel=… uid=…" processor="<filter>" framerate=30/1
//!     ! callsink server=… channel=… uid=<out-uid>
//! ```
//!
//! so the bot's track keeps a steady 30 fps whatever the watched publisher sends, and keeps the
//! size of its first frame.
//!
//! ```text
//! cargo run --example bot -- --server http://127.0.0.1:8080 --channel demo [--uid cam]
//!     [--out-uid bot] [--filter "videoflip video-direction=horiz"] [--codec auto]
//!     [--token SECRET] [--view-token SECRET] [--timeout 30] [--duration SECS]
//!     [--on-publisher-gone freeze|black|eos]
//! ```
//!
//! Without `--uid` it watches the first publisher of the channel (and the next one when that
//! one leaves). While the watched publisher is gone, the bot's track repeats the last picture
//! (`--on-publisher-gone freeze`, the default), shows black (`black`) or ends (`eos`). It runs
//! until Ctrl-C or SIGTERM (or for `--duration` seconds), or until the watched stream ends;
//! then it ends its stream (EOS), leaves the call and prints its statistics. Exit status: 0
//! after a clean end, 1 when something failed (the message says what), 2 for bad arguments.

use gst::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: bot --server URL --channel CHANNEL [--uid UID] [--out-uid BOT] \
                     [--filter DESCRIPTION] [--codec auto|vp8|vp9|h264|av1] [--token SECRET] \
                     [--view-token SECRET] [--timeout SECS] [--duration SECS] \
                     [--on-publisher-gone freeze|black|eos]";

struct Args {
    server: String,
    channel: String,
    /// The publisher to watch; none: the first of the channel.
    uid: Option<String>,
    out_uid: String,
    filter: String,
    codec: String,
    /// Publish token (callsink), also used to watch unless `view_token` is given.
    token: Option<String>,
    view_token: Option<String>,
    /// How long to wait for the publisher to watch.
    timeout: u32,
    duration: Option<Duration>,
    /// callsrc's `on-publisher-gone`.
    gone: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: String::new(),
        channel: String::new(),
        uid: None,
        out_uid: "bot".into(),
        filter: "videoflip video-direction=horiz".into(),
        codec: "auto".into(),
        token: None,
        view_token: None,
        timeout: 30,
        duration: None,
        gone: "freeze".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--server" => args.server = value()?,
            "--channel" => args.channel = value()?,
            "--uid" => args.uid = Some(value()?),
            "--out-uid" => args.out_uid = value()?,
            "--filter" => args.filter = value()?,
            "--codec" => {
                args.codec = value()?;
                if !["auto", "vp8", "vp9", "h264", "av1"].contains(&args.codec.as_str()) {
                    return Err(format!(
                        "--codec {}: use auto, vp8, vp9, h264 or av1",
                        args.codec
                    ));
                }
            }
            "--on-publisher-gone" => {
                args.gone = value()?;
                if !["freeze", "black", "eos"].contains(&args.gone.as_str()) {
                    return Err(format!(
                        "--on-publisher-gone {}: use freeze, black or eos",
                        args.gone
                    ));
                }
            }
            "--token" => args.token = Some(value()?),
            "--view-token" => args.view_token = Some(value()?),
            "--timeout" => {
                let v = value()?;
                args.timeout = v
                    .parse()
                    .ok()
                    .filter(|t| (1..=3600).contains(t))
                    .ok_or(format!(
                        "--timeout: {v:?} is not a number of seconds from 1 to 3600"
                    ))?;
            }
            "--duration" => {
                let v = value()?;
                args.duration = Some(
                    v.parse::<f64>()
                        .ok()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .filter(|d| !d.is_zero())
                        .ok_or(format!(
                            "--duration: {v:?} is not a positive number of seconds"
                        ))?,
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if args.server.is_empty() || args.channel.is_empty() {
        return Err("--server and --channel are needed".into());
    }
    // The filter is checked here, so that a typo is named at once rather than as a producer
    // that failed to start.
    gst::parse::bin_from_description(&args.filter, true).map_err(|e| {
        format!(
            "--filter {:?} is not a GStreamer description: {e}",
            args.filter
        )
    })?;
    if args.uid.as_deref() == Some(args.out_uid.as_str()) {
        return Err(format!(
            "--out-uid {}: the bot would watch itself; give it another uid",
            args.out_uid
        ));
    }
    Ok(args)
}

/// `value` as a quoted value in a gst-launch description.
fn quoted(name: &str, value: &str) -> Result<String, String> {
    if value.contains(['"', '\\']) || value.chars().any(char::is_control) {
        return Err(format!(
            "{name} {value:?}: quotes, backslashes and control characters are not allowed"
        ));
    }
    Ok(format!("\"{value}\""))
}

/// Set by SIGINT and SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The name of the element that posted `msg`, for messages.
fn source_of(msg: &gst::MessageRef) -> String {
    msg.src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default()
}

fn run(args: &Args) -> Result<(), String> {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let server = args.server.trim_end_matches('/');
    // What the bot watches: callsrc, as the producer of the bot's own track.
    let mut watch = format!(
        "callsrc server={} channel={} timeout={} on-publisher-gone={}",
        quoted("--server", server)?,
        quoted("--channel", &args.channel)?,
        args.timeout,
        args.gone
    );
    if let Some(uid) = &args.uid {
        watch += &format!(" uid={}", quoted("--uid", uid)?);
    }
    if let Some(token) = args.view_token.as_ref().or(args.token.as_ref()) {
        watch += &format!(" token={}", quoted("--view-token", token)?);
    }
    let track = CustomVideoSrc::new(Some("track"));
    track.set_property("producer", &watch);
    track.set_property("processor", &args.filter);
    track.set_property("framerate", gst::Fraction::new(30, 1));
    track.set_property("label", format!("{} ({})", args.out_uid, args.filter));
    let mut publish = gst::ElementFactory::make("callsink")
        .name("publish")
        .property("server", server)
        .property("channel", &args.channel)
        .property("uid", &args.out_uid)
        .property_from_str("codec", &args.codec);
    if let Some(token) = &args.token {
        publish = publish.property("token", token);
    }
    let publish = publish.build().map_err(|e| format!("callsink: {e}"))?;
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([track.upcast_ref(), &publish])
        .map_err(|e| e.to_string())?;
    track.link(&publish).map_err(|e| e.to_string())?;

    let watched = match &args.uid {
        Some(uid) => format!("{server}/whep/{}/{uid}", args.channel),
        None => format!(
            "the first publisher of channel {} on {server}",
            args.channel
        ),
    };
    println!("watching {watched}");
    println!(
        "publishing it through \"{}\" as {} in {}/{}",
        args.filter, args.out_uid, server, args.channel
    );
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| "the pipeline cannot start".to_owned())?;

    let result = event_loop(&pipeline, args);
    // Read before the pipeline stops: a stopped element starts counting anew.
    let track_stats = track.stats();
    let send_stats: gst::Structure = publish.property("stats");
    println!("track stats: {track_stats}");
    println!("send stats: {send_stats}");
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Runs until the end of the stream; returns what failed, if anything.
fn event_loop(pipeline: &gst::Pipeline, args: &Args) -> Result<(), String> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    let deadline = args.duration.map(|d| Instant::now() + d);
    // At the end of --duration, or on Ctrl-C / SIGTERM: end the stream, so that callsink
    // leaves the call, and wait for the EOS to reach the bus.
    let mut ending: Option<Instant> = None;
    let mut failure: Option<String> = None;
    let mut eos = false;
    loop {
        let now = Instant::now();
        if ending.is_none() && (STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d))
        {
            println!("ending the bot's stream");
            pipeline.send_event(gst::event::Eos::new());
            ending = Some(now);
        }
        if !eos && ending.is_some_and(|e| now.duration_since(e) > Duration::from_secs(5)) {
            return Err("no EOS within 5 s of the end of the stream".to_owned());
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            if eos {
                // Nothing more was posted after the EOS.
                return failure.map_or(Ok(()), Err);
            }
            continue;
        };
        match msg.view() {
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure() else { continue };
                match s.name().as_str() {
                    "callsink-connection-state" => println!(
                        "publishing: {}",
                        s.get::<String>("state").unwrap_or_default()
                    ),
                    // The producer (callsrc and the filter) ended: the watched stream ended,
                    // or watching failed. The track sends EOS; the bot ends with it.
                    "track-ended" => {
                        let reason = s.get::<String>("reason").unwrap_or_default();
                        if s.get::<bool>("error").unwrap_or(false) {
                            println!("watching failed: {reason}");
                            failure = Some(format!("watching {}: {reason}", args.channel));
                        } else {
                            println!("the watched stream ended: {reason}");
                        }
                    }
                    _ => (),
                }
            }
            gst::MessageView::Warning(w) => {
                eprintln!("warning from {}: {}", source_of(&msg), w.error());
            }
            gst::MessageView::Error(e) => {
                return Err(match e.debug() {
                    Some(d) => format!("{}: {} ({d})", source_of(&msg), e.error()),
                    None => format!("{}: {}", source_of(&msg), e.error()),
                });
            }
            gst::MessageView::Eos(_) => {
                // When the watched stream ends, its track-ended message may come just after
                // the EOS it caused: what was posted right after it is still read.
                println!("the bot's stream ended (EOS)");
                eos = true;
            }
            _ => (),
        }
    }
}

fn main() -> ExitCode {
    if let Err(e) = gst::init() {
        eprintln!("bot: GStreamer cannot start: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = gstcustomvideo::plugin_register_static() {
        eprintln!("bot: the customvideo plugin does not register: {e}");
        return ExitCode::FAILURE;
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bot: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bot: {e}");
            ExitCode::FAILURE
        }
    }
}
