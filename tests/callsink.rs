// SPDX-License-Identifier: MPL-2.0
//! callsink: publishing real tracks into the call server (the embedded one and one started
//! by the test), subscribing with gst-plugins-rs `whepclientsrc`, and every error a user can
//! make. WebRTC tests run in their own network namespace.

mod common;

use common::callserver::{ServerProcess, free_port};
use common::peers::Viewer;
use common::{netns, wait_for};
use gst::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn init() {
    common::peers::register_gst_plugins_rs();
}

fn server(token: Option<&str>) -> CallServer {
    CallServer::start(ServerConfig {
        port: 0,
        token: token.map(str::to_owned),
        ..Default::default()
    })
    .expect("server starts")
}

/// A publishing pipeline and its bus messages.
type Publisher = common::Launched;

impl common::Launched {
    fn launch(desc: &str) -> Publisher {
        init();
        common::Launched::new(desc)
    }
}

/// Waits until the server shows publisher `uid` in `channel` with at least `frames` frames.
fn wait_publisher(
    server: &CallServer,
    channel: &str,
    uid: &str,
    frames: u64,
) -> gstcustomvideo::server::PublisherInfo {
    let mut last = None;
    let ok = wait_for(20 * SEC, || {
        last = server
            .channels()
            .into_iter()
            .find(|c| c.name == channel)
            .and_then(|c| c.publishers.into_iter().find(|p| p.uid == uid));
        last.as_ref().is_some_and(|p| p.frames >= frames)
    });
    assert!(
        ok,
        "publisher {uid} in {channel} never reached {frames} frames: {last:?} / {:?}",
        server.channels()
    );
    last.unwrap()
}

const RED: &str = "videotestsrc is-live=true pattern=solid-color foreground-color=0xffff0000";
const BLUE: &str = "videotestsrc is-live=true pattern=solid-color foreground-color=0xff0000ff";

/// Subscribes to `url` with gst-plugins-rs whepclientsrc and returns the centre pixel (RGBA)
/// of the first decoded frame that has colour `want`, or of the last one after 20 s (a decoder
/// shows garbage until the keyframe the subscription asks for arrives).
fn whep_colour(url: &str, want: [u8; 3]) -> [u8; 4] {
    init();
    let viewer = Viewer::whepclientsrc(url);
    viewer.wait_colour(want, 20 * SEC);
    viewer
        .log()
        .centre
        .expect("no frame decoded from the WHEP subscription")
}

fn near(px: [u8; 4], want: [u8; 3]) -> bool {
    (0..3).all(|i| px[i].abs_diff(want[i]) <= 60)
}

fn publish_and_watch(codec: &str) {
    let server = server(None);
    let _publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=320 height=240 ! callsink server={} channel=room uid=cam codec={codec}",
        server.url()
    ))
    .play();
    let info = wait_publisher(&server, "room", "cam", 10);
    assert_eq!(info.codec.as_deref(), Some(codec.to_uppercase().as_str()));
    assert_eq!((info.width, info.height), (Some(320), Some(240)));
    let px = whep_colour(&server.whep_url("room", "cam"), [255, 0, 0]);
    assert!(
        near(px, [255, 0, 0]),
        "{codec}: subscriber sees {px:?}, not red"
    );
}

#[test]
fn vp8_track_reaches_a_whep_subscriber() {
    if !netns::enter("vp8_track_reaches_a_whep_subscriber") {
        return;
    }
    publish_and_watch("vp8");
}

#[test]
fn h264_track_reaches_a_whep_subscriber() {
    if !netns::enter("h264_track_reaches_a_whep_subscriber") {
        return;
    }
    publish_and_watch("h264");
}

#[test]
fn embedded_server_starts_on_demand_and_posts_the_viewer_url() {
    if !netns::enter("embedded_server_starts_on_demand_and_posts_the_viewer_url") {
        return;
    }
    let publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"{BLUE}\" framerate=30/1 width=160 height=120 ! callsink name=sink port=0 channel=demo uid=me"
    ))
    .play();
    assert!(wait_for(10 * SEC, || publisher
        .element_message("callsink-viewer")
        .is_some()));
    let msg = publisher.element_message("callsink-viewer").unwrap();
    let sink = publisher.pipeline.by_name("sink").unwrap();
    let state = || {
        sink.property_value("connection-state")
            .get::<gstcustomvideo::callsink::ConnectionState>()
            .unwrap()
    };
    assert!(wait_for(20 * SEC, || state()
        == gstcustomvideo::callsink::ConnectionState::Connected));
    let url = msg.get::<String>("url").unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/demo"),
        "{url}"
    );
    let whep = url.trim_end_matches("/demo").to_owned() + "/whep/demo/me";
    let px = whep_colour(&whep, [0, 0, 255]);
    assert!(near(px, [0, 0, 255]), "subscriber sees {px:?}, not blue");
    let stats: gst::Structure = sink.property("stats");
    assert!(stats.get::<u64>("packets-sent").unwrap() > 0, "{stats}");
    assert_eq!(stats.get::<&str>("codec").unwrap(), "VP8");
}

#[test]
fn encoded_input_is_passed_through() {
    if !netns::enter("encoded_input_is_passed_through") {
        return;
    }
    let server = server(None);
    let _p = Publisher::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=352,height=288,framerate=30/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline ! callsink server={} channel=enc uid=x264",
        server.url()
    ))
    .play();
    let info = wait_publisher(&server, "enc", "x264", 10);
    assert_eq!(info.codec.as_deref(), Some("H264"));
    assert_eq!((info.width, info.height), (Some(352), Some(288)));
}

