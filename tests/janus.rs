// SPDX-License-Identifier: MPL-2.0
//! callsink publishing into a call server nobody here wrote: Janus VideoRoom (Debian's
//! janus 1.1) behind Meetecho's WHIP server (simple-whip-server), installed by
//! `scripts/janus.sh install` (or `scripts/setup.sh`) and run by `scripts/janus.sh up`. Janus's
//! Admin API has to report the publisher receiving media, and the video Janus forwards as
//! plain RTP has to decode to the colour that was sent.
//!
//! Janus skips loopback interfaces, so inside the test's network namespace it answers with a
//! candidate on the namespace's veth address while the WHIP server is on 127.0.0.1: callsink
//! has to gather on both.

mod common;

use common::janus::{ENDPOINT, Janus};
use common::{netns, wait_for};
use gst::prelude::*;
use std::time::Duration;

/// Where Janus forwards the video published at `{ENDPOINT}-rtp`, as plain RTP on 127.0.0.1.
const FORWARD_PORT: u16 = 5004;

/// Asserts that Janus receives `publisher`'s video, in `codec`, within 15 s.
fn assert_receives(janus: &Janus, publisher: &Publisher, codec: &str) {
    match janus.wait_video(codec, Duration::from_secs(15)) {
        Ok(report) => eprint!("Janus receives {codec}:\n{report}"),
        Err(report) => panic!(
            "Janus received no {codec} video from callsink (callsink {}, error {:?}):\n{report}{}",
            publisher.state(),
            publisher.error(),
            janus.logs()
        ),
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
    common::janus::assert_installed();
    if !netns::enter("callsink_publishes_into_janus_videoroom_through_whip") {
        return;
    }
    common::init();
    let janus = Janus::start(FORWARD_PORT);

    // VP8 through the endpoint whose video Janus forwards: Janus reports the media and the
    // forwarded frames are red.
    let receiver =
        std::thread::spawn(|| forwarded_colour(FORWARD_PORT, [255, 0, 0], Duration::from_secs(20)));
    let publisher = Publisher::start(
        0xffff0000,
        &format!("callsink name=sink whip-url={ENDPOINT}-rtp codec=vp8"),
    );
    assert_receives(&janus, &publisher, "vp8");
    assert_eq!(publisher.state(), "connected");
    let px = receiver.join().unwrap();
    assert!(
        px.is_some_and(|p| p[0] > 215 && p[1] < 40 && p[2] < 40),
        "the video Janus forwarded is not red: centre pixel {px:?}"
    );

    // Stopping leaves the room (WHIP DELETE): no more media, and Janus no longer lists a
    // publisher.
    drop(publisher);
    let (flowing, report) = janus.video_flowing();
    assert!(
        flowing.is_empty(),
        "media still flows after the publisher stopped:\n{report}"
    );
    let participants = janus.participants().unwrap();
    assert!(
        !participants.iter().any(|p| p["publisher"] == true),
        "Janus still lists a publisher after the publisher stopped: {participants:?}"
    );

    // H264 (constrained baseline, packetization-mode 1) into the same room.
    let publisher = Publisher::start(
        0xff0000ff,
        &format!("callsink name=sink whip-url={ENDPOINT} codec=h264"),
    );
    assert_receives(&janus, &publisher, "h264");
    assert!(
        wait_for(Duration::from_secs(5), || publisher.state() == "connected"),
        "callsink is {}",
        publisher.state()
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
}
