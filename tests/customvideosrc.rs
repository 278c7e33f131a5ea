// SPDX-License-Identifier: MPL-2.0
//! customvideosrc: each behaviour a user relies on, checked on real pipelines.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use gstcustomvideo::CustomVideoSrc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn i420_320() -> gst::Caps {
    caps("I420", 320, 240, 30)
}

/// A track whose pipeline runs on a test clock: its ticks come when the test says, so pacing
/// is exact however loaded the machine is.
struct Clocked {
    run: Run,
    clock: gst_check::TestClock,
}

impl Clocked {
    fn new(src: &str, tail: &str) -> Clocked {
        let run = Run::new(src, tail, false);
        let clock = gst_check::TestClock::new();
        run.pipeline.use_clock(Some(&clock));
        Clocked { run, clock }
    }

    /// Lets the track clock reach its next `n` ticks and returns the buffer of each.
    fn ticks(&self, n: usize) -> Vec<Out> {
        let start = self.run.count();
        for i in 1..=n {
            self.clock.crank();
            assert!(
                self.run.wait_frames(start + i, 5 * SEC),
                "tick {i}: no frame"
            );
        }
        self.run.frames()[start..].to_vec()
    }
}

impl std::ops::Deref for Clocked {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

// ----- 1. documentation -------------------------------------------------------------------

#[test]
fn registry_documents_every_property_and_signal() {
    init();
    let factory = gst::ElementFactory::find("customvideosrc").expect("registered");
    assert_eq!(factory.metadata("klass"), Some("Source/Video"));
    let src = CustomVideoSrc::new(None);
    let names: Vec<String> = src
        .list_properties()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    for want in [
        "producer",
        "processor",
        "caps",
        "width",
        "height",
        "framerate",
        "format",
        "encoder-config",
        "bitrate-min",
        "bitrate-max",
        "optimization-mode",
        "rotation",
        "enabled",
        "muted",
        "max-buffers",
        "on-producer-end",
        "track-id",
        "label",
        "stats",
    ] {
        assert!(names.iter().any(|n| n == want), "missing property {want}");
    }
    for p in src.list_properties() {
        let blurb = p.blurb().unwrap_or_default();
        assert!(
            blurb.len() > 20 && blurb != p.name(),
            "property {} lacks a useful blurb: {blurb:?}",
            p.name()
        );
    }
    for signal in [
        "push-buffer",
        "push-sample",
        "end-of-stream",
        "replace-producer",
        "draw-frame",
        "track-ended",
    ] {
        assert!(
            glib::subclass::SignalId::lookup(signal, CustomVideoSrc::static_type()).is_some(),
            "missing signal {signal}"
        );
    }
}

#[test]
fn gst_inspect_shows_the_element() {
    init();
    // The real tool, with the built plugin on GST_PLUGIN_PATH.
    let dir = plugin_dir();
    let out = std::process::Command::new("gst-inspect-1.0")
        .arg("customvideosrc")
        .env("GST_PLUGIN_PATH", &dir)
        .output()
        .expect("gst-inspect-1.0 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Custom video track source",
        "Element Actions",
        "push-buffer",
        "push-sample",
        "end-of-stream",
        "replace-producer",
        "draw-frame",
        "track-ended",
        "encoder-config",
        "720p_2",
        "on-producer-end",
        "Range: 1 - 1000 Default: 2",
    ] {
        assert!(text.contains(want), "gst-inspect output lacks {want:?}");
    }
    let out = std::process::Command::new("gst-inspect-1.0")
        .arg("customvideo")
        .env("GST_PLUGIN_PATH", &dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("customvideosrc"));
}

fn plugin_dir() -> std::path::PathBuf {
    // tests run from target/<profile>/deps; the plugin is in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("libgstcustomvideo.so").exists(),
        "plugin not built in {}",
        dir.display()
    );
    dir
}

// ----- 2. producers -------------------------------------------------------------------------

#[test]
fn pushed_buffer_arrives_without_copy() {
    let run = Run::new("customvideosrc name=src", "", false);
    run.src.set_property("caps", i420_320());
    run.play();
    let mut sent = Vec::new();
    for i in 0..5 {
        let buf = solid("I420", 320, 240, RED);
        sent.push(buf.map_readable().unwrap().as_slice().as_ptr() as usize);
        run.src.push_frame(buf).unwrap();
        // VFR: every pushed frame leaves; wait for it so none is dropped.
        assert!(run.wait_frames(i + 1, 5 * SEC));
    }
    let got: Vec<usize> = run.frames().iter().map(|o| o.data).collect();
    assert_eq!(got, sent, "buffers were copied on their way through");
    let stats = run.src.stats();
    assert_eq!(stats.get::<u64>("frames-in").unwrap(), 5);
    assert_eq!(stats.get::<u64>("frames-out").unwrap(), 5);
}