#[test]
fn two_publishers_share_a_channel_and_leave_cleanly() {
    if !netns::enter("two_publishers_share_a_channel_and_leave_cleanly") {
        return;
    }
    let server = server(None);
    let a = Publisher::launch(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=160 height=120 ! callsink server={} channel=duo uid=a",
        server.url()
    ))
    .play();
    let _b = Publisher::launch(&format!(
        "customvideosrc producer=\"{BLUE}\" framerate=30/1 width=160 height=120 ! callsink server={} channel=duo uid=b",
        server.url()
    ))
    .play();
    wait_publisher(&server, "duo", "a", 5);
    wait_publisher(&server, "duo", "b", 5);
    // Stopping a publisher ends its WHIP session: it leaves the channel at once.
    a.pipeline.set_state(gst::State::Null).unwrap();
    let gone = wait_for(SEC, || {
        server
            .channels()
            .iter()
            .all(|c| c.publishers.iter().all(|p| p.uid != "a"))
    });
    assert!(gone, "publisher a still listed: {:?}", server.channels());
    assert_eq!(server.channels()[0].publishers.len(), 1);
}

// ----- errors --------------------------------------------------------------------------------

fn start_error(sink_props: &str) -> String {
    let p = Publisher::launch(&format!(
        "customvideosrc producer=videotestsrc framerate=30/1 ! callsink {sink_props}"
    ));
    let _ = p.pipeline.set_state(gst::State::Playing);
    let err = p.wait_error(20 * SEC).expect("an error message");
    let _ = p.pipeline.set_state(gst::State::Null);
    err
}

#[test]
fn unknown_codec_is_named() {
    init();
    // The codec is a GEnum: a name it does not list is refused where it is set, and
    // gst-inspect-1.0 lists the ones it takes.
    let err = gst::parse::launch("videotestsrc ! callsink codec=h265")
        .expect_err("h265 refused")
        .to_string();
    assert!(err.contains("codec") && err.contains("h265"), "{err}");
    let sink = gst::ElementFactory::make("callsink").build().unwrap();
    let choices: Vec<String> = sink
        .find_property("codec")
        .and_then(|p| p.downcast::<gst::glib::ParamSpecEnum>().ok())
        .map(|p| {
            p.enum_class()
                .values()
                .iter()
                .map(|v| v.nick().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(choices, ["auto", "vp8", "vp9", "h264", "av1"]);
    sink.set_property_from_str("codec", "h264");
    sink.set_property_from_str("ice-transport-policy", "relay");
}

#[test]
fn bad_url_is_named() {
    let err = start_error("whip-url=ftp://example/whip");
    assert!(err.contains("bad WHIP URL"), "{err}");
}

#[test]
fn unreachable_server_is_named() {
    if !netns::enter("unreachable_server_is_named") {
        return;
    }
    let err = start_error("whip-url=http://127.0.0.1:9/whip/x timeout=5");
    assert!(
        err.contains("cannot reach http://127.0.0.1:9/whip/x"),
        "{err}"
    );
}

#[test]
fn refused_token_is_named() {
    if !netns::enter("refused_token_is_named") {
        return;
    }
    let server = server(Some("s3cret"));
    let err = start_error(&format!("server={} token=wrong", server.url()));
    assert!(err.contains("HTTP 401") && err.contains("token"), "{err}");
    // The right token publishes.
    let _p = Publisher::launch(&format!(
        "customvideosrc producer=videotestsrc framerate=30/1 ! callsink server={} token=s3cret channel=t uid=ok",
        server.url()
    ))
    .play();
    wait_publisher(&server, "t", "ok", 3);
}

#[test]
fn url_without_whip_is_named() {
    if !netns::enter("url_without_whip_is_named") {
        return;
    }
    let server = server(None);
    let err = start_error(&format!("whip-url={}/nothing/here", server.url()));
    assert!(
        err.contains("HTTP 404") && err.contains("no WHIP endpoint"),
        "{err}"
    );
    let err = start_error(&format!("whip-url={}/api/channels", server.url()));
    assert!(err.contains("HTTP 405"), "{err}");
}

#[test]
fn publisher_reconnects_when_the_server_restarts() {
    if !netns::enter("publisher_reconnects_when_the_server_restarts") {
        return;
    }
    let first = server(None);
    let port = first.http_addr().port();
    let p = Publisher::launch(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=160 height=120 ! callsink name=sink server={} channel=r uid=back",
        first.url()
    ))
    .play();
    wait_publisher(&first, "r", "back", 5);
    first.stop();
    let second = CallServer::start(ServerConfig {
        port,
        ..Default::default()
    })
    .expect("server restarts on the same port");
    // The sink notices the silence, leaves, and publishes again with the same uid.
    let info = wait_publisher(&second, "r", "back", 5);
    assert_eq!(info.codec.as_deref(), Some("VP8"));
    let states: Vec<String> = p.connection_states().into_iter().map(|(_, s)| s).collect();
    assert!(states.iter().any(|s| s == "reconnecting"), "{states:?}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("connected"),
        "{states:?}"
    );
    assert!(p.error().is_none(), "{:?}", p.error());
}

#[test]
fn callsink_publishes_into_gst_plugins_rs_whipserversrc() {
    if !netns::enter("callsink_publishes_into_gst_plugins_rs_whipserversrc") {
        return;
    }
    init();
    // whipserversrc (a WHIP server from gst-plugins-rs) on the namespace's veth address,
    // where both libnice agents gather candidates.
    let (server, endpoint) = Viewer::whipserversrc_on_veth();
    let publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=320 height=240 ! callsink whip-url={endpoint} codec=vp8"
    ))
    .play();
    assert!(
        server.wait_colour([255, 0, 0], 20 * SEC),
        "whipserversrc decoded no red frame from callsink: {:?} {:?}",
        server.log(),
        server.error()
    );
    // callsink leaves (DELETE); whipserversrc tears the session down on its own threads,
    // and stopping it in the middle of that makes it dispose a running element (a
    // GStreamer-CRITICAL seen on a loaded machine): let it finish first.
    drop(publisher);
    std::thread::sleep(SEC);
    drop(server);
}

