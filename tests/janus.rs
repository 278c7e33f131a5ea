// SPDX-License-Identifier: MPL-2.0
//! callsink publishing into a call server nobody here wrote: Janus VideoRoom (Debian's
//! janus 1.1) behind Meetecho's WHIP server (simple-whip-server), installed by
//! `scripts/janus.sh install` (or `scripts/setup.sh`) and run by `scripts/janus.sh up`. Janus's
//! Admin API has to report the publisher receiving media, and the video Janus forwards as
//! plain RTP has to decode to the colour that was sent.
//!
//! callsink's simulcast (`simulcast=three` and `dual`) goes in too: Janus answers with
//! `a=simulcast:recv`, and its Admin API has to show a substream for each of callsink's
//! layers, by SSRC, with packets coming in.
//!
//! Janus skips loopback interfaces, so inside the test's network namespace it answers with a
//! candidate on the namespace's veth address while the WHIP server is on 127.0.0.1: callsink
//! has to gather on both.

mod common;

use common::janus::{ENDPOINT, Janus};
use common::{netns, wait_for};
use gst::prelude::*;
use std::fmt::Write as _;
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

/// Receives the VP8 video Janus forwards to udp/`port` until a decoded frame has colour
/// `want` at its centre, for `timeout` at most; returns the last frame's centre pixel, width
/// and height.
fn forwarded_colour(
    port: u16,
    want: [u8; 3],
    timeout: Duration,
) -> Option<([u8; 4], usize, usize)> {
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
        last = Some((px, w, h));
        if (0..3).all(|i| px[i].abs_diff(want[i]) < 40) {
            break;
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    last
}

fn is_red(p: [u8; 4]) -> bool {
    p[0] > 215 && p[1] < 40 && p[2] < 40
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
    let px = receiver.join().unwrap().map(|(px, _, _)| px);
    assert!(
        px.is_some_and(is_red),
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

/// The simulcast layers callsink sends, from its payloaders: their SSRC and the width of
/// the video they packetize.
fn layer_ssrcs(publisher: &common::Launched) -> Vec<(u32, i32)> {
    let sink = publisher
        .pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap();
    let mut layers = Vec::new();
    for e in sink.iterate_recurse().into_iter().flatten() {
        if !e.factory().is_some_and(|f| {
            f.metadata("klass")
                .unwrap_or_default()
                .contains("Payloader")
        }) || e.find_property("ssrc").is_none()
        {
            continue;
        }
        let width = e
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .and_then(|c| c.structure(0)?.get::<i32>("width").ok());
        let ssrc = e.property_value("ssrc");
        let ssrc = ssrc
            .get::<u32>()
            .ok()
            .or_else(|| ssrc.get::<i64>().ok().map(|s| s as u32));
        if let (Some(ssrc), Some(width)) = (ssrc, width) {
            layers.push((ssrc, width));
        }
    }
    layers.sort_by_key(|l| l.1);
    layers
}

/// Publishes a red 1280x720 input with `simulcast` (`three` or `dual`) into Janus at
/// `endpoint`; `layers` are the (rid, width) callsink sends, lowest first. callsink connects
/// without falling back to one layer, Janus's Admin API lists the publisher's video with
/// callsink's rids and, as its substreams, the SSRCs callsink sends its layers with, and at
/// least two of them receive packets. Returns the publisher and a report of Janus's
/// substreams (which layer each is).
fn publish_simulcast(
    janus: &Janus,
    endpoint: &str,
    simulcast: &str,
    layers: &[(&str, i32)],
) -> (common::Launched, String) {
    // callsink's offer lists its layers highest first, as Janus reads them by default.
    let rids: Vec<&str> = layers.iter().rev().map(|l| l.0).collect();
    let publisher = common::Launched::new(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=solid-color \
         foreground-color=0xffff0000\" framerate=30/1 width=1280 height=720 ! \
         callsink name=sink whip-url={endpoint} codec=vp8 simulcast={simulcast}"
    ))
    .play();
    assert!(
        publisher
            .wait_state("connected", Duration::from_secs(15))
            .is_some(),
        "callsink did not connect to Janus (states {:?}, error {:?}):\n{}",
        publisher.connection_states(),
        publisher.error(),
        janus.logs()
    );
    // Janus answers with a=simulcast:recv: callsink keeps its layers.
    assert!(
        publisher
            .element_message("callsink-simulcast-fallback")
            .is_none(),
        "callsink fell back to one layer: {:?}",
        publisher.element_message("callsink-simulcast-fallback")
    );
    let mut sent = Vec::new();
    wait_for(Duration::from_secs(10), || {
        sent = layer_ssrcs(&publisher);
        sent.len() == layers.len()
    });
    assert_eq!(
        sent.iter().map(|l| l.1).collect::<Vec<_>>(),
        layers.iter().map(|l| l.1).collect::<Vec<_>>(),
        "the widths of callsink's layers"
    );
    let rid_of = |ssrc: Option<u32>| {
        let i = sent.iter().position(|l| Some(l.0) == ssrc)?;
        Some(layers[i].0)
    };
    // Janus learns each substream's SSRC from its first packet with the rid extension.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (flowing, mut report) = loop {
        let (flowing, report) = janus.substreams_flowing();
        let known = janus.substreams().unwrap_or_default();
        let all_known = known.len() == layers.len() && known.iter().all(|s| s.ssrc.is_some());
        if (all_known && flowing.len() >= 2) || std::time::Instant::now() >= deadline {
            break (flowing, report);
        }
    };
    let substreams = janus.substreams().unwrap();
    for s in &substreams {
        let _ = writeln!(
            report,
            "Janus substream {} is callsink's layer {:?}",
            s.index,
            rid_of(s.ssrc)
        );
    }
    assert!(
        substreams.len() == layers.len() && substreams.iter().all(|s| s.rids == rids),
        "Janus does not list the simulcast video with rids {rids:?} (callsink error {:?}):\n\
         {report}{}",
        publisher.error(),
        janus.logs()
    );
    // Janus's substream 0 (its lowest quality) is callsink's smallest layer, and so on up.
    for s in &substreams {
        assert_eq!(
            rid_of(s.ssrc),
            layers.get(s.index).map(|l| l.0),
            "Janus's substream {} is not callsink's layer of that rank:\n{report}",
            s.index
        );
    }
    let mut janus_rids: Vec<_> = substreams.iter().map(|s| rid_of(s.ssrc)).collect();
    janus_rids.sort();
    let mut want: Vec<_> = rids.iter().map(|r| Some(*r)).collect();
    want.sort();
    assert_eq!(
        janus_rids, want,
        "Janus's substreams are not callsink's layers {sent:?}:\n{report}"
    );
    assert!(
        flowing.len() >= 2,
        "Janus receives packets on {} of callsink's {} layers:\n{report}",
        flowing.len(),
        layers.len()
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
    (publisher, report)
}

/// Janus reads the rids of `a=simulcast` highest first unless told otherwise (the `rid_order`
/// of Janus's API, which the WHIP server does not pass), and callsink lists them so (f;h;q):
/// Janus's substream 0, its lowest, is callsink's quarter layer, and its highest the full one.
/// The plain-RTP forward (substream 0) is therefore the quarter layer.
#[test]
fn callsink_sends_three_simulcast_layers_into_janus_videoroom() {
    common::janus::assert_installed();
    if !netns::enter("callsink_sends_three_simulcast_layers_into_janus_videoroom") {
        return;
    }
    common::init();
    let janus = Janus::start(FORWARD_PORT);
    // Janus forwards one substream of a simulcast publisher as plain RTP: it is red.
    let receiver =
        std::thread::spawn(|| forwarded_colour(FORWARD_PORT, [255, 0, 0], Duration::from_secs(20)));
    let (publisher, report) = publish_simulcast(
        &janus,
        &format!("{ENDPOINT}-rtp"),
        "three",
        &[("q", 320), ("h", 640), ("f", 1280)],
    );
    eprint!("Janus receives simulcast=three:\n{report}");
    let forwarded = receiver.join().unwrap();
    eprintln!("Janus forwards {forwarded:?} (centre pixel, width, height)");
    assert!(
        forwarded.is_some_and(|(px, _, _)| is_red(px)),
        "the video Janus forwarded is not red: {forwarded:?}"
    );
    use gst::prelude::*;
    let stats = publisher
        .pipeline
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert!(
        stats.get::<u32>("simulcast-layers").unwrap() >= 2,
        "{stats}"
    );
}

#[test]
fn callsink_sends_dual_simulcast_into_janus_videoroom() {
    common::janus::assert_installed();
    if !netns::enter("callsink_sends_dual_simulcast_into_janus_videoroom") {
        return;
    }
    common::init();
    let janus = Janus::start(FORWARD_PORT);
    let (_publisher, report) =
        publish_simulcast(&janus, ENDPOINT, "dual", &[("q", 320), ("f", 1280)]);
    eprint!("Janus receives simulcast=dual:\n{report}");
}
