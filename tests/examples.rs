// SPDX-License-Identifier: MPL-2.0
//! The examples, run for real: the Rust push and draw apps write WebM files that decode to
//! the expected frames, and the Python app pushes through the action signals.
//!
//! `cargo test --test examples` builds only this test, so the examples are built here (once,
//! with the same profile and target directory): running a stale binary would test old code.

use gst::prelude::*;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

use common::build::{build_examples, plugin_dir};

/// A file name in the temporary directory, unique to this test process.
fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("customvideo-example-{}-{name}", std::process::id()))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

struct Decoded {
    frames: usize,
    /// Frames that differ from every other one (the animation moves).
    distinct: usize,
    width: i32,
    height: i32,
}

/// Decodes a WebM file in this process: `filesrc ! matroskademux ! vp8dec ! appsink`.
fn decode(path: &Path) -> Decoded {
    let (pipeline, sink) = common::play_file(path, "vp8dec");
    let mut d = Decoded {
        frames: 0,
        distinct: 0,
        width: 0,
        height: 0,
    };
    let mut seen = HashSet::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        d.width = s.get::<i32>("width").unwrap();
        d.height = s.get::<i32>("height").unwrap();
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let mut h = DefaultHasher::new();
        map.as_slice().hash(&mut h);
        seen.insert(h.finish());
        d.frames += 1;
    }
    let bus = pipeline.bus().unwrap();
    let error = bus.pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "decoding {}: {error:?}", path.display());
    d.distinct = seen.len();
    d
}

/// Runs example `name` for 2 s and checks the file it writes.
fn run_example(name: &str) {
    let exe = build_examples().join("examples").join(name);
    let file = tmp(&format!("{name}.webm"));
    let out = Command::new(&exe)
        .args(["--duration", "2", "--output"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    let output = text(&out);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let decoded = (size > 0).then(|| decode(&file));
    let _ = std::fs::remove_file(&file);

    assert!(out.status.success(), "{name} failed:\n{output}");
    assert!(
        output.contains("track stats: customvideosrc-stats"),
        "{name} printed no track statistics:\n{output}"
    );
    assert!(
        output.contains(&format!("wrote {}", file.display())),
        "{name} did not name its file:\n{output}"
    );
    // 640x360 VP8 of a simple scene: some kB per second.
    assert!(size > 10_000, "{name}: the file has only {size} bytes");
    let d = decoded.expect("the file exists");
    assert_eq!((d.width, d.height), (640, 360), "{name}: frame size");
    // 2 s at 30 fps is 60 frames; a loaded machine may start late or lose a few.
    assert!(
        d.frames >= 40,
        "{name}: only {} frames in the file",
        d.frames
    );
    assert!(
        d.distinct >= d.frames / 2,
        "{name}: only {} different pictures in {} frames: the animation does not move",
        d.distinct,
        d.frames
    );
}

#[test]
fn push_example_writes_a_playable_file() {
    run_example("push");
}

#[test]
fn draw_example_writes_a_playable_file() {
    run_example("draw");
}

#[test]
fn push_example_fails_clearly_on_a_pipeline_error() {
    let exe = build_examples().join("examples").join("push");
    let out = Command::new(&exe)
        .args(["--duration", "1", "--output", "/nonexistent-dir/out.webm"])
        .output()
        .unwrap();
    let output = text(&out);
    assert!(!out.status.success(), "push succeeded:\n{output}");
    assert!(
        output.contains("Could not open file") && output.contains("/nonexistent-dir/out.webm"),
        "push did not say what failed:\n{output}"
    );
}

fn python(args: &[&str]) -> (bool, String) {
    const PYTHON: &str = "/usr/bin/python3";
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let probe = Command::new(PYTHON)
            .args([
                "-c",
                "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst",
            ])
            .output()
            .unwrap_or_else(|e| panic!("{PYTHON} cannot run ({e}): run scripts/setup.sh"));
        assert!(
            probe.status.success(),
            "{PYTHON} lacks PyGObject for GStreamer (python3-gi, gir1.2-gstreamer-1.0): run scripts/setup.sh\n{}",
            text(&probe)
        );
    });
    let out = Command::new(PYTHON)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/push.py"))
        .args(args)
        .env("GST_PLUGIN_PATH", plugin_dir())
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn python_pushes_through_action_signals() {
    let (ok, output) = python(&["--frames", "12"]);
    assert!(
        output.contains("PUSHED 12 OUT 12 FLOW ok COLOR-OK yes EOS yes"),
        "{output}"
    );
    assert!(ok, "push.py exited with an error:\n{output}");
}

#[test]
fn python_wrong_size_is_refused_with_a_named_error() {
    let (ok, output) = python(&["--bad-size"]);
    let line = output
        .lines()
        .find(|l| l.starts_with("BAD-SIZE "))
        .unwrap_or_else(|| panic!("no BAD-SIZE line:\n{output}"));
    let flow = line
        .strip_prefix("BAD-SIZE flow=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no flow in {line:?}"));
    assert_ne!(
        flow, "ok",
        "a buffer of the wrong size was accepted: {line}"
    );
    // 320x240 RGBA is 307200 bytes; the script pushes 1000.
    assert!(
        line.contains("1000 bytes") && line.contains("307200"),
        "the error does not name both sizes: {line}"
    );
    assert!(ok, "push.py --bad-size exited with an error:\n{output}");
}