const MOVING_BARS: &str = "pattern=smpte horizontal-speed=4";

/// Limits the namespace's loopback to `kbps` (a token bucket with 200 ms of queue): the
/// bottleneck between callsink and a server on 127.0.0.1.
fn limit_loopback(kbps: u32) {
    let out = std::process::Command::new("tc")
        .args(["qdisc", "replace", "dev", "lo", "root", "tbf", "rate"])
        .arg(format!("{kbps}kbit"))
        .args(["burst", "32kbit", "latency", "200ms"])
        .output()
        .expect("tc (iproute2) runs");
    assert!(
        out.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes moving bars at 640x360@30 (wanting 2.5 Mbit/s) over a 600 kbit/s loopback and
/// waits for callsink to settle below it. Returns callsink's stats and the server's view.
fn publish_through_a_bottleneck(
    mode: &str,
    codec: &str,
    pattern: &str,
) -> (gst::Structure, gstcustomvideo::server::PublisherInfo) {
    let server = server(None);
    limit_loopback(600);
    let publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true {pattern}\" \
         framerate=30/1 width=640 height=360 optimization-mode={mode} ! \
         callsink name=sink server={} channel=cc uid=cam codec={codec} max-bitrate=2500",
        server.url()
    ))
    .play();
    let sink = publisher.pipeline.by_name("sink").unwrap();
    wait_publisher(&server, "cc", "cam", 1);
    let mut stats = sink.property::<gst::Structure>("stats");
    let estimate = |s: &gst::Structure| s.get::<u64>("estimated-bitrate").unwrap_or(u64::MAX);
    let settled = wait_for(40 * SEC, || {
        stats = sink.property::<gst::Structure>("stats");
        estimate(&stats) <= 600_000 && stats.get::<u64>("target-bitrate").unwrap_or(0) <= 600_000
    });
    assert!(
        settled,
        "callsink did not bring its bitrate under the 600 kbit/s bottleneck: {stats}"
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
    // Give the encoder a few seconds at the new settings, then read what the server sees.
    std::thread::sleep(4 * SEC);
    let info = wait_publisher(&server, "cc", "cam", 1);
    let stats = sink.property::<gst::Structure>("stats");
    assert!(
        info.bitrate < 700_000,
        "the server still receives {} bit/s through a 600 kbit/s bottleneck ({stats})",
        info.bitrate
    );
    let sent = stats.get::<u64>("bitrate").unwrap();
    assert!(
        sent > 0 && sent < 700_000,
        "callsink reports sending {sent} bit/s ({stats})"
    );
    (stats, info)
}

#[test]
fn without_congestion_control_the_encoder_keeps_its_bitrate() {
    if !netns::enter("without_congestion_control_the_encoder_keeps_its_bitrate") {
        return;
    }
    let server = server(None);
    let publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true {MOVING_BARS}\" \
         framerate=30/1 width=640 height=360 ! callsink name=sink server={} channel=cc \
         uid=cam codec=vp8 max-bitrate=1500 congestion-control=false",
        server.url()
    ))
    .play();
    let sink = publisher.pipeline.by_name("sink").unwrap();
    assert!(!sink.property::<bool>("congestion-control"));
    wait_publisher(&server, "cc", "cam", 1);
    std::thread::sleep(5 * SEC);
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("target-bitrate").unwrap(),
        1_500_000,
        "{stats}"
    );
    assert!(
        !stats.has_field("estimated-bitrate"),
        "an estimate without congestion control: {stats}"
    );
    let info = wait_publisher(&server, "cc", "cam", 1);
    assert!(
        (900_000..2_000_000).contains(&info.bitrate),
        "the server receives {} bit/s ({stats})",
        info.bitrate
    );
    assert!(publisher.error().is_none(), "{:?}", publisher.error());
}

#[test]
fn congestion_scales_a_motion_track_down_and_keeps_its_frame_rate() {
    if !netns::enter("congestion_scales_a_motion_track_down_and_keeps_its_frame_rate") {
        return;
    }
    let (stats, info) = publish_through_a_bottleneck("motion", "vp8", MOVING_BARS);
    assert!(
        stats.get::<u32>("resolution-scale").unwrap() < 100
            && stats.get::<u32>("frame-rate-divider").unwrap() == 1,
        "motion: {stats}"
    );
    assert!(
        info.width.is_some_and(|w| w < 640),
        "the server still receives {:?}x{:?} frames",
        info.width,
        info.height
    );
    assert!(
        stats.get::<i32>("width").unwrap() < 640,
        "the stats do not show the smaller frames: {stats}"
    );
    assert!(
        stats.get::<f64>("fps").unwrap() >= 20.0,
        "the frame rate fell: {stats}"
    );
}

