// SPDX-License-Identifier: MPL-2.0
//! Simulcast publishing cost, side by side in one run, into the same call server on loopback:
//! one `callsink simulcast=three` publishing a 1280x720@30 VP8 input of moving bars in three
//! layers (320x180, 640x360, 1280x720) against the same three sizes published as three
//! separate callsinks, as a user would do it without the property. CPU seconds of the
//! publishing process over a window after a warm-up, what reached the server (frames per
//! second of each layer or publisher, total bitrate), and the ratio (target <= 0.8). Runs
//! inside a private network namespace.
//!
//! Both cases are one process (this benchmark run again as a child, a GStreamer application
//! with the plugin) with one source, so the source is paid once in each:
//!
//! ```text
//! simulcast: SOURCE ! callsink simulcast=three
//! separate:  SOURCE ! tee ─┬─ queue ! callsink                                 (1280x720)
//!                          ├─ queue ! videoscale ! 640x360 ! callsink
//!                          └─ queue ! videoscale ! 320x180 ! callsink
//! ```
//!
//! The separate callsinks share the source as one camera would be shared: three processes
//! with a videotestsrc each would also pay for making the 1280x720 picture three times, which
//! is not what simulcast saves. Each scales from the full picture, as callsink's layers do.
//!
//! Bitrates are pinned (min-bitrate = max-bitrate) so that both cases encode the same amount:
//! callsink shares its target over its layers (10/25/65 %), so `simulcast=three` gets 2500
//! kbit/s (250, 625, 1625 per layer) and the separate callsinks get 1625, 625 and 250 each.
//! Unpinned, congestion control would split one estimate over the layers in the first case
//! while each separate callsink has its own. The cases take turns, `SIMULCAST_ROUNDS` times
//! each, in the order A B B A …; the figures compared are the medians. A third line, the
//! source alone into a fakesink, shows what of both is the source's.
//!
//! ```text
//! cargo bench --bench simulcast      # SIMULCAST_SECS=10 SIMULCAST_ROUNDS=1 for a quicker run
//! SIMULCAST_FORMAT=BGRx cargo bench --bench simulcast   # input to convert (default I420)
//! ```

mod common;

use common::{cpu_seconds, env_number, median, peak_rss_mb};
use gstcustomvideo::server::{CallServer, PublisherInfo, ServerConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The input, in format `SIMULCAST_FORMAT` (I420 unless set: callsink's conversion passes it
/// through; with BGRx the simulcast callsink converts once, the separate ones each their own).
fn source() -> String {
    let format = std::env::var("SIMULCAST_FORMAT").unwrap_or_else(|_| "I420".into());
    format!(
        "videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! \
         video/x-raw,format={format},width=1280,height=720,framerate=30/1"
    )
}
/// Set in the child process: the pipeline description it publishes with.
const CHILD: &str = "SIMULCAST_CHILD_PIPELINE";
/// The total bitrate, kbit/s, and the layers' sizes with their share of it (callsink's
/// `simulcast=three`: src/callsink/mod.rs), largest first.
const TOTAL_KBPS: u32 = 2500;
const LAYERS: [(&str, u32, u32, u32); 3] = [
    ("f", 1280, 720, 65),
    ("h", 640, 360, 25),
    ("q", 320, 180, 10),
];
const CHANNEL: &str = "bench";

#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// One callsink, simulcast=three.
    Simulcast,
    /// Three callsinks, one per size, from one source.
    Separate,
    /// The source alone, into a fakesink.
    Source,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Simulcast => "simulcast=three",
            Case::Separate => "3 callsinks",
            Case::Source => "source alone",
        }
    }

    /// The pipeline and the uids of its publishers.
    fn pipeline(self, server: &CallServer, round: usize) -> (String, Vec<String>) {
        let url = server.url();
        let source = source();
        match self {
            Case::Simulcast => {
                let uid = format!("simulcast-{round}");
                (
                    format!(
                        "{source} ! callsink server={url} channel={CHANNEL} uid={uid} codec=vp8 \
                         simulcast=three max-bitrate={TOTAL_KBPS} min-bitrate={TOTAL_KBPS}"
                    ),
                    vec![uid],
                )
            }
            Case::Separate => {
                let mut desc = format!("{source} ! tee name=t");
                let mut uids = vec![];
                for (rid, w, h, share) in LAYERS {
                    let uid = format!("separate-{rid}-{round}");
                    let kbps = TOTAL_KBPS * share / 100;
                    let scale = if w == 1280 {
                        String::new()
                    } else {
                        format!("videoscale ! video/x-raw,width={w},height={h} ! ")
                    };
                    desc += &format!(
                        " t. ! queue ! {scale}callsink server={url} channel={CHANNEL} uid={uid} \
                         codec=vp8 max-bitrate={kbps} min-bitrate={kbps}"
                    );
                    uids.push(uid);
                }
                (desc, uids)
            }
            Case::Source => (format!("{source} ! fakesink sync=true"), vec![]),
        }
    }
}

