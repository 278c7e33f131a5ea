// SPDX-License-Identifier: MPL-2.0
//! Glass-to-glass latency, side by side in one run: how long a frame takes from the moment
//! the producer captured it to the moment a receiver has it decoded (or, in Chromium, hands it
//! to the compositor), for a 1280x720@30 track at 2 Mbit/s, VP8 and H.264:
//!
//! 1. `callsink` → the embedded call server (in this process, port 0) → `callsrc` — our path;
//! 2. gst-plugins-rs `whipclientsink` → `whipserversrc` — the reference, no SFU in between;
//! 3. `callsink` → the call server → its viewer page in headless Chromium — our path to a
//!    browser;
//! 4. gst-plugins-rs `whepserversink` → Chromium directly — the reference for 3;
//!
//! and 1 and 3 again with callsink's `congestion-control=false` ("cc off").
//!
//! The references run their encoder at the same fixed 2 Mbit/s (`congestion-control=disabled
//! do-fec=false enable-mitigation-modes=none max-bitrate=2000000`); callsink gets
//! `min-bitrate=max-bitrate=2000`, with its congestion controller (whose pacer sends at the
//! estimate) and without it (like for like with the references). (`LATENCY_WEBRTCSINK_CC=gcc` gives the references the same
//! `rtpgccbwe` congestion controller as callsink; whepserversink then panics with H.264 in
//! gst-plugins-rs 0.15.4, an x264enc bitrate out of range.)
//!
//! How: the producer (`videotestsrc pattern=smpte horizontal-speed=4`, moving bars, so the
//! encoder has real work) writes the time at which each frame leaves it into the frame
//! itself — 40 bits of the wall clock in microseconds and an 8-bit CRC, as two rows of 24
//! black or white 48x48 blocks aligned to the macroblock grid, which survive any
//! quantisation. A GStreamer receiver reads the code back in an `appsink sync=false` right
//! after the decoder (raw frames) and compares it with the same clock; the browser reads it
//! from a canvas in a `requestVideoFrameCallback` (the frame's `presentationTime`, turned into
//! the wall clock through `performance.timeOrigin` and `Date.now()`: same machine, same
//! clock). Frames whose code fails its CRC are counted as unreadable, never as latency.
//!
//! Per case: p50, p95, p99 and max latency, frames sent (stamped by the producer during the
//! measured window), frames delivered (distinct codes read back; in Chromium: presented),
//! the share of sent frames lost (never delivered) and late (delivered more than 100 ms after
//! capture), and the ratios of p50 and p99 to the reference of the same codec. Where the time
//! goes is printed under each case: in the publisher (pad probes on its encoder, on the
//! `rtpgccbwe` pacer and on `nicesink`, found inside callsink's bin: capture → encoded →
//! first and last packet to the network), the hop from the publisher's last packet to the
//! frame complete at the receiver (network and server), and in Chromium (`receiveTime`,
//! received → presented, `processingDuration`), with what `getStats()` and
//! `getVideoPlaybackQuality()` counted in the window (frames received, decoded, dropped,
//! presented, freezes) next to the frames the server forwarded. Everything runs inside a
//! private network namespace: no packet leaves the machine.
//!
//! ```text
//! cargo bench --bench latency          # 60 s per case, 12 cases, about 15 minutes
//! LATENCY_SECS=10 LATENCY_CODECS=vp8 LATENCY_CASES=ours,ref cargo bench --bench latency
//! ```
//!
//! Knobs, for finding out where the time goes:
//! * `LATENCY_CASES`, comma-separated: `ours`, `ours-fixed` (callsink with
//!   `congestion-control=false`: a fixed bitrate, no pacer, as the references run), `ref`,
//!   `chromium`, `chromium-fixed`, `chromium-whep` (the default), and `local` (the encoder straight into the decoder: no network),
//!   `callsink-whipserversrc` (callsink without the server), `chromium-own-page` (our path
//!   into the bench's own WHEP page instead of the viewer page), `whep-pair`
//!   (whepserversink → whepclientsrc); `LATENCY_CODECS` (`vp8,h264`).
//! * `LATENCY_CALLSRC_LATENCY`: callsrc's `latency` (ms); `LATENCY_SPLIT=1`: callsrc hands
//!   over the encoded stream, timed as it leaves callsrc, and the bench decodes it.
//! * `LATENCY_PACER_KBPS`: sets the publisher's `rtpgccbwe` (the pacer) to this rate once
//!   connected, while callsink keeps its encoder within its own bitrate bounds — an
//!   experiment, not a setting of the element.
//! * `LATENCY_PRODUCER`: `moving` (default), `static` (still bars), `appsrc` (a still frame
//!   pushed by a thread sleeping 1/30 s between pushes, as a simple Python producer does),
//!   `still` (the same, the code changing once a second: 29 of 30 frames identical),
//!   `bursty` (two frames 1 ms apart every 1/15 s, stamped on arrival), `bursty-even` (the
//!   same pushes, stamped 1/30 s apart).
//! * `LATENCY_DUMP=file.pgm` saves the first unreadable frame; `LATENCY_ELEMENTS=1` lists the
//!   elements of the receivers.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{Browser, wait_for};
use common::env_number;
use gst::prelude::*;
use gst_video::prelude::*;
use gstcustomvideo::server::{CallServer, ServerConfig};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WIDTH: usize = 1280;
const HEIGHT: usize = 720;
/// The code: 40 bits of the capture time (µs) and an 8-bit CRC, in two rows of blocks.
const DATA_BITS: u32 = 40;
const BITS: usize = 48;
const PER_ROW: usize = 24;
const BLOCK: usize = 48;
const X0: usize = 64;
const Y0: usize = 16;
const MASK: u64 = (1 << DATA_BITS) - 1;
/// A frame delivered later than this after capture is late.
const LATE_US: u64 = 100_000;
const BITRATE: u32 = 2_000_000;
/// callsink's VP8 settings for this track (as in benches/publish.rs), for the local case.
const VP8ENC: &str = "deadline=1 cpu-used=4 end-usage=cbr lag-in-frames=0 target-bitrate=2000000 \
     keyframe-max-dist=60 error-resilient=default buffer-size=1000 buffer-initial-size=500 \
     buffer-optimal-size=600";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// CRC-8 (polynomial 0x07) of the 40 data bits.