#[test]
fn congestion_lowers_a_detail_track_frame_rate_and_keeps_its_resolution() {
    if !netns::enter("congestion_lowers_a_detail_track_frame_rate_and_keeps_its_resolution") {
        return;
    }
    let (stats, info) = publish_through_a_bottleneck("detail", "vp8", MOVING_BARS);
    assert!(
        stats.get::<u32>("resolution-scale").unwrap() == 100
            && stats.get::<u32>("frame-rate-divider").unwrap() > 1,
        "detail: {stats}"
    );
    assert_eq!((info.width, info.height), (Some(640), Some(360)));
    assert!(
        stats.get::<f64>("fps").unwrap() <= 20.0,
        "the frame rate did not fall: {stats}"
    );
}

// ----- end of stream -------------------------------------------------------------------------

/// When the last buffer reached callsink `name`.
fn last_input(p: &Publisher, name: &str) -> Arc<Mutex<Option<Instant>>> {
    let last: Arc<Mutex<Option<Instant>>> = Arc::default();
    let l = last.clone();
    p.pipeline
        .by_name(name)
        .expect("callsink by name")
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *l.lock().unwrap() = Some(Instant::now());
            gst::PadProbeReturn::Ok
        });
    last
}

fn listed(server: &CallServer, channel: &str, uid: &str) -> bool {
    server
        .channels()
        .iter()
        .filter(|c| c.name == channel)
        .any(|c| c.publishers.iter().any(|p| p.uid == uid))
}

/// A publisher whose stream ends by itself: EOS reaches the bus within a second of the last
/// frame, after the call was left.
fn ends_by_itself(server: &CallServer, desc: &str, uid: &str) {
    let p = Publisher::launch(desc);
    let last = last_input(&p, "sink");
    let p = p.play();
    assert!(wait_for(20 * SEC, || listed(server, "eos", uid)));
    assert!(wait_for(20 * SEC, || p.eos().is_some()), "no EOS");
    let eos = p.eos().unwrap();
    let after = eos.duration_since(last.lock().unwrap().expect("frames reached callsink"));
    eprintln!("{uid}: EOS {} ms after the last frame", after.as_millis());
    assert!(after <= SEC, "EOS {after:?} after the last frame");
    assert!(!listed(server, "eos", uid), "still in the call at EOS");
    let states: Vec<String> = p.connection_states().into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        states.last().map(String::as_str),
        Some("closed"),
        "{states:?}"
    );
    assert_eq!(p.error(), None);
}

#[test]
fn a_finite_producer_ends_the_call_and_the_pipeline() {
    if !netns::enter("a_finite_producer_ends_the_call_and_the_pipeline") {
        return;
    }
    let server = server(None);
    ends_by_itself(
        &server,
        &format!(
            "customvideosrc producer=\"videotestsrc is-live=true num-buffers=45\" framerate=30/1 width=320 height=240 \
             ! callsink name=sink server={} channel=eos uid=track",
            server.url()
        ),
        "track",
    );
    ends_by_itself(
        &server,
        &format!(
            "videotestsrc is-live=true num-buffers=45 ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! callsink name=sink server={} channel=eos uid=plain",
            server.url()
        ),
        "plain",
    );
    // In simulcast layers: the end goes through every layer's branch and the funnel.
    ends_by_itself(
        &server,
        &format!(
            "videotestsrc is-live=true num-buffers=45 ! video/x-raw,width=640,height=360,framerate=30/1 \
             ! callsink name=sink server={} channel=eos uid=layers simulcast=three",
            server.url()
        ),
        "layers",
    );
}

/// A running call on `server_url` ended by the application with EOS, once `ready` holds:
/// returns how long EOS took to reach the bus.
fn application_eos(
    server_url: &str,
    uid: &str,
    mut ready: impl FnMut() -> bool,
) -> (Publisher, Duration) {
    let p = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 width=320 height=240 \
         ! callsink name=sink server={server_url} channel=eos uid={uid}"
    ))
    .play();
    assert!(wait_for(20 * SEC, &mut ready), "the call did not start");
    let sent = Instant::now();
    assert!(p.pipeline.send_event(gst::event::Eos::new()));
    assert!(wait_for(10 * SEC, || p.eos().is_some()), "no EOS");
    let took = p.eos().unwrap().duration_since(sent);
    eprintln!(
        "{uid}: EOS {} ms after the application sent it",
        took.as_millis()
    );
    (p, took)
}

#[test]
fn application_eos_leaves_the_call_even_when_the_server_is_gone_or_silent() {
    if !netns::enter("application_eos_leaves_the_call_even_when_the_server_is_gone_or_silent") {
        return;
    }
    // Healthy server: the call is left (DELETE) before EOS is posted.
    let s = server(None);
    let (_, took) = application_eos(&s.url(), "app", || listed(&s, "eos", "app"));
    assert!(took <= SEC, "{took:?}");
    assert!(!listed(&s, "eos", "app"));

    // A server that does not answer any more (frozen): the DELETE gives up after a second.
    let frozen = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let (p, took) = application_eos(&frozen.url(), "frozen", || {
        frozen.frames("eos", "frozen") > 30 && {
            frozen.freeze(true);
            true
        }
    });
    assert!(took <= 2 * SEC, "{took:?}");
    assert_eq!(p.error(), None);

    // A server that is gone (killed): the DELETE is refused at once.
    let mut killed = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let (p, took) = application_eos(&killed.url(), "killed", || {
        killed.frames("eos", "killed") > 30 && {
            killed.kill();
            true
        }
    });
    assert!(took <= SEC, "{took:?}");
    assert_eq!(p.error(), None);
}

