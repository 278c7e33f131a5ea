// SPDX-License-Identifier: MPL-2.0
//! The examples, run for real: the Rust push and draw apps write WebM files that decode, and
//! the Python app pushes through the action signals.

mod common;

use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>: tests run from target/<profile>/deps.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("customvideo-example-{}-{name}", std::process::id()))
}

/// Decodes a WebM file and returns the number of frames and their size.
fn decode(path: &Path) -> (usize, i32, i32) {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! matroskademux ! vp8dec ! appsink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut n, mut w, mut h) = (0, 0, 0);
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        w = s.get::<i32>("width").unwrap();
        h = s.get::<i32>("height").unwrap();
        n += 1;
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (n, w, h)
}

fn run_example(name: &str) {
    let out = tmp(&format!("{name}.webm"));
    let exe = target_dir().join("examples").join(name);
    assert!(
        exe.exists(),
        "{} is not built (cargo test builds examples)",
        exe.display()
    );
    let result = Command::new(&exe)
        .args(["--duration", "2", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{name} failed: {stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("track stats: customvideosrc-stats"),
        "{stdout}"
    );
    let (frames, w, h) = decode(&out);
    let _ = std::fs::remove_file(&out);
    // 2 s at 30 fps; a loaded machine may lose a few at the ends.
    assert!(frames >= 45, "{name}: only {frames} frames in the file");
    assert_eq!((w, h), (640, 360));
}

#[test]
fn push_example_writes_a_playable_file() {
    run_example("push");
}

#[test]
fn draw_example_writes_a_playable_file() {
    run_example("draw");
}

fn python(args: &[&str]) -> (bool, String) {
    let out = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/push.py"))
        .args(args)
        .env("GST_PLUGIN_PATH", target_dir())
        .output()
        .expect("Debian's /usr/bin/python3 (python3-gi) is needed: run scripts/setup.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named 'gi'"),
        "/usr/bin/python3 lacks PyGObject: run scripts/setup.sh"
    );
    (out.status.success(), text)
}

#[test]
fn python_pushes_through_action_signals() {
    let (ok, text) = python(&["--frames", "12"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("PUSHED 12 OUT 12 FLOW ok COLOR-OK yes EOS yes"),
        "{text}"
    );
}

#[test]
fn python_wrong_size_is_refused_with_a_named_error() {
    let (ok, text) = python(&["--bad-size"]);
    assert!(ok, "{text}");
    assert!(text.contains("BAD-SIZE flow=error"), "{text}");
    assert!(
        text.contains("1000 bytes") && text.contains("307200"),
        "{text}"
    );
}