fn crc8(v: u64) -> u8 {
    let mut crc = 0u8;
    for i in (0..5).rev() {
        crc ^= (v >> (8 * i)) as u8;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Top-left corner of block `i`.
fn block_origin(i: usize) -> (usize, usize) {
    (X0 + (i % PER_ROW) * BLOCK, Y0 + (i / PER_ROW) * BLOCK)
}

/// The 48-bit word that carries `us`, most significant bit first.
fn word_of(us: u64) -> u64 {
    let v = us & MASK;
    (v << 8) | u64::from(crc8(v))
}

/// The capture time of a word read back, near `now` (the code keeps 40 bits: 12.7 days).
fn time_of(word: u64, now: u64) -> Option<u64> {
    let v = word >> 8;
    if crc8(v) != word as u8 {
        return None;
    }
    let behind = now.wrapping_sub(v) & MASK;
    Some(if behind > MASK / 2 {
        now + (MASK + 1 - behind)
    } else {
        now - behind
    })
}

/// Writes the code of `us` into an I420 frame.
fn stamp(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, us: u64) {
    let word = word_of(us);
    let stride = frame.plane_stride()[0] as usize;
    let luma = frame.plane_data_mut(0).unwrap();
    for i in 0..BITS {
        let value = if (word >> (BITS - 1 - i)) & 1 == 1 {
            235
        } else {
            16
        };
        let (x0, y0) = block_origin(i);
        for row in y0..y0 + BLOCK {
            luma[row * stride + x0..row * stride + x0 + BLOCK].fill(value);
        }
    }
    for plane in 1..3 {
        let stride = frame.plane_stride()[plane] as usize;
        let chroma = frame.plane_data_mut(plane as u32).unwrap();
        let rows = BITS.div_ceil(PER_ROW) * BLOCK;
        for row in Y0 / 2..(Y0 + rows) / 2 {
            chroma[row * stride + X0 / 2..row * stride + (X0 + PER_ROW * BLOCK) / 2].fill(128);
        }
    }
}

/// Reads the code from a luma plane (8-bit, `stride` bytes a row).
fn read_word(luma: &[u8], stride: usize) -> u64 {
    let mut word = 0u64;
    for i in 0..BITS {
        let (x0, y0) = block_origin(i);
        let (mut sum, mut n) = (0u32, 0u32);
        for y in (y0 + 12..y0 + 36).step_by(4) {
            for x in (x0 + 12..x0 + 36).step_by(4) {
                sum += u32::from(luma[y * stride + x]);
                n += 1;
            }
        }
        word = (word << 1) | u64::from(sum / n > 125);
    }
    word
}

/// The same, in the browser: reads the code of each frame the video element presents.
/// `window.__lat` collects `[bits, presented, received, processing ms, presentedFrames,
/// callback]` (times in µs of the wall clock).
const HOOK_JS: &str = r#"
window.__lat = window.__lat || [];
const hook = video => {
  if (video.__hooked) return;
  video.__hooked = true;
  const c = document.createElement("canvas");
  c.width = 1280; c.height = 112;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  const onFrame = (now, md) => {
    const off = Date.now() - (performance.timeOrigin + performance.now());
    const wall = t => Math.round((performance.timeOrigin + t + off) * 1000);
    let bits = "";
    if (md.width === 1280 && md.height === 720) {
      ctx.drawImage(video, 0, 0, 1280, 112, 0, 0, 1280, 112);
      const d = ctx.getImageData(0, 0, 1280, 112).data;
      for (let i = 0; i < 48; i++) {
        const x0 = 64 + (i % 24) * 48, y0 = 16 + Math.floor(i / 24) * 48;
        let s = 0, n = 0;
        for (let y = y0 + 12; y < y0 + 36; y += 4)
          for (let x = x0 + 12; x < x0 + 36; x += 4) { s += d[(y * 1280 + x) * 4]; n++; }
        bits += s / n > 128 ? "1" : "0";
      }
    }
    window.__lat.push([bits, wall(md.presentationTime), md.receiveTime ? wall(md.receiveTime) : 0,
                       md.processingDuration ? md.processingDuration * 1000 : -1,
                       md.presentedFrames, wall(now)]);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
};
setInterval(() => document.querySelectorAll("video").forEach(hook), 50);
"#;

/// A WHEP client in the page (for whepserversink): `{url}` is replaced by the endpoint.
const WHEP_JS: &str = r#"
(async () => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.__pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  const video = document.createElement("video");
  video.autoplay = true; video.muted = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = ev => { video.srcObject = new MediaStream([ev.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    setTimeout(resolve, 3000);
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
    if (pc.iceGatheringState === "complete") resolve();
  });
  const r = await fetch("{url}", { method: "POST", body: pc.localDescription.sdp,
                                   headers: { "Content-Type": "application/sdp" } });
  window.__whepStatus = r.status;
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
})().catch(e => { window.__whepError = String(e); });
"#;

/// The inbound video stats of the page's peer connection (the viewer page's or our own).
const STATS_JS: &str = r#"
const done = arguments[arguments.length - 1];
let pc = window.__pc;
if (!pc && typeof peers !== "undefined") for (const p of peers.values()) if (p.pc) pc = p.pc;
if (!pc) { done(null); return; }
pc.getStats().then(r => {
  let v = null; const codecs = {};
  r.forEach(s => {
    if (s.type === "inbound-rtp" && s.kind === "video") v = s;
    if (s.type === "codec") codecs[s.id] = s.mimeType;
  });
  const video = document.querySelector("video");
  const q = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
  if (v) v = Object.assign({}, v, { codec: codecs[v.codecId], qualityTotal: q.totalVideoFrames,
                                    qualityDropped: q.droppedVideoFrames });
  done(v ? JSON.parse(JSON.stringify(v)) : null);
}, e => done(String(e)));
"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    /// callsink → call server → callsrc.
    Ours,
    /// whipclientsink → whipserversrc.
    Reference,
    /// callsink → call server → Chromium (the viewer page).
    Chromium,
    /// whepserversink → Chromium.
    ChromiumWhep,
    /// callsink → whipserversrc (no server: what callsink and the receiver cost).
    CallsinkWhipserversrc,
    /// The encoder straight into the decoder in the producer's pipeline: no network at all.
    Local,
    /// whepserversink → whepclientsrc (gst-plugins-rs both ends, no SFU).
    WhepPair,
    /// callsink → call server → Chromium, through the bench's own WHEP page instead of the
    /// viewer page.
    ChromiumOwnPage,
    /// [`Path::Ours`] with callsink's `congestion-control=false`: a fixed bitrate and no
    /// pacer, as the references run.
    OursFixed,
    /// [`Path::Chromium`] with callsink's `congestion-control=false`.
    ChromiumFixed,
}

impl Path {
    fn parse(s: &str) -> Option<Path> {
        Some(match s {
            "ours" => Path::Ours,
            "ref" => Path::Reference,
            "chromium" => Path::Chromium,
            "chromium-whep" => Path::ChromiumWhep,
            "callsink-whipserversrc" => Path::CallsinkWhipserversrc,
            "local" => Path::Local,
            "whep-pair" => Path::WhepPair,
            "chromium-own-page" => Path::ChromiumOwnPage,
            "ours-fixed" => Path::OursFixed,
            "chromium-fixed" => Path::ChromiumFixed,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Path::Ours => "callsink > server > callsrc",
            Path::Reference => "whipclientsink > whipserversrc (ref)",
            Path::Chromium => "callsink > server > Chromium",
            Path::ChromiumWhep => "whepserversink > Chromium (ref)",
            Path::CallsinkWhipserversrc => "callsink > whipserversrc",
            Path::Local => "encoder > decoder, no network",
            Path::WhepPair => "whepserversink > whepclientsrc",
            Path::ChromiumOwnPage => "callsink > server > Chromium (own page)",
            Path::OursFixed => "callsink cc off > server > callsrc",
            Path::ChromiumFixed => "callsink cc off > server > Chromium",
        }
    }

    /// The path a variant runs (the variants change callsink's settings only).
    fn base(self) -> Path {
        match self {
            Path::OursFixed => Path::Ours,
            Path::ChromiumFixed => Path::Chromium,
            p => p,
        }
    }

    /// Whether callsink runs without congestion control.
    fn fixed(self) -> bool {
        matches!(self, Path::OursFixed | Path::ChromiumFixed)
    }

    /// The reference this path is compared with.
    fn reference(self) -> Option<Path> {
        match self {
            Path::Reference | Path::ChromiumWhep | Path::Local => None,
            Path::Chromium | Path::ChromiumOwnPage | Path::ChromiumFixed => {
                Some(Path::ChromiumWhep)
            }
            _ => Some(Path::Reference),
        }
    }

    fn browser(self) -> bool {
        matches!(
            self,
            Path::Chromium | Path::ChromiumWhep | Path::ChromiumOwnPage | Path::ChromiumFixed
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Producer {
    Moving,
    Static,
    Appsrc,
    /// As Appsrc, but the code changes once a second only: 29 of 30 frames are identical.
    Still,
    /// As Appsrc, but two frames at once every 1/15 s: 30 fps on average, in pairs.
    Bursty,
    /// As Bursty, but stamped (PTS) evenly 1/30 s apart: bursts in time, even timestamps.
    BurstyEven,
}

/// One frame read back: capture and delivery times (µs), and for the split receiver the
/// time the encoded frame left callsrc; in the browser also when its last packet arrived and
/// how long it took to decode.
#[derive(Clone, Copy, Default)]
struct Delivery {
    captured: u64,
    delivered: u64,
    arrived: Option<u64>,
    decode_ms: Option<f64>,
}

#[derive(Default)]
struct Log {
    /// Browser: when each requestVideoFrameCallback came, and its presentedFrames.
    callbacks: Vec<(u64, u64)>,
    sent: Vec<u64>,
    /// PTS (ns) of each stamped frame → its capture time.
    by_pts: HashMap<u64, u64>,
    delivered: Vec<Delivery>,
    unreadable: u64,
    /// Why the first unreadable frame was.
    odd: Option<String>,
}

type Shared = Arc<Mutex<Log>>;

/// The producer pipeline: source, the stamping probe, `sink`.
struct Source {
    pipeline: gst::Pipeline,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Source {
    fn start(
        producer: Producer,
        sink: &str,
        log: Shared,
        configure: impl FnOnce(&gst::Element),
    ) -> Source {
        let caps = format!("video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate=30/1");
        let src = match producer {
            Producer::Moving => {
                format!("videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! {caps}")
            }
            Producer::Static => format!("videotestsrc is-live=true pattern=smpte ! {caps}"),
            Producer::Appsrc | Producer::Still | Producer::Bursty | Producer::BurstyEven => {
                format!(
                    "appsrc name=app is-live=true do-timestamp=true format=time caps={caps} ! queue"
                )
            }
        };
        let pipeline = gst::parse::launch(&format!("{src} ! identity name=stamp ! {sink}"))
            .unwrap_or_else(|e| panic!("producer pipeline ({sink}): {e}"))
            .downcast::<gst::Pipeline>()
            .unwrap();
        let info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::I420,
            WIDTH as u32,
            HEIGHT as u32,
        )
        .build()
        .unwrap();
        let pad = pipeline
            .by_name("stamp")
            .unwrap()
            .static_pad("src")
            .unwrap();
        let counter = Mutex::new((0u64, 0u64));
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = probe.data.as_mut() {
                let mut c = counter.lock().unwrap();
                let (count, last) = &mut *c;
                let fresh = producer != Producer::Still || count.is_multiple_of(30);
                *count += 1;
                if fresh {
                    *last = now_us();
                }
                let last = *last;
                if let Ok(mut frame) =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info)
                {
                    stamp(&mut frame, last);
                    if fresh {
                        let mut log = log.lock().unwrap();
                        log.sent.push(last);
                        if let Some(pts) = frame.buffer().pts() {
                            log.by_pts.insert(pts.nseconds(), last);
                        }
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = matches!(
            producer,
            Producer::Appsrc | Producer::Still | Producer::Bursty | Producer::BurstyEven
        )
        .then(|| {
            let appsrc = pipeline
                .by_name("app")
                .unwrap()
                .downcast::<gst_app::AppSrc>()
                .unwrap();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // A still picture: a diagonal gradient.
                let mut still = vec![128u8; WIDTH * HEIGHT * 3 / 2];
                for y in 0..HEIGHT {
                    for x in 0..WIDTH {
                        still[y * WIDTH + x] = (16 + (x + y) / 9) as u8;
                    }
                }
                let even = producer == Producer::BurstyEven;
                if even {
                    appsrc.set_do_timestamp(false);
                }
                let (mut n, mut base) = (0u64, None);
                let mut push = || {
                    let mut buffer = gst::Buffer::from_slice(still.clone());
                    if even {
                        let Some(now) = appsrc.current_running_time() else {
                            return;
                        };
                        let base = *base.get_or_insert(now);
                        let pts = base + gst::ClockTime::from_nseconds(n * 1_000_000_000 / 30);
                        buffer.get_mut().unwrap().set_pts(pts);
                    }
                    n += 1;
                    let _ = appsrc.push_buffer(buffer);
                };
                while !stop.load(Ordering::Relaxed) {
                    push();
                    if matches!(producer, Producer::Bursty | Producer::BurstyEven) {
                        std::thread::sleep(Duration::from_millis(1));
                        push();
                        std::thread::sleep(Duration::from_secs_f64(2.0 / 30.0));
                    } else {
                        std::thread::sleep(Duration::from_secs_f64(1.0 / 30.0));
                    }
                }
            })
        });
        configure(&pipeline.by_name("sink").unwrap());
        pipeline
            .set_state(gst::State::Playing)
            .expect("producer plays");
        Source {
            pipeline,
            stop,
            thread,
        }
    }

    fn sink(&self) -> gst::Element {
        self.pipeline.by_name("sink").unwrap()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// An appsink that reads the code of every frame into `log`; with `arrivals`, the time the
/// encoded frame of the same PTS arrived.
fn reading_sink(log: Shared, arrivals: Option<Arc<Mutex<HashMap<u64, u64>>>>) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )
        .sync(false)
        .build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let now = now_us();
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let mut log = log.lock().unwrap();
                if info.width() as usize != WIDTH || info.height() as usize != HEIGHT {
                    log.unreadable += 1;
                    log.odd.get_or_insert_with(|| format!("a frame of {caps}"));
                    return Ok(gst::FlowSuccess::Ok);
                }
                let Ok(frame) = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let word = read_word(frame.plane_data(0).unwrap(), info.stride()[0] as usize);
                match time_of(word, now) {
                    Some(captured) => {
                        let arrived = arrivals.as_ref().and_then(|a| {
                            let pts = buffer.pts()?.nseconds();
                            a.lock().unwrap().remove(&pts)
                        });
                        log.delivered.push(Delivery {
                            captured,
                            delivered: now,
                            arrived,
                            decode_ms: None,
                        })
                    }
                    None => {
                        if log.odd.is_none()
                            && let Ok(path) = std::env::var("LATENCY_DUMP")
                        {
                            // The luma plane of the first unreadable frame, as a PGM image.
                            let stride = info.stride()[0] as usize;
                            let luma = frame.plane_data(0).unwrap();
                            let mut pgm = format!("P5 {WIDTH} {HEIGHT} 255\n").into_bytes();
                            for row in 0..HEIGHT {
                                pgm.extend_from_slice(&luma[row * stride..row * stride + WIDTH]);
                            }
                            let _ = std::fs::write(path, pgm);
                        }
                        log.unreadable += 1;
                        log.odd
                            .get_or_insert_with(|| format!("code {word:012x} fails its CRC"));
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

/// How long RTP packets wait in the publisher's `rtpgccbwe` (the congestion controller's
/// leaky-bucket pacer, inside webrtcbin): µs per packet, and whether it ends a frame.
#[derive(Default)]
struct Pacer {
    entered: HashMap<(u32, u16), u64>,
    delays: Vec<(u64, bool)>,
}

/// Times every packet through the `rtpgccbwe` of `pipeline`, if it has one (the element is
/// looked for in every bin: callsink's and webrtcsink's webrtcbin get it once negotiated).
fn watch_pacer(pipeline: &gst::Pipeline) -> Arc<Mutex<Pacer>> {
    let pacer: Arc<Mutex<Pacer>> = Arc::default();
    let Some(bwe) = pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtpgccbwe"))
    else {
        return pacer;
    };
    // The experiment: pace faster than the encoder's bitrate (callsink keeps its encoder
    // within its own min/max-bitrate, whatever the estimate says).
    if let Some(bps) = std::env::var("LATENCY_PACER_KBPS")
        .ok()
        .and_then(|k| k.parse::<u32>().ok())
        .map(|k| k * 1000)
    {
        bwe.set_property("max-bitrate", bps);
        bwe.set_property("min-bitrate", bps);
        bwe.set_property("estimated-bitrate", bps);
    }
    let rtp = |b: &gst::BufferRef| {
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(b).ok()?;
        Some(((rtp.ssrc(), rtp.seq()), rtp.is_marker()))
    };
    let each = |info: &gst::PadProbeInfo, f: &mut dyn FnMut(&gst::BufferRef)| match &info.data {
        Some(gst::PadProbeData::Buffer(b)) => f(b),
        Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(f),
        _ => (),
    };
    let p = Arc::clone(&pacer);
    bwe.static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let now = now_us();
            let mut p = p.lock().unwrap();
            each(info, &mut |b| {
                if let Some((key, _)) = rtp(b) {
                    p.entered.insert(key, now);
                }
            });
            gst::PadProbeReturn::Ok
        },
    );
    let p = Arc::clone(&pacer);
    bwe.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let now = now_us();
            let mut p = p.lock().unwrap();
            each(info, &mut |b| {
                if let Some((key, marker)) = rtp(b)
                    && let Some(t) = p.entered.remove(&key)
                {
                    p.delays.push((now - t, marker));
                }
            });
            gst::PadProbeReturn::Ok
        },
    );
    pacer
}

/// When each frame (by PTS) left the publisher's encoder, and when its first and last RTP
/// packets went into `nicesink` (the network), in µs.
#[derive(Default)]
struct Timeline {
    encoded: HashMap<u64, u64>,
    first_out: HashMap<u64, u64>,
    last_out: HashMap<u64, u64>,
}

/// Times the frames through the publisher's encoder and to its `nicesink`, found in any bin
/// of `pipeline` (inside callsink or webrtcsink).
fn watch_publisher(pipeline: &gst::Pipeline) -> Arc<Mutex<Timeline>> {
    let timeline: Arc<Mutex<Timeline>> = Arc::default();
    for element in pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
    {
        let Some(factory) = element.factory() else {
            continue;
        };
        let (pad, encoder) = match factory.name().as_str() {
            "vp8enc" | "x264enc" | "openh264enc" => ("src", true),
            "nicesink" => ("sink", false),
            _ => continue,
        };
        let t = Arc::clone(&timeline);
        element.static_pad(pad).unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let now = now_us();
                let mut t = t.lock().unwrap();
                let mut note = |b: &gst::BufferRef| {
                    if let Some(pts) = b.pts() {
                        let pts = pts.nseconds();
                        if encoder {
                            t.encoded.entry(pts).or_insert(now);
                        } else {
                            t.first_out.entry(pts).or_insert(now);
                            t.last_out.insert(pts, now);
                        }
                    }
                };
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => note(b),
                    Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(note),
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    timeline
}

/// `callsrc` into a reading appsink.
fn callsrc_receiver(server: &CallServer, channel: &str, uid: &str, log: Shared) -> gst::Pipeline {
    let latency = std::env::var("LATENCY_CALLSRC_LATENCY")
        .map(|l| format!("latency={l}"))
        .unwrap_or_default();
    let split = std::env::var_os("LATENCY_SPLIT").is_some();
    let decode = if split {
        // callsrc hands over the encoded stream (VP8, or parsed H.264): timed as it leaves.
        "decode=false ! identity name=arrive ! decodebin ! videoconvert"
    } else {
        "! videoconvert"
    };
    let pipeline = gst::parse::launch(&format!(
        "callsrc server={} channel={channel} uid={uid} timeout=30 {latency} {decode}",
        server.url()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let arrivals = split.then(|| {
        let arrivals: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
        let a = Arc::clone(&arrivals);
        let pad = pipeline
            .by_name("arrive")
            .unwrap()
            .static_pad("src")
            .unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
            if let Some(pts) = probe.buffer().and_then(|b| b.pts()) {
                a.lock().unwrap().insert(pts.nseconds(), now_us());
            }
            gst::PadProbeReturn::Ok
        });
        arrivals
    });
    let sink = reading_sink(log, arrivals);
    pipeline.add(&sink).unwrap();
    let last = pipeline
        .iterate_sorted()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.factory().is_some_and(|f| f.name() == "videoconvert"))
        .unwrap();
    last.link(&sink).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    pipeline
}

/// gst-plugins-rs `whipserversrc` on `host` (or `whepclientsrc` of `host`'s
/// whepserversink) into a reading appsink.
fn webrtcsrc_receiver(factory: &str, host: &str, log: Shared) -> gst::Pipeline {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make(factory).build().unwrap();
    src.set_property("stun-server", None::<String>);
    let signaller = src.property::<gst::glib::Object>("signaller");
    if factory == "whipserversrc" {
        signaller.set_property("host-addr", host);
    } else {
        signaller.set_property("whep-endpoint", format!("{host}/whep/endpoint"));
    }
    if std::env::var_os("LATENCY_ELEMENTS").is_some() {
        src.downcast_ref::<gst::Bin>()
            .unwrap()
            .connect_deep_element_added(|_, _, e| {
                if let Some(f) = e.factory() {
                    eprintln!("receiver added {}", f.name());
                }
            });
    }
    let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
    let sink = reading_sink(log, None);
    pipeline
        .add_many([&src, &convert, sink.upcast_ref()])
        .unwrap();
    convert.link(&sink).unwrap();
    let convert = convert.downgrade();
    src.connect_pad_added(move |_, pad| {
        if pad.name().starts_with("video")
            && let Some(convert) = convert.upgrade()
        {
            let _ = pad.link(&convert.static_pad("sink").unwrap());
        }
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    pipeline
}

/// The sink description of a gst-plugins-rs webrtcsink (`whipclientsink`,
/// `whepserversink`) with its encoder at our fixed bitrate.
fn webrtcsink(factory: &str, codec: &str) -> String {
    let caps = if codec == "vp8" {
        "video/x-vp8"
    } else {
        "video/x-h264"
    };
    let cc = std::env::var("LATENCY_WEBRTCSINK_CC").unwrap_or_else(|_| "disabled".into());
    format!(
        "{factory} name=sink congestion-control={cc} start-bitrate={BITRATE} \
         min-bitrate={BITRATE} max-bitrate={BITRATE} video-caps={caps} enable-mitigation-modes=none do-fec=false"
    )
}

fn configure_webrtcsink(sink: &gst::Element, signaller_prop: &str, value: &str) {
    sink.set_property("stun-server", None::<String>);
    sink.property::<gst::glib::Object>("signaller")
        .set_property(signaller_prop, value);
}

/// A free TCP port on the namespace's veth address.
fn veth_port() -> u16 {
    std::net::TcpListener::bind("10.255.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// callsink at the bench's bitrate, with or without (`fixed`) congestion control.
fn callsink(server: &CallServer, channel: &str, uid: &str, codec: &str, fixed: bool) -> String {
    let kbps = BITRATE / 1000;
    format!(
        "callsink name=sink server={} channel={channel} uid={uid} codec={codec} \
         max-bitrate={kbps} min-bitrate={kbps} congestion-control={}",
        server.url(),
        !fixed
    )
}

/// What one case measured.
struct Outcome {
    path: Path,
    codec: &'static str,
    /// Latencies of the frames delivered in the window, ms, sorted.
    latencies: Vec<f64>,
    sent: usize,
    delivered: usize,
    late: usize,
    unreadable: u64,
    notes: Vec<String>,
    failed: Option<String>,
}

impl Outcome {
    fn percentile(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn spread(v: Vec<f64>) -> String {
    let v = sorted(v);
    format!(
        "p50 {:.1} / p95 {:.1} / p99 {:.1} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        percentile(&v, 0.99)
    )
}

/// Drains what the page collected into `log`.
fn drain_page(browser: &Browser, log: &Shared) {
    let v = browser.eval("const a = window.__lat || []; window.__lat = []; return a;");
    let mut log = log.lock().unwrap();
    for e in v.as_array().into_iter().flatten() {
        let bits = e[0].as_str().unwrap_or("");
        let presented = e[1].as_f64().unwrap_or(0.0) as u64;
        log.callbacks
            .push((presented, e[4].as_f64().unwrap_or(0.0) as u64));
        let word = u64::from_str_radix(bits, 2)
            .ok()
            .filter(|_| bits.len() == BITS);
        match word.and_then(|w| time_of(w, presented)) {
            Some(captured) => log.delivered.push(Delivery {
                captured,
                delivered: presented,
                arrived: e[2].as_f64().filter(|&r| r > 0.0).map(|r| r as u64),
                decode_ms: e[3].as_f64().filter(|&p| p >= 0.0),
            }),
            None => log.unreadable += 1,
        }
    }
}

fn stat(v: &Value, name: &str) -> f64 {
    v[name].as_f64().unwrap_or(0.0)
}

fn server_frames(server: &CallServer, uid: &str) -> Option<gstcustomvideo::server::PublisherInfo> {
    server
        .channels()
        .into_iter()
        .flat_map(|c| c.publishers)
        .find(|p| p.uid == uid)
}

/// Runs one case: producer and receiver up, the first frame through, two seconds of
/// warm-up, then `secs` measured.
fn run(
    path: Path,
    codec: &'static str,
    producer: Producer,
    secs: f64,
    server: &CallServer,
    browser: Option<&Browser>,
    round: usize,
) -> Outcome {
    let case = path;
    let (path, fixed) = (case.base(), case.fixed());
    let log: Shared = Arc::default();
    let channel = format!("lat{round}");
    let uid = format!("{codec}{round}");
    let mut notes = Vec::new();
    let mut failed = None;
    let host_port = veth_port();
    let host = format!("http://10.255.0.1:{host_port}");
    // Receivers that are servers start first; the others follow their publisher.
    let mut receiver = None;
    if matches!(path, Path::Reference | Path::CallsinkWhipserversrc) {
        receiver = Some(webrtcsrc_receiver("whipserversrc", &host, Arc::clone(&log)));
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("10.255.0.1", host_port)).is_ok()
        });
    }
    let sink = match path {
        Path::Ours
        | Path::OursFixed
        | Path::Chromium
        | Path::ChromiumFixed
        | Path::ChromiumOwnPage => callsink(server, &channel, &uid, codec, fixed),
        Path::CallsinkWhipserversrc => {
            let kbps = BITRATE / 1000;
            format!(
                "callsink name=sink whip-url={host}/whip/endpoint codec={codec} \
                 max-bitrate={kbps} min-bitrate={kbps}"
            )
        }
        Path::Reference => webrtcsink("whipclientsink", codec),
        Path::ChromiumWhep | Path::WhepPair => webrtcsink("whepserversink", codec),
        Path::Local if codec == "vp8" => {
            format!("vp8enc {VP8ENC} ! vp8dec ! videoconvert name=sink")
        }
        Path::Local => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={} key-int-max=60 \
             ! video/x-h264,profile=constrained-baseline ! h264parse ! avdec_h264 \
             ! videoconvert name=sink",
            BITRATE / 1000
        ),
    };
    let source = Source::start(producer, &sink, Arc::clone(&log), |sink| match path {
        Path::Reference => {
            configure_webrtcsink(sink, "whip-endpoint", &format!("{host}/whip/endpoint"))
        }
        Path::ChromiumWhep | Path::WhepPair => configure_webrtcsink(sink, "host-addr", &host),
        Path::Local => {
            let appsink = reading_sink(Arc::clone(&log), None);
            let bin = sink.parent().unwrap().downcast::<gst::Bin>().unwrap();
            bin.add(&appsink).unwrap();
            sink.link(&appsink).unwrap();
        }
        Path::Ours
        | Path::OursFixed
        | Path::Chromium
        | Path::ChromiumFixed
        | Path::ChromiumOwnPage
        | Path::CallsinkWhipserversrc => (),
    });
    if path == Path::WhepPair {
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("10.255.0.1", host_port)).is_ok()
        });
        receiver = Some(webrtcsrc_receiver("whepclientsrc", &host, Arc::clone(&log)));
    }
    if path == Path::Ours {
        receiver = Some(callsrc_receiver(server, &channel, &uid, Arc::clone(&log)));
    }
    if let Some(b) = browser {
        b.open("about:blank");
        match path {
            Path::Chromium => {
                // The viewer page subscribes once the publisher is listed.
                wait_for(Duration::from_secs(20), || {
                    server_frames(server, &uid).is_some()
                });
                b.open(&server.viewer_url(&channel));
            }
            Path::ChromiumOwnPage => {
                wait_for(Duration::from_secs(20), || {
                    server_frames(server, &uid).is_some()
                });
                b.open(&format!("{}/api/channels", server.url()));
                b.eval(&WHEP_JS.replace("{url}", &server.whep_url(&channel, &uid)));
            }
            _ => {
                wait_for(Duration::from_secs(10), || {
                    std::net::TcpStream::connect(("10.255.0.1", host_port)).is_ok()
                });
                b.open(&format!("{}/api/channels", server.url()));
                b.eval(&WHEP_JS.replace("{url}", &format!("{host}/whep/endpoint")));
            }
        }
        b.eval(HOOK_JS);
    }
    let drain = |log: &Shared| {
        if let Some(b) = browser {
            drain_page(b, log);
        }
    };
    // The first frame read back.
    let started = Instant::now();
    let first = wait_for(Duration::from_secs(30), || {
        drain(&log);
        !log.lock().unwrap().delivered.is_empty()
    });
    if !first {
        let why = browser
            .map(|b| {
                b.eval(
                    "return [window.__whepStatus, window.__whepError, (window.__lat||[]).length]",
                )
                .to_string()
            })
            .unwrap_or_default();
        failed = Some(format!("no frame read back within 30 s {why}"));
    } else {
        notes.push(format!(
            "first frame read back {:.1} s after start",
            started.elapsed().as_secs_f64()
        ));
    }
    let pacer = watch_pacer(&source.pipeline);
    let timeline = watch_publisher(&source.pipeline);
    std::thread::sleep(Duration::from_secs(2));
    drain(&log);
    pacer.lock().unwrap().delays.clear();
    let stats = |b: Option<&Browser>| b.map(|b| b.eval_async(STATS_JS)).unwrap_or(Value::Null);
    let t0 = now_us();
    let stats0 = stats(browser);
    let server0 = server_frames(server, &uid);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500).min(end - Instant::now().min(end)));
        drain(&log);
    }
    let t1 = now_us();
    let stats1 = stats(browser);
    let server1 = server_frames(server, &uid);
    let sink_stats = matches!(
        path,
        Path::Ours | Path::Chromium | Path::ChromiumOwnPage | Path::CallsinkWhipserversrc
    )
    .then(|| source.sink().property::<gst::Structure>("stats"));
    // Frames captured at the end of the window get their chance to arrive.
    std::thread::sleep(Duration::from_millis(1500));
    drain(&log);
    drop(source);
    std::thread::sleep(Duration::from_millis(500));
    if let Some(r) = receiver.take() {
        if std::env::var_os("LATENCY_ELEMENTS").is_some() {
            let names: Vec<String> = r
                .iterate_recurse()
                .into_iter()
                .filter_map(Result::ok)
                .filter_map(|e| e.factory().map(|f| f.name().to_string()))
                .collect();
            notes.push(format!("receiver elements: {}", names.join(" ")));
        }
        let _ = r.set_state(gst::State::Null);
    }
    if let Some(b) = browser {
        b.open("about:blank");
    }

    let log = log.lock().unwrap();
    let in_window = |t: u64| (t0..t1).contains(&t);
    let sent = log.sent.iter().filter(|&&t| in_window(t)).count();
    let mut seen = HashSet::new();
    let frames: Vec<Delivery> = log
        .delivered
        .iter()
        .filter(|d| in_window(d.captured) && seen.insert(d.captured))
        .copied()
        .collect();
    let callbacks: Vec<(u64, u64)> = log
        .callbacks
        .iter()
        .filter(|c| in_window(c.0))
        .copied()
        .collect();
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1000.0;
    let latencies = sorted(frames.iter().map(|d| ms(d.captured, d.delivered)).collect());
    let late = frames
        .iter()
        .filter(|d| d.delivered - d.captured > LATE_US)
        .count();
    let arrived: Vec<&Delivery> = frames.iter().filter(|d| d.arrived.is_some()).collect();
    if !arrived.is_empty() {
        let what = if path.browser() {
            ["capture > last packet received", "received > presented"]
        } else {
            [
                "capture > encoded frame out of callsrc",
                "callsrc out > decoded",
            ]
        };
        notes.push(format!(
            "{}: {}; {}: {}",
            what[0],
            spread(
                arrived
                    .iter()
                    .map(|d| ms(d.captured, d.arrived.unwrap()))
                    .collect()
            ),
            what[1],
            spread(
                arrived
                    .iter()
                    .map(|d| ms(d.arrived.unwrap(), d.delivered))
                    .collect()
            ),
        ));
    }
    {
        let p = pacer.lock().unwrap();
        if !p.delays.is_empty() {
            let all: Vec<f64> = p.delays.iter().map(|&(d, _)| d as f64 / 1000.0).collect();
            let last: Vec<f64> = p
                .delays
                .iter()
                .filter(|&&(_, marker)| marker)
                .map(|&(d, _)| d as f64 / 1000.0)
                .collect();
            notes.push(format!(
                "rtpgccbwe pacer (in the publisher): {} packets held {}; the last packet of each frame held {}",
                all.len(),
                spread(all),
                spread(last)
            ));
        }
    }
    {
        let t = timeline.lock().unwrap();
        let mut encode = Vec::new();
        let mut to_first = Vec::new();
        let mut to_last = Vec::new();
        let mut sent_last: HashMap<u64, u64> = HashMap::new();
        for (pts, &captured) in log.by_pts.iter().filter(|(_, c)| in_window(**c)) {
            if let Some(&last) = t.last_out.get(pts) {
                sent_last.insert(captured, last);
            }
            let Some(&enc) = t.encoded.get(pts) else {
                continue;
            };
            encode.push(ms(captured, enc));
            if let (Some(&first), Some(&last)) = (t.first_out.get(pts), t.last_out.get(pts)) {
                to_first.push(ms(enc, first));
                to_last.push(ms(enc, last));
            }
        }
        if !encode.is_empty() {
            notes.push(format!(
                "publisher: capture > encoded {}; encoded > first packet to the network {}; > last packet {}",
                spread(encode),
                spread(to_first),
                spread(to_last)
            ));
        }
        // The last packet of a frame out of the publisher's nicesink → the frame complete
        // at the receiver (Chromium's receiveTime, or out of callsrc's jitter buffer and
        // depayloader): network and server (and callsrc's jitter buffer).
        let hop: Vec<f64> = frames
            .iter()
            .filter_map(|d| Some(ms(*sent_last.get(&d.captured)?, d.arrived?)))
            .collect();
        if !hop.is_empty() {
            notes.push(format!(
                "last packet out of the publisher > frame complete at the receiver: {}",
                spread(hop)
            ));
        }
    }
    if let Some(odd) = &log.odd {
        notes.push(format!(
            "{} unreadable frames, the first: {odd}",
            log.unreadable
        ));
    }
    let decode: Vec<f64> = frames.iter().filter_map(|d| d.decode_ms).collect();
    if !decode.is_empty() {
        notes.push(format!(
            "browser decode (processingDuration): {}",
            spread(decode)
        ));
    }
    if let Some(s) = sink_stats {
        let get = |f: &str| {
            s.value(f)
                .ok()
                .map(|v| {
                    v.get::<f64>()
                        .map(|x| format!("{x:.1}"))
                        .or_else(|_| v.get::<u64>().map(|x| x.to_string()))
                        .or_else(|_| v.get::<u32>().map(|x| x.to_string()))
                        .or_else(|_| v.get::<i64>().map(|x| x.to_string()))
                        .or_else(|_| v.get::<i32>().map(|x| x.to_string()))
                        .unwrap_or_else(|_| format!("{v:?}"))
                })
                .unwrap_or_else(|| "-".into())
        };
        notes.push(format!(
            "callsink: encode-delay {} ms, bitrate {} bit/s, target {} bit/s, rtt {} ms, nacks {}, plis {}, fps {}",
            get("encode-delay-ms"),
            get("bitrate"),
            get("target-bitrate"),
            get("rtt-ms"),
            get("nacks"),
            get("plis"),
            get("fps"),
        ));
    }
    if let (Some(a), Some(b)) = (&server0, &server1) {
        notes.push(format!(
            "server: {} frames from the publisher in the window ({:.1} fps), {} packets lost, {} nacks, {} plis, {:.2} Mbit/s",
            b.frames - a.frames,
            (b.frames - a.frames) as f64 / secs,
            b.packets_lost - a.packets_lost,
            b.nacks - a.nacks,
            b.plis - a.plis,
            b.bitrate as f64 / 1e6,
        ));
    }
    if stats1.is_object() {
        let d = |f: &str| stat(&stats1, f) - stat(&stats0, f);
        notes.push(format!(
            "Chromium getStats in the window: {}, framesReceived {:.0}, framesDecoded {:.0} ({:.1} fps), keyFramesDecoded {:.0}, framesDropped {:.0}; the video element: {} frames presented (requestVideoFrameCallback, {:.1} fps; presentedFrames advanced {}), getVideoPlaybackQuality total {:.0} dropped {:.0}; freezeCount {:.0}, totalFreezesDuration {:.2} s, pauseCount {:.0}, packetsLost {:.0}, nackCount {:.0}, pliCount {:.0}, jitter buffer delay {:.1} ms/frame (target {:.1}), {}x{}",
            stats1["codec"].as_str().unwrap_or("?"),
            d("framesReceived"),
            d("framesDecoded"),
            d("framesDecoded") / secs,
            d("keyFramesDecoded"),
            d("framesDropped"),
            callbacks.len(),
            callbacks.len() as f64 / secs,
            callbacks
                .last()
                .zip(callbacks.first())
                .map_or(0, |(b, a)| b.1 - a.1),
            d("qualityTotal"),
            d("qualityDropped"),
            d("freezeCount"),
            d("totalFreezesDuration"),
            d("pauseCount"),
            d("packetsLost"),
            d("nackCount"),
            d("pliCount"),
            d("jitterBufferDelay") * 1000.0 / d("jitterBufferEmittedCount").max(1.0),
            d("jitterBufferTargetDelay") * 1000.0 / d("jitterBufferEmittedCount").max(1.0),
            stat(&stats1, "frameWidth"),
            stat(&stats1, "frameHeight"),
        ));
    }
    Outcome {
        path: case,
        codec,
        sent,
        delivered: latencies.len(),
        latencies,
        late,
        unreadable: log.unreadable,
        notes,
        failed,
    }
}

fn main() {
    common::in_private_netns();
    gst::init().unwrap();
    gstcustomvideo::plugin_register_static().expect("customvideo plugin");
    gstrswebrtc::plugin_register_static().expect("gst-plugins-rs webrtc plugin");
    let secs = env_number("LATENCY_SECS", 60.0);
    let cases: Vec<Path> = std::env::var("LATENCY_CASES")
        .unwrap_or_else(|_| "ours,ours-fixed,ref,chromium,chromium-fixed,chromium-whep".into())
        .split(',')
        .map(|c| Path::parse(c.trim()).unwrap_or_else(|| panic!("unknown case {c}")))
        .collect();
    let codecs: Vec<&'static str> = std::env::var("LATENCY_CODECS")
        .unwrap_or_else(|_| "vp8,h264".into())
        .split(',')
        .map(|c| match c.trim() {
            "vp8" => "vp8",
            "h264" => "h264",
            other => panic!("unknown codec {other}"),
        })
        .collect();
    let producer = match std::env::var("LATENCY_PRODUCER").as_deref() {
        Ok("static") => Producer::Static,
        Ok("appsrc") => Producer::Appsrc,
        Ok("still") => Producer::Still,
        Ok("bursty") => Producer::Bursty,
        Ok("bursty-even") => Producer::BurstyEven,
        _ => Producer::Moving,
    };
    let server = CallServer::start(ServerConfig {
        port: 0,
        ..Default::default()
    })
    .expect("call server");
    let browser = cases.iter().any(|c| c.browser()).then(browser::start);
    println!(
        "glass-to-glass latency, 1280x720@30, {} Mbit/s, {secs} s per case, producer {}; callsrc latency {}",
        BITRATE / 1_000_000,
        match producer {
            Producer::Moving => "videotestsrc smpte horizontal-speed=4 (moving bars)",
            Producer::Static => "videotestsrc smpte (still bars)",
            Producer::Appsrc => "appsrc, a still frame pushed every 1/30 s by a sleeping thread",
            Producer::Still =>
                "appsrc as above, the code changing once a second (29 of 30 frames identical)",
            Producer::Bursty => "appsrc, a still frame pushed twice (1 ms apart) every 1/15 s",
            Producer::BurstyEven => "appsrc, pushed as bursty but with PTS evenly 1/30 s apart",
        },
        std::env::var("LATENCY_CALLSRC_LATENCY")
            .map(|l| format!("{l} ms"))
            .unwrap_or_else(|_| "default (50 ms)".into()),
    );
    let mut outcomes = Vec::new();
    let mut round = 0;
    for &codec in &codecs {
        for &path in &cases {
            round += 1;
            let b = if path.browser() {
                browser.as_ref()
            } else {
                None
            };
            let o = run(path, codec, producer, secs, &server, b, round);
            println!(
                "{} {}: {}",
                path.name(),
                codec,
                o.failed.clone().unwrap_or_else(|| format!(
                    "p50 {:.1} ms, p99 {:.1} ms, {} of {} frames",
                    o.percentile(0.5),
                    o.percentile(0.99),
                    o.delivered,
                    o.sent
                ))
            );
            for n in &o.notes {
                println!("    {n}");
            }
            outcomes.push(o);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    println!();
    println!(
        "latency from capture to decoded frame (Chromium: to presentation), ms; deliv = frames read back (Chromium: presented); lost = share of sent frames never delivered, late = share of sent frames delivered > 100 ms after capture"
    );
    println!(
        "{:<38} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}",
        "case",
        "codec",
        "p50",
        "p95",
        "p99",
        "max",
        "sent",
        "deliv",
        "lost",
        "late",
        "p50/ref",
        "p99/ref"
    );
    for o in &outcomes {
        let reference = o.path.reference().and_then(|r| {
            outcomes
                .iter()
                .find(|x| x.path == r && x.codec == o.codec && !x.latencies.is_empty())
        });
        let ratio = |q: f64| {
            reference
                .map(|r| format!("{:.2}", o.percentile(q) / r.percentile(q)))
                .unwrap_or_else(|| "-".into())
        };
        let share = |n: usize| {
            if o.sent == 0 {
                "-".into()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / o.sent as f64)
            }
        };
        println!(
            "{:<38} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8}{}",
            o.path.name(),
            o.codec,
            o.percentile(0.5),
            o.percentile(0.95),
            o.percentile(0.99),
            o.latencies.last().copied().unwrap_or(f64::NAN),
            o.sent,
            o.delivered,
            share(o.sent.saturating_sub(o.delivered)),
            share(o.late),
            ratio(0.5),
            ratio(0.99),
            if o.unreadable > 0 {
                format!("  ({} unreadable)", o.unreadable)
            } else {
                String::new()
            }
        );
    }
    drop(browser);
    server.stop();
}