struct Measure {
    cpu_per_30s: f64,
    rss_mb: f64,
    /// Frames per second over the window, by layer (case 1) or publisher (case 2), largest
    /// first.
    fps: Vec<(String, f64)>,
    /// Total bitrate at the server over the window, bit/s (the mean of one-second readings).
    bitrate: f64,
}

/// The publishers `uids` as the server lists them now.
fn listed(server: &CallServer, uids: &[String]) -> Vec<PublisherInfo> {
    let all: Vec<PublisherInfo> = server
        .channels()
        .into_iter()
        .flat_map(|c| c.publishers)
        .collect();
    uids.iter()
        .filter_map(|u| all.iter().find(|p| &p.uid == u).cloned())
        .collect()
}

/// Frame counts by layer (one publisher with layers) or by publisher, largest first.
fn frames(server: &CallServer, uids: &[String]) -> Vec<(String, u64)> {
    let publishers = listed(server, uids);
    let mut out: Vec<(String, u64, u64)> = vec![];
    for p in publishers {
        if p.layers.is_empty() {
            let px = u64::from(p.width.unwrap_or(0)) * u64::from(p.height.unwrap_or(0));
            let size = format!("{}x{}", p.width.unwrap_or(0), p.height.unwrap_or(0));
            out.push((size, px, p.frames));
        } else {
            for l in p.layers {
                let px = u64::from(l.width.unwrap_or(0)) * u64::from(l.height.unwrap_or(0));
                let size = format!(
                    "{} {}x{}",
                    l.rid,
                    l.width.unwrap_or(0),
                    l.height.unwrap_or(0)
                );
                out.push((size, px, l.frames));
            }
        }
    }
    out.sort_by_key(|o| std::cmp::Reverse(o.1));
    out.into_iter().map(|(s, _, f)| (s, f)).collect()
}

fn measure(server: &CallServer, case: Case, round: usize, warmup: f64, secs: f64) -> Measure {
    let (desc, uids) = case.pipeline(server, round);
    let start = Instant::now();
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, desc)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("publisher starts");
    // All three sizes known at the server (a keyframe of each), within 20 s.
    let sizes_known = |server: &CallServer| {
        let f = frames(server, &uids);
        f.len() == 3 && f.iter().all(|(s, _)| !s.contains("0x0"))
    };
    if !uids.is_empty() {
        while !sizes_known(server) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !sizes_known(server) {
            eprintln!(
                "{}: the server does not see three sizes: {:?}",
                case.name(),
                frames(server, &uids)
            );
        }
    }
    std::thread::sleep(Duration::from_secs_f64(warmup).saturating_sub(start.elapsed()));
    let frames0 = frames(server, &uids);
    let cpu0 = cpu_seconds(child.id());
    let t0 = Instant::now();
    let mut bitrates = vec![];
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(
            Duration::from_secs(1).min(Duration::from_secs_f64(secs).saturating_sub(t0.elapsed())),
        );
        let publishers = listed(server, &uids);
        bitrates.push(publishers.iter().map(|p| p.bitrate).sum::<u64>() as f64);
    }
    let cpu = cpu_seconds(child.id()) - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let frames1 = frames(server, &uids);
    let rss_mb = peak_rss_mb(child.id());
    let fps = frames1
        .iter()
        .map(|(s, f)| {
            let before = frames0
                .iter()
                .find(|(s0, _)| s0 == s)
                .map_or(0, |(_, f0)| *f0);
            (s.clone(), f.saturating_sub(before) as f64 / elapsed)
        })
        .collect();
    common::end_child(&mut child);
    Measure {
        cpu_per_30s: cpu * 30.0 / elapsed,
        rss_mb,
        fps,
        bitrate: bitrates.iter().sum::<f64>() / bitrates.len().max(1) as f64,
    }
}