#[test]
fn eos_before_the_call_is_up_ends_at_once_and_stopping_does_not_wait() {
    if !netns::enter("eos_before_the_call_is_up_ends_at_once_and_stopping_does_not_wait") {
        return;
    }
    // The server takes the connection but never answers the offer.
    let frozen = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    frozen.freeze(true);
    let p = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 ! callsink server={} channel=eos uid=early",
        frozen.url()
    ))
    .play();
    assert!(p.wait_state("connecting", 10 * SEC).is_some());
    std::thread::sleep(SEC / 2);
    let sent = Instant::now();
    assert!(p.pipeline.send_event(gst::event::Eos::new()));
    assert!(wait_for(5 * SEC, || p.eos().is_some()), "no EOS");
    let took = p.eos().unwrap().duration_since(sent);
    assert!(took <= SEC, "{took:?}");
    let stop = Instant::now();
    p.pipeline.set_state(gst::State::Null).unwrap();
    assert!(stop.elapsed() <= SEC, "stopping took {:?}", stop.elapsed());
    assert_eq!(p.error(), None);
}

/// Runs `gst-launch-1.0 ARGS` with this build of the plugin.
fn gst_launch(args: &[&str]) -> std::process::Child {
    std::process::Command::new("gst-launch-1.0")
        .args(args)
        .env("GST_PLUGIN_PATH", common::build::plugin_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) runs")
}

fn finish(child: std::process::Child, timeout: Duration) -> (bool, String, Duration) {
    let start = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() && start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !waiter.is_finished() {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let took = start.elapsed();
    let out = waiter.join().unwrap().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && took < timeout, text, took)
}

#[test]
fn gst_launch_exits_at_the_end_of_the_stream_and_on_ctrl_c() {
    if !netns::enter("gst_launch_exits_at_the_end_of_the_stream_and_on_ctrl_c") {
        return;
    }
    init();
    let s = server(None);
    // One argument per token, as a shell passes them.
    let server_arg = format!("server={}", s.url());
    // A finite producer: 45 frames at 30 fps, and the process ends on its own.
    let child = gst_launch(&[
        "customvideosrc",
        "producer=videotestsrc is-live=true num-buffers=45",
        "framerate=30/1",
        "!",
        "callsink",
        &server_arg,
        "channel=eos",
        "uid=file",
    ]);
    let (ok, out, took) = finish(child, 20 * SEC);
    assert!(
        ok,
        "gst-launch-1.0 did not end by itself ({took:?}):\n{out}"
    );
    assert!(out.contains("Got EOS"), "{out}");
    eprintln!(
        "gst-launch-1.0 with 1.5 s of frames ran {} ms",
        took.as_millis()
    );
    assert!(took <= 4 * SEC, "{took:?}");

    // The README's "a file as a live track": a 1 s WebM file, played in real time.
    let clip = std::env::temp_dir().join(format!("customvideo-clip-{}.webm", std::process::id()));
    let made = gst::parse::launch(&format!(
        "videotestsrc num-buffers=30 ! video/x-raw,width=320,height=240,framerate=30/1 ! vp8enc ! webmmux ! filesink location={}",
        clip.display()
    ))
    .unwrap();
    made.set_state(gst::State::Playing).unwrap();
    let bus = made.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos]);
    made.set_state(gst::State::Null).unwrap();
    let producer = format!("producer=filesrc location={} ! decodebin", clip.display());
    let child = gst_launch(&[
        "customvideosrc",
        &producer,
        "!",
        "callsink",
        &server_arg,
        "channel=eos",
        "uid=clip",
    ]);
    let (ok, out, took) = finish(child, 20 * SEC);
    let _ = std::fs::remove_file(&clip);
    assert!(
        ok,
        "gst-launch-1.0 did not end at the end of the file ({took:?}):\n{out}"
    );
    eprintln!("gst-launch-1.0 with a 1 s file ran {} ms", took.as_millis());
    assert!(took <= 4 * SEC, "{took:?}");

    // Ctrl-C with -e: EOS, the call is left, the process ends.
    let child = gst_launch(&[
        "-e",
        "customvideosrc",
        "producer=videotestsrc is-live=true",
        "framerate=30/1",
        "!",
        "callsink",
        &server_arg,
        "channel=eos",
        "uid=live",
    ]);
    assert!(wait_for(20 * SEC, || s
        .channels()
        .iter()
        .flat_map(|c| c.publishers.iter())
        .any(|p| p.uid == "live" && p.frames > 30)));
    // SAFETY: kill(2) on the pid of our own running child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (ok, out, took) = finish(child, 5 * SEC);
    assert!(
        ok,
        "gst-launch-1.0 -e did not end on Ctrl-C ({took:?}):\n{out}"
    );
    assert!(out.contains("Got EOS"), "{out}");
    eprintln!(
        "gst-launch-1.0 -e ended {} ms after Ctrl-C",
        took.as_millis()
    );
    assert!(took <= 2 * SEC, "{took:?}");
    assert!(!listed(&s, "eos", "live"), "still in the call after Ctrl-C");
}

// ----- encoders --------------------------------------------------------------------------------

