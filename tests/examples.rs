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
    gst::init().unwrap();
    let pipeline = gst::parse::launch(
        "filesrc name=file ! matroskademux ! vp8dec ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline
        .by_name("file")
        .unwrap()
        .set_property("location", path.to_str().expect("UTF-8 path"));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
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
