// SPDX-License-Identifier: MPL-2.0
//! callsink publishing into a call server nobody here wrote: Janus VideoRoom (Debian's
//! janus 1.1) behind Meetecho's WHIP server (simple-whip-server), started with the recipes in
//! `../shared/kit/` (installed by `scripts/setup.sh`). Janus's Admin API has to report the
//! publisher receiving media, and the video Janus forwards as plain RTP has to decode to the
//! colour that was sent.
//!
//! Janus skips loopback interfaces, so inside the test's network namespace it answers with a
//! candidate on the namespace's veth address while the WHIP server is on 127.0.0.1: callsink
//! has to gather on both.

mod common;

use common::{netns, wait_for};
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/kit");
/// WHIP endpoints the kit creates: `kit`, and `kit-rtp` whose video Janus also forwards as
/// plain RTP to 127.0.0.1:5004.
const ENDPOINT: &str = "http://127.0.0.1:7080/whip/endpoint/kit";
const FORWARD_PORT: u16 = 5004;

fn kit(script: &str) -> PathBuf {
    Path::new(KIT).join(script)
}

/// Janus and the WHIP server, running while this lives.
struct Janus;

impl Janus {
    fn start() -> Janus {
        assert!(
            Path::new("/usr/bin/janus").exists()
                && Path::new("/opt/simple-whip-server/node_modules/websocket").exists(),
            "Janus and simple-whip-server are not installed: run scripts/setup.sh \
             (it runs {KIT}/install-janus-whip.sh)"
        );
        let out = Command::new(kit("janus-whip-up.sh"))
            .env("RTP_FWD_PORT", FORWARD_PORT.to_string())
            .output()
            .expect("run janus-whip-up.sh");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains(ENDPOINT),
            "Janus did not start:\n{text}"
        );
        Janus
    }

    /// Runs `janus-check.py`: Janus's own account of its VideoRoom publishers. Returns whether
    /// a publisher's received video packets grew, and the report.
    fn check(&self, wait: Duration) -> (bool, String) {
        let out = Command::new("/usr/bin/python3")
            .arg(kit("janus-check.py"))
            .args(["--interval", "1", "--wait", &wait.as_secs().to_string()])
            .output()
            .expect("run janus-check.py");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Janus reports `publisher`'s media arriving, in `codec`, within 15 s.
    fn assert_receives(&self, publisher: &Publisher, codec: &str) {
        let (ok, report) = self.check(Duration::from_secs(15));
        assert!(
            ok && report.contains(&format!("codec={codec}")),
            "Janus received no {codec} media from callsink (callsink {}, error {:?}):\n{report}",
            publisher.state(),
            publisher.error()
        );
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = Command::new(kit("janus-whip-down.sh")).output();
    }
}

/// A publishing pipeline; stopped (WHIP DELETE) when dropped.
struct Publisher(gst::Pipeline);

impl Publisher {
    fn start(colour: u32, sink: &str) -> Publisher {
        common::init();
        let pipeline = gst::parse::launch(&format!(
            "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
             foreground-color={colour:#010x}\" framerate=30/1 width=320 height=240 ! {sink}"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        Publisher(pipeline)
    }

    fn error(&self) -> Option<String> {
        let msg = self
            .0
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
            _ => None,
        }
    }

    fn state(&self) -> String {
        let sink = self.0.by_name("sink").unwrap();
        let state = sink.property_value("connection-state");
        let (_, nick) = gst::glib::EnumValue::from_value(&state).unwrap();
        nick.nick().to_owned()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Receives the VP8 video Janus forwards to udp/`port` and returns whether a decoded frame
/// has colour `want` at its centre within `timeout`.
fn forwarded_colour(port: u16, want: [u8; 3], timeout: Duration) -> Option<[u8; 4]> {
    let pipeline = gst::parse::launch(&format!(
        "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp,media=video,\
         encoding-name=VP8,clock-rate=90000,payload=96\" ! rtpjitterbuffer latency=100 ! \
         rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=RGBA ! \
         appsink name=sink sync=false"
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
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(500)) else {
            continue;
        };
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        let (w, h) = (
            s.get::<i32>("width").unwrap() as usize,
            s.get::<i32>("height").unwrap() as usize,
        );
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let o = ((h / 2) * w + w / 2) * 4;
        let px: [u8; 4] = map[o..o + 4].try_into().unwrap();
        last = Some(px);
        if (0..3).all(|i| px[i].abs_diff(want[i]) < 40) {
            break;
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    last
}

#[test]
fn callsink_publishes_into_janus_videoroom_through_whip() {
    if !netns::enter("callsink_publishes_into_janus_videoroom_through_whip") {
        return;
    }
    common::init();
    let janus = Janus::start();

    // VP8 through the endpoint whose video Janus forwards: Janus reports the media and the
    // forwarded frames are red.
    let receiver =
        std::thread::spawn(|| forwarded_colour(FORWARD_PORT, [255, 0, 0], Duration::from_secs(20)));
    let publisher = Publisher::start(
        0xffff0000,
        &format!("callsink name=sink whip-url={ENDPOINT}-rtp codec=vp8"),
    );
    janus.assert_receives(&publisher, "vp8");
    assert_eq!(publisher.state(), "connected");
    let px = receiver.join().unwrap();
    assert!(
        px.is_some_and(|p| p[0] > 215 && p[1] < 40 && p[2] < 40),
        "the video Janus forwarded is not red: centre pixel {px:?}"
    );

    // Stopping leaves the room (WHIP DELETE): Janus no longer lists a publisher.
    drop(publisher);
    let (ok, report) = janus.check(Duration::from_secs(0));
    assert!(
        !ok,
        "media still flows after the publisher stopped:\n{report}"
    );
    assert!(
        !report.contains("\"publisher\": true"),
        "Janus still lists a publisher after the publisher stopped:\n{report}"
    );

    // H264 (constrained baseline, packetization-mode 1) into the same room.
    let publisher = Publisher::start(
        0xff0000ff,
        &format!("callsink name=sink whip-url={ENDPOINT} codec=h264"),
    );
    janus.assert_receives(&publisher, "h264");
    assert!(
        wait_for(Duration::from_secs(5), || publisher.state() == "connected"),
        "callsink is {}",
        publisher.state()
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
}
