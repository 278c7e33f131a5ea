// SPDX-License-Identifier: MPL-2.0
//! Publishing cost, side by side in one run, into the same call server on loopback: a
//! 1280x720@30 VP8 track of moving bars (`videotestsrc pattern=smpte horizontal-speed=4`,
//! ~2 Mbit/s) published by `callsink` (through `gst-launch-1.0`) and by the plain webrtcbin
//! publisher `shared/kit/whip-publish.py` with the same encoder settings. For each: CPU
//! seconds per 30 s, peak RSS, and the time from the publisher's start to the first frame at
//! a WHEP subscriber. Runs inside a private network namespace.
//!
//! ```text
//! cargo bench --bench publish                  # PUBLISH_SECS=10 for a quicker run
//! ```

mod common;

use common::{Peer, connect, cpu_seconds, peak_rss_mb};
use gstcustomvideo::server::{CallServer, ServerConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use str0m::media::Direction;

const SOURCE: &str = "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1";

struct Measure {
    cpu_per_30s: f64,
    rss_mb: f64,
    first_frame: Option<Duration>,
    bitrate: u64,
}

/// Starts `cmd`, subscribes to `uid` as soon as it is listed, measures.
fn measure(server: &CallServer, uid: &str, cmd: &mut Command, secs: f64) -> Measure {
    let start = Instant::now();
    let mut child: Child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("publisher starts");
    let listed = |server: &CallServer| {
        server
            .channels()
            .into_iter()
            .flat_map(|c| c.publishers)
            .find(|p| p.uid == uid)
    };
    while listed(server).is_none() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut sub: Peer = connect(&server.whep_url("bench", uid), Direction::RecvOnly);
    let mut buf = vec![0u8; 2000];
    while sub.first_frame.is_none() && start.elapsed() < Duration::from_secs(20) {
        sub.drive(&mut buf);
        std::thread::sleep(Duration::from_millis(1));
    }
    let first_frame = sub.first_frame.map(|t| t.duration_since(start));
    drop(sub);
    // Warm-up, then the measured window.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    let cpu0 = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cpu = cpu_seconds(child.id()) - cpu0;
    let bitrate = listed(server).map(|p| p.bitrate).unwrap_or(0);
    let rss_mb = peak_rss_mb(child.id());
    // SIGINT lets both publishers send their WHIP DELETE; then make sure they are gone.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Measure {
        cpu_per_30s: cpu * 30.0 / secs,
        rss_mb,
        first_frame,
        bitrate,
    }
}

fn print(name: &str, m: &Measure) {
    println!(
        "{name:>14}: {:.2} CPU-s per 30 s ({:.0} % of a core), peak RSS {:.0} MB, first frame at the subscriber {}, {:.2} Mbit/s",
        m.cpu_per_30s,
        m.cpu_per_30s / 30.0 * 100.0,
        m.rss_mb,
        m.first_frame
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "never".into()),
        m.bitrate as f64 / 1e6
    );
}

fn main() {
    if std::env::var_os(common::MARK).is_none() {
        // gst-launch-1.0 loads the plugin library (cdylib), which benches do not build.
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "--lib"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot build the plugin");
    }
    common::in_private_netns();
    gst::init().unwrap();
    let secs: f64 = std::env::var("PUBLISH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server");
    let plugin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    println!(
        "publish 1280x720@30 VP8 (moving bars, 2 Mbit/s), {secs} s window; plugin from {}",
        plugin_dir.display()
    );

    let callsink = measure(
        &server,
        "callsink",
        Command::new("gst-launch-1.0")
            .env("GST_PLUGIN_PATH", &plugin_dir)
            .args(["-e", "-q"])
            .args(SOURCE.split(' '))
            .args([
                "!",
                "callsink",
                &format!("server={}", server.url()),
                "channel=bench",
                "uid=callsink",
                "codec=vp8",
                "max-bitrate=2000",
                "min-bitrate=2000",
            ]),
        secs,
    );
    print("callsink", &callsink);

    let kit = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/kit/whip-publish.py");
    let reference = measure(
        &server,
        "kit",
        Command::new("/usr/bin/python3").args([
            kit,
            "-q",
            "-u",
            &format!("{}?uid=kit", server.whip_url("bench")),
            "--local-ip",
            "127.0.0.1",
            "-V",
            &format!("{SOURCE} ! queue ! vp8enc deadline=1 cpu-used=4 target-bitrate=2000000 keyframe-max-dist=60 ! rtpvp8pay pt=96 ssrc=2 picture-id-mode=15-bit ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"),
        ]),
        secs,
    );
    print("whip-publish.py", &reference);

    println!(
        "ratio callsink/whip-publish.py CPU: {:.2} (target <= 1.0); callsink peak RSS {:.0} MB (target < 80); first frame {} (target < 300 ms)",
        callsink.cpu_per_30s / reference.cpu_per_30s.max(1e-9),
        callsink.rss_mb,
        callsink
            .first_frame
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "never".into())
    );
}