/// Runs test `name` of this binary again in a process that sees every installed GStreamer
/// plugin but `hidden` (a plugin directory of links, a registry of its own) and returns
/// false; returns true in that process.
fn without_plugins(name: &str, hidden: &[&str]) -> bool {
    const MARK: &str = "CUSTOMVIDEO_HIDDEN_PLUGINS";
    if std::env::var_os(MARK).is_some() {
        return true;
    }
    init();
    let system = gst::ElementFactory::find("videotestsrc")
        .and_then(|f| f.plugin())
        .and_then(|p| p.filename())
        .and_then(|f| f.parent().map(|d| d.to_path_buf()))
        .expect("the system plugin directory");
    let dir = std::env::temp_dir().join(format!("customvideo-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&system).unwrap().flatten() {
        let file = entry.file_name();
        if !hidden.iter().any(|h| file == *h) {
            std::os::unix::fs::symlink(entry.path(), dir.join(&file)).unwrap();
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARK, "1")
        .env("GST_PLUGIN_SYSTEM_PATH_1_0", &dir)
        .env("GST_REGISTRY_1_0", dir.join("registry.bin"))
        .output()
        .expect("run the test again");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.starts_with("test ")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "{name} failed without {hidden:?}:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    false
}

#[test]
fn h264_through_openh264_keeps_its_bitrate_and_follows_congestion_control() {
    const NAME: &str = "h264_through_openh264_keeps_its_bitrate_and_follows_congestion_control";
    if !netns::enter(NAME) || !without_plugins(NAME, &["libgstx264.so"]) {
        return;
    }
    init();
    assert!(
        gst::ElementFactory::find("x264enc").is_none(),
        "x264enc is still there"
    );
    assert!(
        gst::ElementFactory::find("openh264enc").is_some(),
        "openh264enc (gstreamer1.0-plugins-bad) is not installed"
    );
    // 2.5 Mbit/s at most, through a 600 kbit/s bottleneck: congestion control lowers the
    // encoder's bitrate (set on openh264enc's own property, without a panic) and the server
    // receives less than the bottleneck.
    let (stats, info) = publish_through_a_bottleneck("motion", "h264", MOVING_BARS);
    eprintln!(
        "openh264enc through 600 kbit/s: {stats}; the server receives {} bit/s",
        info.bitrate
    );
    assert_eq!(info.codec.as_deref(), Some("H264"));
}

#[test]
fn h264_through_openh264_stays_within_max_bitrate() {
    const NAME: &str = "h264_through_openh264_stays_within_max_bitrate";
    if !netns::enter(NAME) || !without_plugins(NAME, &["libgstx264.so"]) {
        return;
    }
    init();
    let server = server(None);
    let publisher = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true pattern=snow\" framerate=30/1 width=640 height=360 \
         ! callsink name=sink server={} channel=o uid=snow codec=h264 max-bitrate=2500",
        server.url()
    ))
    .play();
    wait_publisher(&server, "o", "snow", 30);
    let sink = publisher.pipeline.by_name("sink").unwrap();
    // Five seconds in, the rate has settled.
    std::thread::sleep(5 * SEC);
    let mut worst = 0;
    for _ in 0..5 {
        worst = worst.max(wait_publisher(&server, "o", "snow", 1).bitrate);
        std::thread::sleep(SEC);
    }
    let stats = sink.property::<gst::Structure>("stats");
    eprintln!("openh264enc on snow: the server receives up to {worst} bit/s; {stats}");
    assert!(
        worst <= 2_500_000 * 6 / 5,
        "{worst} bit/s against a 2.5 Mbit/s maximum"
    );
    assert_eq!(
        stats.get::<u64>("target-bitrate").unwrap(),
        2_500_000,
        "{stats}"
    );
    assert_eq!(publisher.error(), None);
}

#[test]
fn stats_report_the_target_bitrate_of_every_installed_encoder() {
    if !netns::enter("stats_report_the_target_bitrate_of_every_installed_encoder") {
        return;
    }
    let server = server(None);
    let mut seen = vec![];
    for codec in ["vp8", "vp9", "h264", "av1"] {
        init();
        let installed = gst::ElementFactory::find(match codec {
            "vp8" => "vp8enc",
            "vp9" => "vp9enc",
            "h264" => "x264enc",
            _ => "av1enc",
        })
        .is_some();
        if !installed {
            continue;
        }
        let p = Publisher::launch(&format!(
            "customvideosrc producer=\"videotestsrc is-live=true\" framerate=15/1 width=320 height=240 \
             ! callsink name=sink server={} channel=enc uid={codec} codec={codec} start-bitrate=700 max-bitrate=900",
            server.url()
        ))
        .play();
        wait_publisher(&server, "enc", codec, 5);
        let stats = p
            .pipeline
            .by_name("sink")
            .unwrap()
            .property::<gst::Structure>("stats");
        let target = stats.get::<u64>("target-bitrate").unwrap_or(0);
        // Congestion control may have moved it from the start, within the bounds.
        assert!((100_000..=900_000).contains(&target), "{codec}: {stats}");
        seen.push(codec);
    }
    assert!(seen.len() >= 3, "only {seen:?} could be tried");
}