fn fps_text(fps: &[(String, f64)]) -> String {
    fps.iter()
        .map(|(s, f)| format!("{s} {f:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print(case: Case, m: &Measure) {
    if case == Case::Source {
        println!(
            "{:>16}: {:.2} CPU-s per 30 s ({:.0} % of a core), peak RSS {:.0} MB",
            case.name(),
            m.cpu_per_30s,
            m.cpu_per_30s / 30.0 * 100.0,
            m.rss_mb,
        );
        return;
    }
    println!(
        "{:>16}: {:.2} CPU-s per 30 s ({:.0} % of a core), peak RSS {:.0} MB, {:.2} Mbit/s at the server, fps at the server: {}",
        case.name(),
        m.cpu_per_30s,
        m.cpu_per_30s / 30.0 * 100.0,
        m.rss_mb,
        m.bitrate / 1e6,
        fps_text(&m.fps),
    );
}

fn main() {
    if let Ok(desc) = std::env::var(CHILD) {
        common::run_child(&desc, || (), |_| ());
        return;
    }
    common::in_private_netns();
    gst::init().unwrap();
    let secs = env_number("SIMULCAST_SECS", 20.0);
    let warmup = env_number("SIMULCAST_WARMUP", 5.0);
    let rounds = env_number("SIMULCAST_ROUNDS", 2.0) as usize;
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server");
    println!(
        "simulcast: 1280x720@30 {} VP8 (moving bars) as 1280x720 + 640x360 + 320x180, {TOTAL_KBPS} kbit/s in all \
         (1625 + 625 + 250, pinned), {warmup} s warm-up, {secs} s window, {rounds} round(s) each, order A B B A",
        std::env::var("SIMULCAST_FORMAT").unwrap_or_else(|_| "I420".into())
    );

    let mut results: Vec<(Case, Measure)> = vec![];
    for round in 0..rounds {
        let mut order = [Case::Simulcast, Case::Separate];
        if round % 2 == 1 {
            order.reverse();
        }
        for case in order {
            let m = measure(&server, case, round, warmup, secs);
            print(case, &m);
            results.push((case, m));
        }
    }
    let source = measure(&server, Case::Source, 0, warmup.min(2.0), secs.min(10.0));
    print(Case::Source, &source);

    let of = |case: Case| results.iter().filter(move |(c, _)| *c == case);
    let cpu = |case| median(of(case).map(|(_, m)| m.cpu_per_30s)).unwrap_or(f64::NAN);
    let bitrate = |case| median(of(case).map(|(_, m)| m.bitrate)).unwrap_or(f64::NAN);
    println!("medians");
    for case in [Case::Simulcast, Case::Separate] {
        let runs: Vec<&Measure> = of(case).map(|(_, m)| m).collect();
        let n = runs.len().max(1) as f64;
        let mut fps: Vec<(String, f64)> = runs
            .first()
            .map(|m| m.fps.iter().map(|(s, _)| (s.clone(), 0.0)).collect())
            .unwrap_or_default();
        for m in &runs {
            for (i, (_, f)) in m.fps.iter().enumerate() {
                if let Some(slot) = fps.get_mut(i) {
                    slot.1 += f / n;
                }
            }
        }
        println!(
            "{:>16}: {:.2} CPU-s per 30 s ({:.2} above the source alone), {:.2} Mbit/s at the server, mean fps at the server: {}",
            case.name(),
            cpu(case),
            cpu(case) - source.cpu_per_30s,
            bitrate(case) / 1e6,
            fps_text(&fps),
        );
    }
    let (a, b) = (bitrate(Case::Simulcast), bitrate(Case::Separate));
    if (a - b).abs() > 0.15 * a.max(b) {
        println!(
            "note: the total bitrates differ by more than 15 % ({:.2} against {:.2} Mbit/s): the encoders did not do the same work",
            a / 1e6,
            b / 1e6
        );
    }
    println!(
        "ratio simulcast=three / 3 callsinks CPU: {:.2} (target <= 0.8); without the source: {:.2}",
        cpu(Case::Simulcast) / cpu(Case::Separate).max(1e-9),
        (cpu(Case::Simulcast) - source.cpu_per_30s)
            / (cpu(Case::Separate) - source.cpu_per_30s).max(1e-9),
    );
}