#[test]
fn action_signals_push_frames_and_end_the_stream() {
    let run = Run::new(
        "customvideosrc name=src",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    let sample = gst::Sample::builder()
        .buffer(&solid("RGBA", 64, 48, GREEN))
        .caps(&caps("RGBA", 64, 48, 30))
        .build();
    let ret = run
        .src
        .emit_by_name::<gst::FlowReturn>("push-sample", &[&sample]);
    assert_eq!(ret, gst::FlowReturn::Ok);
    let ret = run
        .src
        .emit_by_name::<gst::FlowReturn>("push-buffer", &[&solid("RGBA", 64, 48, BLUE)]);
    assert_eq!(ret, gst::FlowReturn::Ok);
    assert!(run.wait_frames(2, 5 * SEC));
    let ret = run
        .src
        .emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    assert_eq!(ret, gst::FlowReturn::Ok);
    assert!(run.wait_eos(5 * SEC), "end-of-stream did not end the track");
    let f = run.frames();
    assert!(near(f[0].center.unwrap(), [0, 255, 0], 10));
    assert!(near(f[1].center.unwrap(), [0, 0, 255], 10));
    // After the end, pushing is refused with EOS.
    let ret = run
        .src
        .emit_by_name::<gst::FlowReturn>("push-buffer", &[&solid("RGBA", 64, 48, BLUE)]);
    assert_eq!(ret, gst::FlowReturn::Eos);
}

#[test]
fn full_queue_keeps_the_newest_frames_and_counts_drops() {
    // Frames pushed before PLAYING are held, at most max-buffers of them, newest kept.
    let run = Run::new(
        "customvideosrc name=src max-buffers=3",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.src.set_property("caps", caps("RGBA", 32, 32, 30));
    for i in 0..10u8 {
        run.src
            .push_frame(solid("RGBA", 32, 32, [i * 20, 0, 0, 255]))
            .unwrap();
    }
    let stats = run.src.stats();
    assert_eq!(stats.get::<u64>("frames-in").unwrap(), 10);
    assert_eq!(stats.get::<u64>("dropped").unwrap(), 7);
    run.play();
    assert!(run.wait_frames(3, 5 * SEC));
    std::thread::sleep(Duration::from_millis(100));
    let reds: Vec<u8> = run.frames().iter().map(|o| o.center.unwrap()[0]).collect();
    assert_eq!(reds, vec![140, 160, 180], "not the newest three frames");
}

#[test]
fn draw_callback_is_asked_at_the_track_rate() {
    // The track clock is a test clock: every tick is exact, however loaded the machine.
    let h = Clocked::new(
        "customvideosrc name=src framerate=30/1 width=64 height=48",
        "videoconvert ! video/x-raw,format=RGBA",
    );
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    h.src.set_draw_callback(Some(
        move |frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, _rt| {
            let mut n = c.lock().unwrap();
            *n += 1;
            // Default draw format: BGRA. Even calls green, odd calls blue.
            let px: [u8; 4] = if n.is_multiple_of(2) {
                [0, 255, 0, 255]
            } else {
                [255, 0, 0, 255]
            };
            for chunk in frame.plane_data_mut(0).unwrap().chunks_exact_mut(4) {
                chunk.copy_from_slice(&px);
            }
            true
        },
    ));
    h.play();
    let f = h.ticks(15);
    assert!(f.iter().all(|o| o.width == 64 && o.height == 48));
    // BGRA [255,0,0] is blue, [0,255,0] is green: they alternate.
    assert!(
        near(f[0].center.unwrap(), [0, 0, 255], 10),
        "{:?}",
        f[0].center
    );
    assert!(
        near(f[1].center.unwrap(), [0, 255, 0], 10),
        "{:?}",
        f[1].center
    );
    // 30 fps pacing: timestamps exactly one interval apart.
    assert_paced(&f, 30);
    assert!(*calls.lock().unwrap() as usize >= f.len());
}

#[test]
fn draw_frame_signal_hands_out_a_writable_buffer() {
    // The C way: a draw-frame handler maps the buffer writable and fills it.
    let run = Run::new(
        "customvideosrc name=src framerate=20/1",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.src.set_property("caps", caps("RGBA", 40, 30, 20));
    run.src.connect("draw-frame", false, |values| {
        let ptr = unsafe {
            glib::gobject_ffi::g_value_get_boxed(values[1].as_ptr()) as *mut gst::ffi::GstBuffer
        };
        let rt = values[2].get::<u64>().unwrap();
        assert!(!ptr.is_null());
        let buffer = unsafe { gst::BufferRef::from_mut_ptr(ptr) };
        // A buffer shared with someone else could not be mapped writable.
        let mut map = buffer
            .map_writable()
            .expect("draw-frame buffer is writable");
        for px in map.as_mut_slice().chunks_exact_mut(4) {
            px.copy_from_slice(&[200, 100, 0, 255]);
        }
        Some((rt < u64::MAX).to_value())
    });
    run.play();
    assert!(run.wait_frames(5, 5 * SEC));
    let f = run.frames();
    assert!(
        near(f[0].center.unwrap(), [200, 100, 0], 8),
        "{:?}",
        f[0].center
    );
    assert_eq!((f[0].width, f[0].height), (40, 30));
}

#[test]
fn producer_description_feeds_the_track() {
    let run = Run::new(
        "customvideosrc name=src producer=\"videotestsrc pattern=red ! video/x-raw,width=160,height=120\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(10, 5 * SEC));
    let f = run.frames();
    assert!(f.iter().all(|o| near(o.center.unwrap(), [255, 0, 0], 10)));
    assert_eq!((f[0].width, f[0].height), (160, 120));
}

#[test]
fn file_producer_plays_and_ends_the_track() {
    init();
    let dir = tempdir();
    let path = dir.join("clip.webm");
    let enc = gst::parse::launch(&format!(
        "videotestsrc num-buffers=20 pattern=green ! video/x-raw,width=128,height=96,framerate=20/1 ! vp8enc deadline=1 ! webmmux ! filesink location={}",
        path.display()
    ))
    .unwrap();
    enc.set_state(gst::State::Playing).unwrap();
    let bus = enc.bus().unwrap();
    bus.timed_pop_filtered(10 * gst::ClockTime::SECOND, &[gst::MessageType::Eos])
        .expect("clip written");
    enc.set_state(gst::State::Null).unwrap();

    let run = Run::new(
        &format!(
            "customvideosrc name=src producer=\"filesrc location={} ! decodebin\"",
            path.display()
        ),
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    let ended = Arc::new(Mutex::new(None::<String>));
    let e = ended.clone();
    run.src.connect("track-ended", false, move |v| {
        *e.lock().unwrap() = v[1].get::<String>().ok();
        None
    });
    run.play();
    assert!(
        run.wait_eos(10 * SEC),
        "the file's end did not end the track"
    );
    let f = run.frames();
    assert!(f.len() >= 15, "only {} frames of 20", f.len());
    assert!(
        near(f[5].center.unwrap(), [0, 255, 0], 40),
        "{:?}",
        f[5].center
    );
    assert!(
        ended
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .contains("end of stream")
    );
    let msgs = run.element_messages("track-ended");
    assert_eq!(msgs.len(), 1);
    assert!(!msgs[0].get::<bool>("error").unwrap());
    // The end is said before the EOS it causes reaches the bus.
    let posted = |kind: &dyn Fn(&common::Posted) -> bool| {
        wait_for(3 * SEC, || run.messages.lock().unwrap().iter().any(kind));
        run.messages.lock().unwrap().iter().position(kind)
    };
    let eos = posted(&|p| p.kind == gst::MessageType::Eos).expect("EOS on the bus");
    let ended = posted(&|p| {
        p.structure
            .as_ref()
            .is_some_and(|s| s.name() == "track-ended")
    });
    assert!(ended.unwrap() < eos, "track-ended after EOS");
    // Played at its own pace (20 fps), not as fast as possible.
    let span = f.last().unwrap().pts - f[0].pts;
    assert!(span > gst::ClockTime::from_mseconds(600), "span {span}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "customvideosrc-test-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn processor_is_applied_to_every_frame() {
    let run = Run::new(
        "customvideosrc name=src producer=\"videotestsrc pattern=white ! video/x-raw,width=64,height=48\" processor=\"videobalance brightness=-0.5\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(5, 5 * SEC));
    for o in run.frames() {
        let px = o.center.unwrap();
        assert!(px[0] < 190 && px[0] > 60, "white not darkened: {px:?}");
    }
}

#[test]
fn pushed_formats_are_converted_to_the_track_format() {
    for format in ["I420", "NV12", "RGBA", "BGRA", "YUY2"] {
        let run = Run::new(
            "customvideosrc name=src format=I420",
            "videoconvert ! video/x-raw,format=RGBA",
            false,
        );
        run.src.set_property("caps", caps(format, 64, 48, 30));
        run.play();
        run.src.push_frame(solid(format, 64, 48, RED)).unwrap();
        assert!(run.wait_frames(1, 5 * SEC), "{format}: no frame");
        let px = run.frames()[0].center.unwrap();
        assert!(near(px, [255, 0, 0], 30), "{format}: {px:?}");
        let c = run.caps_events.lock().unwrap()[0].clone();
        assert_eq!(
            c.structure(0).unwrap().get::<&str>("format").unwrap(),
            "RGBA"
        );
    }
}

#[test]
fn rotation_turns_frames_clockwise() {
    let run = Run::new(
        "customvideosrc name=src rotation=90",
        "videoconvert ! video/x-raw,format=RGBA",
        true,
    );
    run.src.set_property("caps", caps("I420", 64, 32, 30));
    run.play();
    // Red left half, blue right half.
    let frame = painted("I420", 64, 32, |x, _| if x < 32 { RED } else { BLUE });
    run.src.push_frame(frame).unwrap();
    assert!(run.wait_frames(1, 5 * SEC));
    let o = &run.frames()[0];
    assert_eq!(
        (o.width, o.height),
        (32, 64),
        "width and height not swapped"
    );
    let px = o.pixels.as_ref().unwrap();
    let at = |x: usize, y: usize| -> [u8; 4] {
        let i = (y * 32 + x) * 4;
        px[i..i + 4].try_into().unwrap()
    };
    // A clockwise quarter turn puts the left half on top.
    assert!(near(at(16, 8), [255, 0, 0], 40), "{:?}", at(16, 8));
    assert!(near(at(16, 56), [0, 0, 255], 40), "{:?}", at(16, 56));
}

// ----- 3. format and hints ------------------------------------------------------------------

#[test]
fn preset_sets_format_and_bitrate_tags() {
    let run = Run::new(
        "customvideosrc name=src encoder-config=720p_2 label=\"front camera\" optimization-mode=detail producer=\"videotestsrc\"",
        "",
        false,
    );
    assert_eq!(run.src.property::<u32>("width"), 1280);
    assert_eq!(run.src.property::<u32>("bitrate-max"), 2000);
    run.play();
    assert!(run.wait_frames(3, 5 * SEC));
    let c = run.caps_events.lock().unwrap()[0].clone();
    let s = c.structure(0).unwrap();
    assert_eq!(s.get::<i32>("width").unwrap(), 1280);
    assert_eq!(s.get::<i32>("height").unwrap(), 720);
    assert_eq!(
        s.get::<gst::Fraction>("framerate").unwrap(),
        gst::Fraction::new(30, 1)
    );
    let events = run.events.lock().unwrap().clone();
    let tags = events
        .iter()
        .find_map(|e| match e.view() {
            gst::EventView::Tag(t) => Some(t.tag_owned()),
            _ => None,
        })
        .expect("tag event");
    assert_eq!(
        tags.get::<gst::tags::MaximumBitrate>().unwrap().get(),
        2_000_000
    );
    assert_eq!(
        tags.get::<gst::tags::MinimumBitrate>().unwrap().get(),
        500_000
    );
    assert_eq!(
        tags.get::<gst::tags::Title>().unwrap().get(),
        "front camera"
    );
    let mode = events
        .iter()
        .find_map(|e| gstcustomvideo::events::parse_optimization_mode(e))
        .expect("optimization-mode event");
    assert_eq!(mode, gstcustomvideo::OptimizationMode::Detail);
    // Order: caps and segment before the tags and the custom event.
    let kinds: Vec<gst::EventType> = events.iter().map(|e| e.type_()).collect();
    let pos = |t| kinds.iter().position(|k| *k == t).unwrap();
    assert!(pos(gst::EventType::Segment) < pos(gst::EventType::Tag));
}

#[test]
fn changing_hints_while_playing_sends_them_again() {
    let run = Run::new(
        "customvideosrc name=src producer=\"videotestsrc\" framerate=30/1",
        "",
        false,
    );
    run.play();
    assert!(run.wait_frames(2, 5 * SEC));
    run.src.set_property_from_str("optimization-mode", "motion");
    run.src.set_property("bitrate-max", 900u32);
    assert!(wait_for(5 * SEC, || {
        let events = run.events.lock().unwrap();
        events.iter().any(|e| {
            gstcustomvideo::events::parse_optimization_mode(e)
                == Some(gstcustomvideo::OptimizationMode::Motion)
        }) && events.iter().any(|e| match e.view() {
            gst::EventView::Tag(t) => t
                .tag()
                .get::<gst::tags::MaximumBitrate>()
                .is_some_and(|v| v.get() == 900_000),
            _ => false,
        })
    }));
}

#[test]
fn unknown_preset_warns_with_the_valid_names() {
    init();
    let logged = Arc::new(Mutex::new(String::new()));
    let l = logged.clone();
    let id = glib::log_set_handler(
        Some("customvideosrc"),
        glib::LogLevels::LEVEL_WARNING,
        false,
        false,
        move |_, _, msg| l.lock().unwrap().push_str(msg),
    );
    let src = CustomVideoSrc::new(None);
    src.set_property("encoder-config", "480p_1");
    src.set_property("encoder-config", "999p_9");
    glib::log_remove_handler(Some("customvideosrc"), id);
    let msg = logged.lock().unwrap().clone();
    assert!(msg.contains("999p_9"), "{msg}");
    assert!(msg.contains("720p_2") && msg.contains("120p_1"), "{msg}");
    // The valid preset stays in force.
    assert_eq!(
        src.property::<Option<String>>("encoder-config").as_deref(),
        Some("480p_1")
    );
    assert_eq!(src.property::<u32>("width"), 640);
}

// ----- 4. a steady track --------------------------------------------------------------------

#[test]
fn constant_rate_repeats_when_the_producer_stalls() {
    let h = Clocked::new("customvideosrc name=src framerate=30/1", "");
    h.src.set_property("caps", i420_320());
    h.play();
    let mut f = Vec::new();
    for _ in 0..3 {
        h.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
        f.extend(h.ticks(1));
    }
    // The producer stalls; the track keeps going.
    f.extend(h.ticks(17));
    assert_paced(&f, 30);
    // The age of the last frame is wall-clock time.
    std::thread::sleep(Duration::from_millis(300));
    let stats = h.src.stats();
    assert!(stats.get::<u64>("repeated").unwrap() >= 15, "{stats}");
    assert!(
        stats.get::<i64>("last-frame-age-ms").unwrap() >= 300,
        "{stats}"
    );
}

#[test]
fn constant_rate_drops_a_burst() {
    let h = Clocked::new("customvideosrc name=src framerate=30/1 max-buffers=100", "");
    h.src.set_property("caps", i420_320());
    h.play();
    h.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
    let mut f = h.ticks(1);
    // 60 frames at once: the track takes the newest at each tick, never speeds up.
    let burst: Vec<gst::Buffer> = (0..60).map(|_| solid("I420", 320, 240, RED)).collect();
    for b in burst {
        h.src.push_frame(b).unwrap();
    }
    f.extend(h.ticks(5));
    assert_paced(&f, 30);
    let stats = h.src.stats();
    let get = |k: &str| stats.get::<u64>(k).unwrap();
    // Every frame in either left once or was dropped; the burst (far faster than 30 fps)
    // mostly dropped.
    assert_eq!(
        get("frames-in"),
        get("frames-out") - get("repeated") + get("dropped"),
        "{stats}"
    );
    assert!(get("dropped") >= 30, "{stats}");
}

#[test]
fn variable_rate_frames_leave_as_they_come() {
    let run = Run::new("customvideosrc name=src", "", false);
    run.src.set_property("caps", i420_320());
    run.play();
    // A live pipeline reaches PLAYING only with its first frame; the source is there at once.
    assert!(wait_for(5 * SEC, || run.src.current_state() == gst::State::Playing));
    let mut pushed_at = Vec::new();
    for gap in [10u64, 50, 5, 120, 30] {
        std::thread::sleep(Duration::from_millis(gap));
        pushed_at.push(run.running_time());
        run.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
        let n = pushed_at.len();
        assert!(run.wait_frames(n, 5 * SEC));
    }
    let f = run.frames();
    assert_eq!(f.len(), 5);
    for (o, t) in f.iter().zip(&pushed_at) {
        // Stamped with the running time when it left, right after the push.
        assert!(o.pts >= *t, "pts {} before push {}", o.pts, t);
        assert!(
            o.pts - *t < gst::ClockTime::from_mseconds(200),
            "pts {} push {}",
            o.pts,
            t
        );
    }
    let caps = run.caps_events.lock().unwrap()[0].clone();
    assert_eq!(
        caps.structure(0)
            .unwrap()
            .get::<gst::Fraction>("framerate")
            .unwrap(),
        gst::Fraction::new(0, 1)
    );
    assert_eq!(run.src.stats().get::<u64>("repeated").unwrap(), 0);
}

#[test]
fn resolution_change_keeps_the_caps() {
    let run = Run::new("customvideosrc name=src", "", false);
    run.play();
    let small = gst::Sample::builder()
        .buffer(&solid("I420", 320, 240, RED))
        .caps(&i420_320())
        .build();
    run.src.push_sample(&small).unwrap();
    assert!(run.wait_frames(1, 5 * SEC));
    let big = gst::Sample::builder()
        .buffer(&solid("NV12", 640, 360, BLUE))
        .caps(&caps("NV12", 640, 360, 30))
        .build();
    run.src.push_sample(&big).unwrap();
    run.src.push_frame(solid("NV12", 640, 360, BLUE)).unwrap();
    assert!(run.wait_frames(3, 5 * SEC));
    assert_eq!(
        run.caps_events.lock().unwrap().len(),
        1,
        "caps changed downstream"
    );
    for o in run.frames() {
        assert_eq!((o.width, o.height, o.format.as_str()), (320, 240, "I420"));
    }
}

// ----- 5. track controls --------------------------------------------------------------------

#[test]
fn disabled_track_sends_nothing_until_enabled() {
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 producer=\"videotestsrc\"",
        "",
        false,
    );
    run.play();
    assert!(run.wait_frames(5, 5 * SEC));
    run.src.set_property("enabled", false);
    std::thread::sleep(Duration::from_millis(100));
    let before = run.count();
    std::thread::sleep(Duration::from_millis(400));
    assert!(run.count() <= before + 1, "frames left a disabled track");
    run.src.set_property("enabled", true);
    assert!(run.wait_frames(before + 5, 5 * SEC), "track did not resume");
    let f = run.frames();
    for w in f.windows(2) {
        assert!(w[1].pts > w[0].pts);
    }
}

#[test]
fn muted_track_sends_black_frames() {
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 producer=\"videotestsrc pattern=red ! video/x-raw,width=64,height=48\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(3, 5 * SEC));
    assert!(near(run.frames()[2].center.unwrap(), [255, 0, 0], 10));
    run.src.set_property("muted", true);
    std::thread::sleep(Duration::from_millis(100));
    let n = run.count();
    assert!(run.wait_frames(n + 5, 5 * SEC), "muted track stopped");
    let px = run.frames()[n + 4].center.unwrap();
    assert!(near(px, [0, 0, 0], 12), "muted frame not black: {px:?}");
    run.src.set_property("muted", false);
    std::thread::sleep(Duration::from_millis(100));
    let n = run.count();
    assert!(run.wait_frames(n + 3, 5 * SEC));
    assert!(near(run.frames()[n + 2].center.unwrap(), [255, 0, 0], 10));
}

#[test]
fn replacing_the_producer_leaves_no_gap() {
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 width=64 height=48 producer=\"videotestsrc is-live=true pattern=red\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(10, 5 * SEC));
    let ok = run.src.emit_by_name::<bool>(
        "replace-producer",
        &[&"videotestsrc is-live=true pattern=blue ! video/x-raw,width=320,height=240"],
    );
    assert!(ok);
    assert!(wait_for(5 * SEC, || run
        .frames()
        .last()
        .is_some_and(|o| near(o.center.unwrap(), [0, 0, 255], 10))));
    let n = run.count();
    assert!(run.wait_frames(n + 5, 5 * SEC));
    let f = run.frames();
    let last_red = f
        .iter()
        .rposition(|o| near(o.center.unwrap(), [255, 0, 0], 10))
        .unwrap();
    let first_blue = f
        .iter()
        .position(|o| near(o.center.unwrap(), [0, 0, 255], 10))
        .unwrap();
    assert_eq!(
        first_blue,
        last_red + 1,
        "frames of neither producer in between"
    );
    // Timestamps keep the pace through the switch: no gap in the track.
    assert_paced(&f, 30);
    assert_eq!(
        run.caps_events.lock().unwrap().len(),
        1,
        "switch renegotiated"
    );
    assert_eq!(
        run.src.property::<Option<String>>("producer").as_deref(),
        Some("videotestsrc is-live=true pattern=blue ! video/x-raw,width=320,height=240")
    );
    assert!(f.iter().all(|o| (o.width, o.height) == (64, 48)));
}

#[test]
fn replace_gap_in_repeated_frames_is_at_most_two() {
    // Pushed frames stop, the new producer takes over: the track repeats at most
    // two frame intervals while the new producer starts.
    let run = Run::new(
        "customvideosrc name=src framerate=30/1",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.src.set_property("caps", caps("RGBA", 64, 48, 30));
    run.play();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let src = run.src.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if src.push_frame(solid("RGBA", 64, 48, RED)).is_err() {
                    break; // refused once the new producer took over
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    assert!(run.wait_frames(10, 5 * SEC));
    run.src
        .replace_producer(Some(
            "videotestsrc is-live=true pattern=green ! video/x-raw,width=64,height=48",
        ))
        .unwrap();
    assert!(wait_for(5 * SEC, || run
        .frames()
        .last()
        .is_some_and(|o| near(o.center.unwrap(), [0, 255, 0], 10))));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    pusher.join().unwrap();
    let f = run.frames();
    let last_red = f
        .iter()
        .rposition(|o| near(o.center.unwrap(), [255, 0, 0], 10))
        .unwrap();
    let first_green = f
        .iter()
        .position(|o| near(o.center.unwrap(), [0, 255, 0], 10))
        .unwrap();
    assert_eq!(first_green, last_red + 1);
    let gap = f[first_green].pts - f[last_red].pts;
    assert!(
        gap <= gst::ClockTime::from_nseconds(66_666_667),
        "gap {gap}"
    );
}

#[test]
fn track_id_and_label_reach_downstream() {
    let run = Run::new(
        "customvideosrc name=src track-id=cam-1 label=Desk producer=videotestsrc",
        "",
        false,
    );
    run.play();
    assert!(run.wait_frames(2, 5 * SEC));
    let events = run.events.lock().unwrap().clone();
    let id = events
        .iter()
        .find_map(|e| match e.view() {
            gst::EventView::StreamStart(s) => Some(s.stream_id().to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(id, "cam-1");
    assert!(events.iter().any(|e| {
        match e.view() {
            gst::EventView::Tag(t) => t
                .tag()
                .get::<gst::tags::Title>()
                .is_some_and(|v| v.get() == "Desk"),
            _ => false,
        }
    }));
}

// ----- 6. observability ---------------------------------------------------------------------

#[test]
fn stats_describe_the_track() {
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 producer=\"videotestsrc ! video/x-raw,width=160,height=90\"",
        "",
        false,
    );
    run.play();
    assert!(run.wait_frames(45, 5 * SEC));
    let s: gst::Structure = run.src.property("stats");
    assert!(s.get::<u64>("frames-in").unwrap() >= 30);
    assert!(s.get::<u64>("frames-out").unwrap() >= 45);
    assert_eq!(s.get::<u32>("width").unwrap(), 160);
    assert_eq!(s.get::<u32>("height").unwrap(), 90);
    let fps = s.get::<f64>("fps").unwrap();
    assert!((20.0..=40.0).contains(&fps), "fps {fps}");
    assert!(s.get::<i64>("last-frame-age-ms").unwrap() < 1000);
    s.get::<u64>("dropped").unwrap();
    s.get::<u64>("repeated").unwrap();
}

fn ended_run(on_end: &str) -> Run {
    let run = Run::new(
        &format!(
            "customvideosrc name=src framerate=30/1 on-producer-end={on_end} producer=\"videotestsrc num-buffers=10 pattern=red ! video/x-raw,width=64,height=48\""
        ),
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    run
}

#[test]
fn producer_end_ends_the_track_by_default() {
    let run = ended_run("eos");
    assert!(run.wait_eos(5 * SEC));
    let msgs = run.element_messages("track-ended");
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0]
            .get::<String>("reason")
            .unwrap()
            .contains("end of stream")
    );
    assert!(run.count() >= 5);
}

/// After the producer ended, the track keeps going with `on_end` frames of colour `want`.
fn ended_track_goes_on(on_end: &str, want: [u8; 3]) {
    let run = ended_run(on_end);
    assert!(wait_for(5 * SEC, || !run
        .element_messages("track-ended")
        .is_empty()));
    let n = run.count();
    assert!(run.wait_frames(n + 10, 5 * SEC), "{on_end}: track stopped");
    assert!(!*run.eos.lock().unwrap());
    let px = run.frames()[n + 9].center.unwrap();
    assert!(near(px, want, 12), "{on_end}: {px:?}");
    assert!(run.src.stats().get::<bool>("ended").unwrap());
}

#[test]
fn producer_end_can_go_black() {
    ended_track_goes_on("black", [0, 0, 0]);
}

#[test]
fn producer_end_can_freeze() {
    ended_track_goes_on("freeze", [255, 0, 0]);
}

#[test]
fn producer_failure_is_reported() {
    let run = Run::new(
        "customvideosrc name=src on-producer-end=freeze producer=\"videotestsrc ! video/x-raw,width=64,height=48 ! valve name=v ! identity error-after=5\"",
        "",
        false,
    );
    run.play();
    assert!(wait_for(5 * SEC, || !run
        .element_messages("track-ended")
        .is_empty()));
    let msg = &run.element_messages("track-ended")[0];
    assert!(msg.get::<bool>("error").unwrap());
    assert!(
        run.warnings().iter().any(|w| w.contains("producer")),
        "{:?}",
        run.warnings()
    );
    // The track itself goes on (freeze), without an error.
    assert!(run.error().is_none());
}

// ----- 7. pushing at any time ---------------------------------------------------------------

#[test]
fn frames_pushed_before_playing_get_live_timestamps() {
    let run = Run::new("customvideosrc name=src", "", false);
    run.src.set_property("caps", i420_320());
    run.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
    run.pipeline.set_state(gst::State::Paused).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(run.count(), 0, "a live track sent a frame before PLAYING");
    run.play();
    assert!(run.wait_frames(1, 5 * SEC), "held frame was lost");
    let rt = run.running_time();
    let pts = run.frames()[0].pts;
    // Stamped when it left (PLAYING), on the pipeline clock.
    assert!(
        pts <= rt && rt - pts < gst::ClockTime::from_mseconds(1000),
        "pts {pts} rt {rt}"
    );
}

#[test]
fn frames_survive_a_restart_of_the_pipeline() {
    let run = Run::new("customvideosrc name=src", "", false);
    run.src.set_property("caps", i420_320());
    run.play();
    run.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
    assert!(run.wait_frames(1, 5 * SEC));
    run.pipeline.set_state(gst::State::Null).unwrap();
    run.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
    run.play();
    assert!(
        run.wait_frames(2, 5 * SEC),
        "frame pushed while stopped was lost"
    );
}

// ----- 8. bad input -------------------------------------------------------------------------

/// Pushes `buffer` (with `caps` set, if any) and checks the flow return and the bus error.
fn push_error(caps: Option<gst::Caps>, buffer: gst::Buffer, flow: gst::FlowError, want: &[&str]) {
    let run = Run::new("customvideosrc name=src", "", false);
    if let Some(caps) = caps {
        run.src.set_property("caps", caps);
    }
    run.play();
    assert_eq!(run.src.push_frame(buffer), Err(flow));
    let (msg, _) = run.wait_error(5 * SEC).expect("error message");
    for w in want {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[test]
fn wrong_buffer_size_is_an_error_naming_the_sizes() {
    push_error(
        Some(i420_320()),
        gst::Buffer::with_size(1000).unwrap(),
        gst::FlowError::Error,
        &["1000 bytes", "115200"],
    );
}

#[test]
fn push_before_caps_is_refused_clearly() {
    push_error(
        None,
        solid("I420", 320, 240, RED),
        gst::FlowError::NotNegotiated,
        &["before its caps are known"],
    );
}

#[test]
fn unconvertible_caps_are_named() {
    push_error(
        Some(
            gst::Caps::builder("video/x-h264")
                .field("width", 320)
                .build(),
        ),
        gst::Buffer::with_size(100).unwrap(),
        gst::FlowError::NotNegotiated,
        &["video/x-h264", "raw video"],
    );
}

#[test]
fn downstream_that_accepts_nothing_is_named() {
    let run = Run::new(
        "customvideosrc name=src format=I420",
        "capsfilter caps=video/x-raw,format=RGBA",
        false,
    );
    run.src.set_property("caps", i420_320());
    run.play();
    run.src.push_frame(solid("I420", 320, 240, RED)).unwrap();
    let (msg, _) = run.wait_error(5 * SEC).expect("error message");
    assert!(
        msg.contains("Downstream accepts no format") && msg.contains("I420"),
        "{msg}"
    );
}

/// Starts a track with `producer` and checks that the start fails with `want` in the error.
fn start_error(producer: &str, want: &str) {
    let run = Run::new(
        &format!("customvideosrc name=src producer=\"{producer}\""),
        "",
        false,
    );
    assert!(run.pipeline.set_state(gst::State::Playing).is_err());
    let (msg, _) = run.error().expect("error message");
    assert!(msg.contains(want), "{msg:?} lacks {want:?}");
}

#[test]
fn producer_that_does_not_parse_fails_the_start() {
    start_error("videotestsrc ! ! videoconvert", "does not parse");
}

#[test]
fn producer_with_missing_element_is_named() {
    start_error(
        "nosuchsrc",
        "needs elements that are not installed: nosuchsrc",
    );
}

#[test]
fn producer_without_video_is_named() {
    start_error("audiotestsrc", "no raw video src pad");
}

#[test]
fn bad_replacement_keeps_the_current_producer() {
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 producer=\"videotestsrc pattern=red ! video/x-raw,width=64,height=48\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(3, 5 * SEC));
    let ok = run
        .src
        .emit_by_name::<bool>("replace-producer", &[&"videotestsrc ! ! !"]);
    assert!(!ok);
    assert!(
        run.warnings().iter().any(|w| w.contains("does not parse")),
        "{:?}",
        run.warnings()
    );
    let n = run.count();
    assert!(run.wait_frames(n + 5, 5 * SEC));
    assert!(near(
        run.frames().last().unwrap().center.unwrap(),
        [255, 0, 0],
        10
    ));
    assert!(run.error().is_none());
}

#[test]
fn failed_replacement_leaves_the_producer_property_as_it_was() {
    let first = "videotestsrc is-live=true pattern=red ! video/x-raw,width=64,height=48";
    let run = Run::new(
        &format!("customvideosrc name=src framerate=30/1 producer=\"{first}\""),
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.play();
    assert!(run.wait_frames(3, 5 * SEC));
    let producer = || run.src.property::<Option<String>>("producer");
    for bad in ["videotestsrc ! ! !", "nosuchsrc", "audiotestsrc"] {
        let ok = run.src.emit_by_name::<bool>("replace-producer", &[&bad]);
        assert!(!ok, "{bad} was accepted");
        assert_eq!(
            producer().as_deref(),
            Some(first),
            "after replace-producer {bad}"
        );
        assert!(run.src.replace_producer(Some(bad)).is_err());
        assert_eq!(
            producer().as_deref(),
            Some(first),
            "after replace_producer {bad}"
        );
        // Setting the property while PLAYING is a replacement too.
        run.src.set_property("producer", bad);
        assert_eq!(producer().as_deref(), Some(first), "after producer={bad}");
    }
    // The track carries on with its producer, and a restart uses it.
    let n = run.count();
    assert!(run.wait_frames(n + 3, 5 * SEC));
    run.pipeline.set_state(gst::State::Null).unwrap();
    let n = run.count();
    run.play();
    assert!(
        run.wait_frames(n + 3, 5 * SEC),
        "restart did not use the producer"
    );
    assert!(near(
        run.frames().last().unwrap().center.unwrap(),
        [255, 0, 0],
        10
    ));
    assert!(run.error().is_none(), "{:?}", run.error());
}

// ----- state changes ------------------------------------------------------------------------

#[test]
fn pause_resume_and_stop_never_hang() {
    for src in [
        "customvideosrc name=src framerate=30/1 producer=videotestsrc",
        "customvideosrc name=src producer=videotestsrc",
        "customvideosrc name=src framerate=30/1 caps=video/x-raw,format=I420,width=64,height=48,framerate=30/1",
        "customvideosrc name=src caps=video/x-raw,format=I420,width=64,height=48,framerate=30/1",
    ] {
        let run = Run::new(src, "", false);
        if !src.contains("producer") {
            run.src.push_frame(solid("I420", 64, 48, RED)).unwrap();
        }
        run.play();
        assert!(run.wait_frames(1, 5 * SEC), "{src}: no frame");
        for _ in 0..3 {
            run.pipeline.set_state(gst::State::Paused).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            // Counted before the push: without a frame rate the pushed frame may be out
            // before the count is read.
            let n = run.count();
            run.play();
            if !src.contains("producer") {
                run.src.push_frame(solid("I420", 64, 48, RED)).unwrap();
            }
            assert!(
                run.wait_frames(n + 1, 5 * SEC),
                "{src}: no frame after resume"
            );
        }
        // Disabled (blocked waiting) and then stopped.
        run.src.set_property("enabled", false);
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        run.pipeline.set_state(gst::State::Null).unwrap();
        assert!(
            start.elapsed() < 2 * SEC,
            "{src}: stopping took {:?}",
            start.elapsed()
        );
        assert!(run.error().is_none(), "{src}: {:?}", run.error());
    }
}

#[test]
fn processor_applies_to_pushed_and_drawn_frames() {
    // Pushed frames.
    let run = Run::new(
        "customvideosrc name=src processor=\"videobalance brightness=-0.5\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.src.set_property("caps", caps("RGBA", 64, 48, 30));
    run.play();
    for i in 0..5 {
        run.src
            .push_frame(solid("RGBA", 64, 48, [255, 255, 255, 255]))
            .unwrap();
        assert!(
            run.wait_frames(i + 1, 5 * SEC),
            "processed frame {i} missing"
        );
    }
    for o in run.frames() {
        let px = o.center.unwrap();
        assert!(
            px[0] < 190 && px[0] > 60,
            "pushed white not darkened: {px:?}"
        );
    }
    drop(run);
    // Drawn frames.
    let run = Run::new(
        "customvideosrc name=src framerate=30/1 width=64 height=48 processor=\"videobalance brightness=-0.5\"",
        "videoconvert ! video/x-raw,format=RGBA",
        false,
    );
    run.src.set_draw_callback(Some(
        |frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, _rt| {
            frame.plane_data_mut(0).unwrap().fill(255);
            true
        },
    ));
    run.play();
    assert!(run.wait_frames(10, 5 * SEC));
    let px = run.frames()[9].center.unwrap();
    assert!(
        px[0] < 190 && px[0] > 60,
        "drawn white not darkened: {px:?}"
    );
}

/// What the process holds: threads, open file descriptors, resident memory in kB.
fn process_figures() -> (usize, usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (field("Threads:"), fds, field("VmRSS:"))
}

/// Starts and stops the element 100 times in a process of its own (the other tests share this
/// one and would move its figures); threads and fds stay flat, memory nearly so.
#[test]
fn start_stop_cycles_leak_nothing() {
    const CHILD: &str = "CUSTOMVIDEOSRC_CYCLES_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "start_stop_cycles_leak_nothing",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        return;
    }
    init();
    for (what, desc, pushed) in [
        (
            "producer",
            "customvideosrc name=src producer=\"videotestsrc is-live=true\" framerate=30/1 ! fakesink",
            false,
        ),
        (
            "pushed",
            "customvideosrc name=src framerate=30/1 caps=video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! fakesink",
            true,
        ),
    ] {
        let pipeline = gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<CustomVideoSrc>()
            .unwrap();
        let mut at_10 = None;
        for cycle in 1..=100 {
            if pushed {
                src.push_frame(solid("I420", 320, 240, RED)).unwrap();
            }
            pipeline.set_state(gst::State::Playing).unwrap();
            if pushed {
                src.push_frame(solid("I420", 320, 240, BLUE)).unwrap();
            }
            assert!(
                wait_for(5 * SEC, || src.stats().get::<u64>("frames-out").unwrap()
                    >= 2),
                "{what}: cycle {cycle} sent nothing"
            );
            pipeline.set_state(gst::State::Null).unwrap();
            if cycle == 10 {
                at_10 = Some(process_figures());
            }
        }
        let (threads_10, fds_10, rss_10) = at_10.unwrap();
        let (threads, fds, rss) = process_figures();
        eprintln!(
            "{what}: after cycle 10: {threads_10} threads, {fds_10} fds, {rss_10} kB; after cycle 100: {threads} threads, {fds} fds, {rss} kB (RSS {:+} kB)",
            rss as i64 - rss_10 as i64
        );
        assert!(threads <= threads_10 + 1, "{what}: threads grew");
        assert!(fds <= fds_10 + 1, "{what}: fds grew");
        assert!(rss < rss_10 + 5 * 1024, "{what}: RSS grew");
    }
}