#[test]
fn callsinks_with_port_0_share_one_embedded_server() {
    if !netns::enter("callsinks_with_port_0_share_one_embedded_server") {
        return;
    }
    let launch = |uid: &str| {
        Publisher::launch(&format!(
            "customvideosrc producer=\"{BLUE}\" framerate=30/1 width=160 height=120 ! callsink port=0 channel=shared uid={uid}"
        ))
        .play()
    };
    let (a, b) = (launch("a"), launch("b"));
    let url = |p: &Publisher| {
        assert!(wait_for(10 * SEC, || p
            .element_message("callsink-viewer")
            .is_some()));
        p.element_message("callsink-viewer")
            .unwrap()
            .get::<String>("url")
            .unwrap()
    };
    assert_eq!(url(&a), url(&b), "two embedded servers were started");
    for p in [&a, &b] {
        assert!(
            p.wait_state("connected", 20 * SEC).is_some(),
            "{:?}",
            p.error()
        );
    }
}

// ----- start and stop --------------------------------------------------------------------------

#[test]
fn start_stop_cycles_leave_nothing_behind() {
    if !netns::enter_alone("start_stop_cycles_leave_nothing_behind") {
        return;
    }
    // The first twenty warm the process up (allocator arenas, GStreamer's caches); then two
    // windows of twenty are measured. A leak grows both; a one-time growth (a new malloc arena
    // for a thread, which differs from machine to machine) shows in one of them only.
    start_stop_cycles("", 20, 20);
}

/// NULL → PLAYING (connected) → NULL of `customvideosrc ! callsink PROPS`, `warm_up` times
/// and then two windows of `window` runs, measured: threads and files flat, the heap in use
/// flat, RSS not growing much in both windows, every stop under a second, nothing left on the
/// server.
fn start_stop_cycles(props: &str, warm_up: usize, window: usize) {
    init();
    // The server in a process of its own: what is measured is this process, the publisher.
    let server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
    let p = Publisher::launch(&format!(
        "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 width=320 height=240 \
         ! callsink name=sink server={} channel=cycles uid=c {props}",
        server.url()
    ));
    let cycles = warm_up + 2 * window;
    let mut readings = vec![];
    let mut heap = vec![];
    let mut stops = vec![];
    for i in 0..cycles {
        // What the bus said in the run before is checked and forgotten: the record of every
        // message would grow the heap measured here.
        assert_eq!(p.error(), None, "cycle {i}");
        p.messages.lock().unwrap().clear();
        p.pipeline.set_state(gst::State::Playing).unwrap();
        assert!(
            wait_for(20 * SEC, || p
                .connection_states()
                .iter()
                .any(|(_, s)| s == "connected")),
            "cycle {i}: never connected: {:?}",
            p.error()
        );
        let stop = Instant::now();
        p.pipeline.set_state(gst::State::Null).unwrap();
        stops.push(stop.elapsed());
        if i + 1 >= warm_up && (i + 1 - warm_up).is_multiple_of(window) {
            // Let anything a stop leaves to finish finish, then take the reading.
            std::thread::sleep(SEC / 2);
            readings.push(common::process_resources());
            heap.push(common::heap_in_use());
        }
    }
    let (_, threads0, fds0) = readings[0];
    let (_, threads, fds) = *readings.last().unwrap();
    let slowest = stops.iter().max().unwrap();
    let rss_text: Vec<String> = readings.iter().map(|r| format!("{:.1}", r.0)).collect();
    let heap_text: Vec<String> = heap.iter().map(|h| format!("{h:.2}")).collect();
    eprintln!(
        "after cycles {warm_up}, {}, {cycles}: RSS {} MB, heap in use {} MB, threads {threads0} \
         -> {threads}, fds {fds0} -> {fds}; slowest stop {} ms",
        warm_up + window,
        rss_text.join(" -> "),
        heap_text.join(" -> "),
        slowest.as_millis()
    );
    assert_eq!(p.error(), None);
    assert!(threads <= threads0 + 1, "threads {threads0} -> {threads}");
    assert!(fds <= fds0 + 1, "fds {fds0} -> {fds}");
    let least = readings
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(f64::INFINITY, f64::min);
    // A leak keeps memory in use: the heap in use stays where it was (within 1 MB over the
    // measured runs: a leak of 25 kB a run fails). RSS also counts freed memory the
    // allocator keeps in its threads' arenas and the stacks of ended threads glibc keeps for
    // new ones (up to 40 MB), which fill slowly: it may grow, but not by over 8 MB in both
    // windows.
    let grown = heap.last().unwrap() - heap[0];
    assert!(
        grown <= 1.0,
        "the heap in use grew {grown:.2} MB over {} cycles: {} MB",
        2 * window,
        heap_text.join(" -> ")
    );
    assert!(
        least <= 8.0,
        "RSS grew in every window of {window} cycles: {} MB (at least {least:.1} MB, \
         {:.0} kB per cycle)",
        rss_text.join(" -> "),
        least * 1024.0 / window as f64
    );
    assert!(*slowest < SEC, "a stop took {slowest:?}");
    assert_eq!(server.publisher("cycles", "c"), None);
}

#[test]
fn stopping_takes_under_a_second_when_the_server_does_not_answer() {
    if !netns::enter("stopping_takes_under_a_second_when_the_server_does_not_answer") {
        return;
    }
    init();
    for frozen_when in ["connected", "connecting"] {
        let server = ServerProcess::start("127.0.0.1", free_port("127.0.0.1"));
        if frozen_when == "connecting" {
            server.freeze(true);
        }
        let p = Publisher::launch(&format!(
            "customvideosrc producer=\"videotestsrc is-live=true\" framerate=30/1 ! callsink server={} channel=s uid={frozen_when}",
            server.url()
        ))
        .play();
        assert!(p.wait_state(frozen_when, 20 * SEC).is_some());
        std::thread::sleep(SEC / 2);
        server.freeze(true);
        let stop = Instant::now();
        p.pipeline.set_state(gst::State::Null).unwrap();
        let took = stop.elapsed();
        eprintln!(
            "stop with a frozen server while {frozen_when}: {} ms",
            took.as_millis()
        );
        assert!(took < SEC, "{frozen_when}: stopping took {took:?}");
    }
}