/// Compiles `examples/push.c` as the README says: `cc … $(pkg-config --cflags --libs
/// gstreamer-1.0)`.
fn build_c_example() -> PathBuf {
    let out = tmp("push-c");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "gstreamer-1.0"])
        .output()
        .expect("pkg-config runs (scripts/setup.sh installs it)");
    assert!(flags.status.success(), "pkg-config: {}", text(&flags));
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    let cc = Command::new("cc")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/push.c"))
        .arg("-o")
        .arg(&out)
        .args(["-Wall", "-Werror"])
        .args(flags.split_whitespace())
        .output()
        .expect("cc runs (a C compiler comes with the Rust toolchain's needs: gcc)");
    assert!(
        cc.status.success(),
        "examples/push.c does not compile:\n{}",
        text(&cc)
    );
    out
}

#[test]
fn c_app_pushes_frames_into_a_call() {
    if !common::netns::enter("c_app_pushes_frames_into_a_call") {
        return;
    }
    let app = build_c_example();
    let server = common::callserver::ServerProcess::start(
        "127.0.0.1",
        common::callserver::free_port("127.0.0.1"),
    );
    let mut child = Command::new(&app)
        .args([server.url().as_str(), "6", "c-call", "c-app"])
        .env("GST_PLUGIN_PATH", plugin_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the C example runs");
    // The call server lists the C app's track, receiving frames.
    let listed = common::wait_for(std::time::Duration::from_secs(20), || {
        server
            .publisher("c-call", "c-app")
            .is_some_and(|p| p["state"] == "connected" && p["frames"].as_u64().unwrap_or(0) > 10)
    });
    let publisher = server.publisher("c-call", "c-app");
    if !listed {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the C example ends");
    assert!(
        listed,
        "the server never listed the C app receiving frames: {publisher:?}\n{}",
        text(&out)
    );
    assert!(
        out.status.success(),
        "the C example failed:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("PUSHED 180 frames, EOS"),
        "{}",
        text(&out)
    );
    // It left the call at the end of the stream.
    assert!(
        common::wait_for(std::time::Duration::from_secs(3), || server
            .publisher("c-call", "c-app")
            .is_none()),
        "the C app is still listed after its end"
    );
}

/// The demo program (`scripts/demo.sh` runs its release build), for `secs` or until SIGINT.
fn demo(port: u16, duration: Option<u64>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_customvideo-demo"));
    cmd.args(["--port", &port.to_string(), "--channel", "demo-test"]);
    if let Some(d) = duration {
        cmd.args(["--duration", &d.to_string()]);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo runs")
}

/// The demo's track as the embedded call server lists it.
fn demo_track(port: u16) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{port}/api/channels/demo-test");
    let text = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let channel: serde_json::Value = serde_json::from_str(&text).ok()?;
    channel["publishers"]
        .as_array()?
        .iter()
        .find(|p| p["uid"] == "demo-track")
        .cloned()
}

fn wait_for_frames(port: u16) -> bool {
    common::wait_for(std::time::Duration::from_secs(30), || {
        demo_track(port)
            .is_some_and(|p| p["state"] == "connected" && p["frames"].as_u64().unwrap_or(0) > 30)
    })
}

#[test]
fn demo_publishes_then_ends_at_its_duration_and_on_ctrl_c() {
    if !common::netns::enter("demo_publishes_then_ends_at_its_duration_and_on_ctrl_c") {
        return;
    }
    // --duration: the call runs, then the stream ends (EOS on the bus) and the demo exits 0.
    let port = common::callserver::free_port("127.0.0.1");
    let child = demo(port, Some(8));
    let published = wait_for_frames(port);
    let out = child.wait_with_output().expect("the demo ends");
    let log = text(&out);
    assert!(published, "the call never had the demo's frames: {log}");
    assert!(out.status.success(), "the demo failed:\n{log}");
    for line in [
        "Watch it in a browser: http://127.0.0.1:",
        "connection: connected",
        "the call ended (EOS)",
        "send stats:",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }

    // Ctrl-C: the same clean end, within a few seconds.
    let port = common::callserver::free_port("127.0.0.1");
    let child = demo(port, None);
    let published = wait_for_frames(port);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().expect("the demo ends");
    let log = text(&out);
    assert!(published, "the call never had the demo's frames: {log}");
    assert!(out.status.success(), "the demo failed on Ctrl-C:\n{log}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(log.contains("the call ended (EOS)"), "{log}");
    assert!(log.contains("connection: closed"), "{log}");
}

// --- The call bot (examples/bot.rs) ----------------------------------------------------------

/// The bot example, built with the tests' profile.
fn bot_exe() -> PathBuf {
    common::build::cargo_build(&["--example", "bot"])
        .join("examples")
        .join("bot")
}

/// What a callsrc watching one publisher sees: RGBA at the middle of the left and the right
/// quarter of the last frame, and its size.
#[derive(Debug, Default, Clone, Copy)]
struct Sides {
    frames: usize,
    left: [u8; 4],
    right: [u8; 4],
    width: u32,
    height: u32,
}

/// `callsrc server=… channel=… uid=… ! videoconvert ! RGBA appsink`, recording [`Sides`].
struct SidesWatch {
    pipeline: gst::Pipeline,
    seen: std::sync::Arc<std::sync::Mutex<Sides>>,
}

impl SidesWatch {
    fn start(server: &str, channel: &str, uid: &str) -> SidesWatch {
        common::init();
        let pipeline = gst::parse::launch(&format!(
            "callsrc server={server} channel={channel} uid={uid} timeout=30 ! videoconvert ! \
             video/x-raw,format=RGBA ! appsink name=sink sync=false max-buffers=2 drop=true"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let seen: std::sync::Arc<std::sync::Mutex<Sides>> = Default::default();
        let s = seen.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let (Some(caps), Some(buffer)) = (sample.caps(), sample.buffer()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let (Ok(info), Ok(map)) =
                        (gst_video::VideoInfo::from_caps(caps), buffer.map_readable())
                    else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let (w, h) = (info.width() as usize, info.height() as usize);
                    let px = |x: usize| {
                        let o = (h / 2) * info.stride()[0] as usize + x * 4;
                        let p = &map[o..o + 4];
                        [p[0], p[1], p[2], p[3]]
                    };
                    let mut seen = s.lock().unwrap();
                    *seen = Sides {
                        frames: seen.frames + 1,
                        left: px(w / 4),
                        right: px(3 * w / 4),
                        width: w as u32,
                        height: h as u32,
                    };
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        SidesWatch { pipeline, seen }
    }

    fn sides(&self) -> Sides {
        *self.seen.lock().unwrap()
    }

    /// Waits until the left side is near `left` and the right side near `right`.
    fn wait_sides(&self, left: [u8; 3], right: [u8; 3], timeout: std::time::Duration) -> bool {
        common::wait_for(timeout, || {
            let s = self.sides();
            s.frames > 5 && common::near(s.left, left, 60) && common::near(s.right, right, 60)
        })
    }

    fn error(&self) -> Option<String> {
        let msg = self
            .pipeline
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        }
    }
}

impl Drop for SidesWatch {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

/// A call server in this process (127.0.0.1, any port) and a callsink publisher `cam` in
/// channel `mirror` whose picture is red on the left half and blue on the right half.
fn mirror_call() -> (gstcustomvideo::server::CallServer, common::Launched) {
    common::init();
    let server = gstcustomvideo::server::CallServer::start(gstcustomvideo::server::ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("the call server starts");
    let publisher = common::Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
         foreground-color=0xffff0000 ! video/x-raw,width=160,height=240 ! videobox right=-160 \
         fill=blue\" framerate=30/1 optimization-mode=detail ! callsink server={} channel=mirror \
         uid=cam codec=vp8",
        server.url()
    ))
    .play();
    (server, publisher)
}

fn bot(exe: &Path, server: &str, args: &[&str]) -> std::process::Child {
    Command::new(exe)
        .args(["--server", server, "--channel", "mirror"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the bot runs")
}

#[test]
fn bot_publishes_a_mirrored_track_into_the_channel_and_ends_on_sigterm() {
    if !common::netns::enter("bot_publishes_a_mirrored_track_into_the_channel_and_ends_on_sigterm")
    {
        return;
    }
    const SEC: std::time::Duration = std::time::Duration::from_secs(1);
    let t0 = std::time::Instant::now();
    let exe = bot_exe();
    eprintln!("bot built in {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let (server, publisher) = mirror_call();
    // The publisher's own picture, as any viewer sees it: red left, blue right.
    let original = SidesWatch::start(&server.url(), "mirror", "cam");
    assert!(
        original.wait_sides(RED, BLUE, 30 * SEC),
        "the publisher's picture: {:?}, {:?}, {:?}",
        original.sides(),
        original.error(),
        publisher.error()
    );
    drop(original);
    eprintln!("publisher seen after {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();

    let child = bot(
        &exe,
        &server.url(),
        &["--uid", "cam", "--out-uid", "mirror-bot"],
    );
    let pid = child.id() as i32;
    // The bot's track is in the channel, receiving frames.
    let listed = common::wait_for(30 * SEC, || {
        server.channels().iter().any(|c| {
            c.name == "mirror"
                && c.publishers
                    .iter()
                    .any(|p| p.uid == "mirror-bot" && p.frames > 10)
        })
    });
    // ... and shows the publisher's picture mirrored: blue left, red right, same size.
    let mirrored = listed.then(|| SidesWatch::start(&server.url(), "mirror", "mirror-bot"));
    let flipped = mirrored
        .as_ref()
        .is_some_and(|w| w.wait_sides(BLUE, RED, 30 * SEC));
    let seen = mirrored.as_ref().map(|w| (w.sides(), w.error()));
    drop(mirrored);
    eprintln!(
        "bot's track listed {listed}, mirrored {flipped} after {:?}",
        t0.elapsed()
    );

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().expect("the bot ends");
    let took = asked.elapsed();
    eprintln!("the bot ended {took:?} after SIGTERM");
    let log = text(&out);
    assert!(
        listed,
        "the server never listed the bot's track: {:?}\n{log}",
        server.channels()
    );
    assert!(flipped, "the bot's track is not mirrored: {seen:?}\n{log}");
    // The publisher's 320x240 (or smaller, when the bot's own bandwidth estimate dipped: its
    // callsink scales the picture down), never another shape.
    let (sides, _) = seen.unwrap();
    assert!(
        sides.width <= 320 && sides.width >= 160 && sides.width * 3 == sides.height * 4,
        "{sides:?}"
    );
    assert!(out.status.success(), "the bot failed on SIGTERM:\n{log}");
    assert!(took < 5 * SEC, "the bot took {took:?} to end on SIGTERM");
    for line in [
        "watching ",
        "/whep/mirror/cam",
        "publishing: connected",
        "the bot's stream ended (EOS)",
        "track stats: customvideosrc-stats",
        "send stats: callsink-stats",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    // It left the call.
    assert!(
        common::wait_for(3 * SEC, || !server
            .channels()
            .iter()
            .flat_map(|c| c.publishers.iter())
            .any(|p| p.uid == "mirror-bot")),
        "the bot is still listed after its end: {:?}",
        server.channels()
    );
    assert_eq!(publisher.error(), None);
}

#[test]
fn bot_ends_at_its_duration_and_names_what_fails() {
    if !common::netns::enter("bot_ends_at_its_duration_and_names_what_fails") {
        return;
    }
    const SEC: std::time::Duration = std::time::Duration::from_secs(1);
    let t0 = std::time::Instant::now();
    let exe = bot_exe();
    eprintln!("bot built in {:?}", t0.elapsed());
    let (server, _publisher) = mirror_call();
    let url = server.url();

    // --duration, watching the first publisher of the channel (no --uid): a clean end.
    let started = std::time::Instant::now();
    let out = bot(&exe, &url, &["--duration", "8"])
        .wait_with_output()
        .unwrap();
    let log = text(&out);
    eprintln!("--duration 8: ran {:?}", started.elapsed());
    assert!(out.status.success(), "{log}");
    assert!(started.elapsed() < 15 * SEC, "{:?}", started.elapsed());
    for line in [
        "the first publisher of channel mirror",
        "publishing: connected",
        "ending the bot's stream",
        "the bot's stream ended (EOS)",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }

    // A publisher that never comes: exit status 1 and a message naming it, in bounded time.
    let started = std::time::Instant::now();
    let out = bot(&exe, &url, &["--uid", "nobody", "--timeout", "2"])
        .wait_with_output()
        .unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("no publisher") && log.contains("/whep/mirror/nobody"),
        "{log}"
    );
    eprintln!("missing publisher: ran {:?}", started.elapsed());
    assert!(started.elapsed() < 15 * SEC, "{:?}", started.elapsed());

    // --on-publisher-gone eos: when the watched publisher leaves, the bot's stream ends and
    // the bot with it (exit 0), and it leaves the channel.
    let leaver = common::Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 ! callsink \
         server={url} channel=mirror uid=leaver codec=vp8"
    ))
    .play();
    let mut child = bot(
        &exe,
        &url,
        &[
            "--uid",
            "leaver",
            "--out-uid",
            "leaver-bot",
            "--on-publisher-gone",
            "eos",
        ],
    );
    let bot_listed = || {
        server
            .channels()
            .iter()
            .flat_map(|c| c.publishers.iter())
            .any(|p| p.uid == "leaver-bot" && p.frames > 10)
    };
    let listed = common::wait_for(30 * SEC, bot_listed);
    drop(leaver);
    let left = std::time::Instant::now();
    let ended = common::wait_for(20 * SEC, || child.try_wait().is_ok_and(|s| s.is_some()));
    let took = left.elapsed();
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let log = text(&out);
    eprintln!("the bot ended {took:?} after its publisher left");
    assert!(listed, "the bot never published: {log}");
    assert!(ended, "the bot did not end when its publisher left:\n{log}");
    assert!(out.status.success(), "{log}");
    for line in ["the watched stream ended", "the bot's stream ended (EOS)"] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    assert!(
        common::wait_for(3 * SEC, || !bot_listed()),
        "{:?}",
        server.channels()
    );

    // Bad arguments: exit status 2 and the usage.
    for (args, says) in [
        (&["--uid", "bot"][..], "would watch itself"),
        (&["--filter", "videoflip ! ! x"][..], "--filter"),
        (&["--codec", "mpeg2"][..], "--codec mpeg2"),
        (
            &["--on-publisher-gone", "wait"][..],
            "use freeze, black or eos",
        ),
    ] {
        let out = bot(&exe, &url, args).wait_with_output().unwrap();
        let log = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {log}");
        assert!(log.contains(says), "{args:?}: {log}");
    }
}