/// What callsink's RTP session received from the server: compound RTCP packets, those
/// GStreamer refused, keyframe requests, and congestion (TWCC) feedback numbers.
#[derive(Debug, Default)]
struct RtcpSeen {
    packets: u32,
    refused: Vec<Vec<(u8, u8)>>,
    plis: u32,
    twcc_numbers: Vec<u8>,
}

/// The (packet type, format) of each packet of compound RTCP packet `data`.
fn rtcp_parts(data: &[u8]) -> Vec<(u8, u8)> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        parts.push((data[at + 1], data[at] & 0x1f));
        at += (usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]])) + 1) * 4;
    }
    parts
}

/// Watches the RTCP entering every RTP session of `pipeline` (after SRTP) and checks each
/// packet as GStreamer's RTP session does before it reads one.
fn watch_rtcp(pipeline: &gst::Pipeline, seen: &Arc<Mutex<RtcpSeen>>) -> usize {
    let mut sessions = 0;
    for e in pipeline
        .iterate_all_by_element_factory_name("rtpsession")
        .into_iter()
        .flatten()
    {
        let Some(pad) = e.static_pad("recv_rtcp_sink") else {
            continue;
        };
        sessions += 1;
        let seen = Arc::clone(seen);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(map) = buffer.map_readable() else {
                return gst::PadProbeReturn::Ok;
            };
            let mut data = map.as_slice().to_vec();
            // SAFETY: the function reads `len` bytes of `data`, which it borrows for the call.
            let valid = unsafe {
                gst_rtp::ffi::gst_rtcp_buffer_validate_data_reduced(
                    data.as_mut_ptr(),
                    data.len() as u32,
                )
            } != 0;
            let parts = rtcp_parts(&data);
            let mut seen = seen.lock().unwrap();
            seen.packets += 1;
            if !valid {
                seen.refused.push(parts);
                return gst::PadProbeReturn::Ok;
            }
            let mut at = 0;
            for (pt, fmt) in parts {
                match (pt, fmt) {
                    (206, 1) => seen.plis += 1,
                    (205, 15) if at + 20 <= data.len() => seen.twcc_numbers.push(data[at + 19]),
                    _ => (),
                }
                at += (usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]])) + 1) * 4;
            }
            gst::PadProbeReturn::Ok
        });
    }
    sessions
}

/// GStreamer checks a compound RTCP packet as RFC 3550 says (padding only in its last
/// packet) and drops the whole packet otherwise: the receiver reports, keyframe requests and
/// congestion feedback in it are lost. Viewers join one after the other (each join asks the
/// publisher for a keyframe) while callsink counts what reaches its RTP session.
#[test]
fn every_rtcp_packet_from_the_server_reaches_callsinks_rtp_session() {
    if !netns::enter("every_rtcp_packet_from_the_server_reaches_callsinks_rtp_session") {
        return;
    }
    let server = server(None);
    let p = Publisher::launch(&format!(
        "customvideosrc producer=\"{RED}\" framerate=30/1 width=320 height=240 ! callsink server={} channel=r uid=cam",
        server.url()
    ))
    .play();
    assert!(p.wait_state("connected", 20 * SEC).is_some());
    let seen: Arc<Mutex<RtcpSeen>> = Arc::default();
    assert_eq!(watch_rtcp(&p.pipeline, &seen), 1, "callsink's RTP session");
    let joins = 12;
    for i in 0..joins {
        let viewer = Viewer::webrtcbin(&server.whep_url("r", "cam")).expect("a viewer joins");
        assert!(
            viewer.wait_colour([255, 0, 0], 10 * SEC),
            "viewer {i} sees no picture"
        );
        std::thread::sleep(SEC);
    }
    let seen = seen.lock().unwrap();
    eprintln!(
        "{} RTCP packets, {} refused, {} keyframe requests, {} TWCC feedback",
        seen.packets,
        seen.refused.len(),
        seen.plis,
        seen.twcc_numbers.len()
    );
    assert!(seen.packets >= 100, "{seen:?}");
    assert!(
        seen.refused.is_empty(),
        "GStreamer refused {} of {} RTCP packets from the server, (type, format) of their parts: {:?}",
        seen.refused.len(),
        seen.packets,
        seen.refused
    );
    assert!(
        seen.plis >= joins,
        "{} keyframe requests for {joins} joins",
        seen.plis
    );
    let gaps = seen
        .twcc_numbers
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count();
    assert_eq!(
        gaps, 0,
        "TWCC feedback numbers skip: {:?}",
        seen.twcc_numbers
    );
    assert!(p.error().is_none(), "{:?}", p.error());
}

#[test]
fn simulcast_start_stop_cycles_leave_nothing_behind() {
    if !netns::enter_alone("simulcast_start_stop_cycles_leave_nothing_behind") {
        return;
    }
    // Three encoders, a tee and a funnel built and torn down each cycle: their threads take
    // more malloc arenas to fill (RSS grows by ~400 kB a cycle over the first twenty while the
    // heap in use does not), hence the longer warm-up.
    start_stop_cycles("simulcast=three", 60, 20);
}
