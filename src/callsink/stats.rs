// SPDX-License-Identifier: MPL-2.0
//! callsink's send statistics: what its own probes count (frames, bytes and freezes of each
//! payloader, that is of each simulcast layer; the encode delay) and what webrtcbin reports
//! (packets, feedback, round trip, the candidate pair), put together as the `stats`
//! structure.

use gst::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rate::Rate;

/// A pause between frames longer than this counts as a freeze.
const FREEZE_GAP: Duration = Duration::from_millis(600);
/// Frames remembered while they are inside the encoder.
const ENCODING_WINDOW: usize = 60;

/// What leaves one payloader (a simulcast layer, or the only stream): frames, RTP bytes,
/// freezes.
#[derive(Debug, Default)]
pub struct LayerCount {
    frames: u64,
    first_frame: Option<Instant>,
    last_frame: Option<Instant>,
    /// Pauses over FREEZE_GAP between frames, summed.
    freeze: Duration,
    /// RTP bytes leaving the payloader, for the send bitrate.
    sent_bytes: Rate,
    /// Frames entering the payloader, for the send frame rate.
    sent_frames: Rate,
}

impl LayerCount {
    fn frame_sent(&mut self, now: Instant) {
        self.frames += 1;
        self.sent_frames.add(now, 1);
        self.first_frame.get_or_insert(now);
        if let Some(last) = self.last_frame
            && now.duration_since(last) > FREEZE_GAP
        {
            self.freeze += now.duration_since(last);
        }
        self.last_frame = Some(now);
    }

    /// Frames over the last second.
    fn fps(&self, now: Instant) -> f64 {
        self.sent_frames.per_second(now) as f64
    }

    /// Bits over the last second.
    fn bitrate(&self, now: Instant) -> u64 {
        self.sent_bytes.per_second(now) * 8
    }
}

/// What callsink's own probes count.
#[derive(Debug, Default)]
pub struct SendStats {
    /// One per payloader, lowest simulcast layer first: the last is the top layer (or the
    /// only stream).
    layers: Vec<LayerCount>,
    /// Frames inside the encoder: (timestamp, when it entered).
    encoding: VecDeque<(gst::ClockTime, Instant)>,
    /// Moving average of the encode delay.
    encode_delay_ms: f64,
}

impl SendStats {
    /// Counts `n` payloaders from now on (one per simulcast layer, or one).
    pub fn set_layers(&mut self, n: usize) {
        self.layers.resize_with(n, LayerCount::default);
    }

    /// A frame entered payloader `layer`.
    pub fn frame_sent(&mut self, now: Instant, layer: usize) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.frame_sent(now);
        }
    }

    /// RTP bytes left payloader `layer`.
    pub fn rtp_sent(&mut self, now: Instant, layer: usize, bytes: u64) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.sent_bytes.add(now, bytes);
        }
    }

    /// A frame with timestamp `pts` entered the encoder.
    pub fn encoder_in(&mut self, now: Instant, pts: gst::ClockTime) {
        self.encoding.push_back((pts, now));
        if self.encoding.len() > ENCODING_WINDOW {
            self.encoding.pop_front();
        }
    }

    /// The encoded frame with timestamp `pts` left the encoder.
    pub fn encoder_out(&mut self, now: Instant, pts: gst::ClockTime) {
        if let Some(i) = self.encoding.iter().position(|(p, _)| *p == pts) {
            let ms = now
                .saturating_duration_since(self.encoding[i].1)
                .as_secs_f64()
                * 1000.0;
            self.encoding.drain(..=i);
            self.encode_delay_ms = if self.encode_delay_ms == 0.0 {
                ms
            } else {
                0.9 * self.encode_delay_ms + 0.1 * ms
            };
        }
    }

    /// Adds the counted fields to `b`: `bitrate` is what all payloaders send, the others
    /// are the top layer's.
    pub fn fields(&self, now: Instant, mut b: gst::structure::Builder) -> gst::structure::Builder {
        let none = LayerCount::default();
        let top = self.layers.last().unwrap_or(&none);
        let bitrate: u64 = self.layers.iter().map(|l| l.bitrate(now)).sum();
        b = b
            .field("frames-sent", top.frames)
            .field("fps", top.fps(now))
            .field("bitrate", bitrate)
            .field("freeze-time-ms", top.freeze.as_millis() as u64)
            .field("encode-delay-ms", self.encode_delay_ms);
        if let (Some(t), true) = (top.first_frame, top.frames > 0) {
            let secs = now.saturating_duration_since(t).as_secs_f64();
            if secs > 0.0 {
                b = b.field("average-fps", top.frames as f64 / secs);
            }
        }
        b
    }

    /// Adds what payloader `layer` sent (`frames-sent`, `fps`, `bitrate`) to `b`.
    pub fn layer_fields(
        &self,
        now: Instant,
        layer: usize,
        b: gst::structure::Builder,
    ) -> gst::structure::Builder {
        let none = LayerCount::default();
        let l = self.layers.get(layer).unwrap_or(&none);
        b.field("frames-sent", l.frames)
            .field("fps", l.fps(now))
            .field("bitrate", l.bitrate(now))
    }
}

/// What webrtcbin reports of the video sent: summed over its streams (one per simulcast
/// layer), the worst of each stream's round trip, jitter and loss fraction.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    counts: Vec<(&'static str, u64)>,
    lost: Option<i64>,
    worst: Vec<(&'static str, f64)>,
}

impl Sent {
    fn add(&mut self, field: &'static str, v: u64) {
        match self.counts.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => *n += v,
            None => self.counts.push((field, v)),
        }
    }

    fn worst(&mut self, field: &'static str, v: f64) {
        match self.worst.iter_mut().find(|(f, _)| *f == field) {
            Some((_, w)) => *w = w.max(v),
            None => self.worst.push((field, v)),
        }
    }

    /// Reads the `outbound-rtp` (video) and `remote-inbound-rtp` entries of `reply`.
    fn of(reply: &gst::StructureRef) -> Sent {
        let mut sent = Sent::default();
        for (_, v) in reply.iter() {
            let Ok(s) = v.get::<gst::Structure>() else {
                continue;
            };
            match s.name().as_str() {
                "outbound-rtp" if s.get::<&str>("kind").ok() != Some("audio") => {
                    for (k, f) in [
                        ("packets-sent", "packets-sent"),
                        ("bytes-sent", "bytes-sent"),
                    ] {
                        if let Ok(v) = s.get::<u64>(k) {
                            sent.add(f, v);
                        }
                    }
                    for (k, f) in [
                        ("nack-count", "nacks"),
                        ("pli-count", "plis"),
                        ("fir-count", "firs"),
                    ] {
                        if let Ok(v) = s.get::<u32>(k) {
                            sent.add(f, u64::from(v));
                        }
                    }
                }
                "remote-inbound-rtp" => {
                    for (k, f, scale) in [
                        ("round-trip-time", "rtt-ms", 1000.0),
                        ("jitter", "jitter-ms", 1000.0),
                        ("fraction-lost", "fraction-lost", 1.0),
                    ] {
                        if let Ok(v) = s.get::<f64>(k) {
                            sent.worst(f, v * scale);
                        }
                    }
                    if let Ok(v) = s.get::<i64>("packets-lost") {
                        sent.lost = Some(sent.lost.unwrap_or(0) + v);
                    }
                }
                _ => (),
            }
        }
        sent
    }

    fn fields(self, mut b: gst::structure::Builder) -> gst::structure::Builder {
        for (f, v) in self.counts {
            // NACKs, PLIs and FIRs are counted in 32 bits, as webrtcbin reports them.
            b = match f {
                "packets-sent" | "bytes-sent" => b.field(f, v),
                _ => b.field(f, u32::try_from(v).unwrap_or(u32::MAX)),
            };
        }
        for (f, v) in self.worst {
            b = b.field(f, v);
        }
        if let Some(v) = self.lost {
            b = b.field("packets-lost", v);
        }
        b
    }
}

/// Adds what `webrtcbin` reports to `b`: see [`Sent`].
pub fn webrtc_fields(
    webrtcbin: &gst::Element,
    mut b: gst::structure::Builder,
) -> gst::structure::Builder {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    if let gst::PromiseResult::Replied = promise.wait()
        && let Some(reply) = promise.get_reply()
    {
        b = selected_pair(reply, b);
        b = Sent::of(reply).fields(b);
    }
    b
}

/// Adds the candidate pair in use (`local-candidate`, `remote-candidate`: "address:port type")
/// from webrtcbin's statistics, when it reports one.
fn selected_pair(
    reply: &gst::StructureRef,
    mut b: gst::structure::Builder,
) -> gst::structure::Builder {
    let stats: Vec<gst::Structure> = reply
        .iter()
        .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
        .collect();
    let Some(pair) = stats.iter().find(|s| s.name() == "candidate-pair") else {
        return b;
    };
    for (side, key) in [
        ("local", "local-candidate-id"),
        ("remote", "remote-candidate-id"),
    ] {
        let Ok(id) = pair.get::<&str>(key) else {
            continue;
        };
        let cand = stats.iter().find(|s| s.get::<&str>("id").ok() == Some(id));
        if let Some(c) = cand
            && let (Ok(addr), Ok(port)) = (c.get::<&str>("address"), c.get::<u32>("port"))
        {
            let kind = c
                .value("candidate-type")
                .ok()
                .and_then(|v| v.serialize().ok())
                .map(|v| v.to_string())
                .unwrap_or_default();
            b = b.field(format!("{side}-candidate"), format!("{addr}:{port} {kind}"));
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_webrtcbin_reports_is_summed_over_the_layers_streams() {
        gst::init().unwrap();
        let out = |ssrc: u32, packets: u64, plis: u32| {
            gst::Structure::builder("outbound-rtp")
                .field("ssrc", ssrc)
                .field("kind", "video")
                .field("packets-sent", packets)
                .field("bytes-sent", packets * 1000)
                .field("pli-count", plis)
                .build()
        };
        let remote = |rtt: f64, lost: i64| {
            gst::Structure::builder("remote-inbound-rtp")
                .field("round-trip-time", rtt)
                .field("packets-lost", lost)
                .build()
        };
        let reply = gst::Structure::builder("application/x-webrtc-stats")
            .field("q", out(1, 100, 1))
            .field("h", out(2, 200, 2))
            .field("f", out(3, 700, 3))
            .field("rq", remote(0.010, 1))
            .field("rf", remote(0.030, 4))
            .field(
                "audio",
                gst::Structure::builder("outbound-rtp")
                    .field("kind", "audio")
                    .field("packets-sent", 5u64)
                    .build(),
            )
            .build();
        let s = Sent::of(&reply)
            .fields(gst::Structure::builder("stats"))
            .build();
        assert_eq!(s.get::<u64>("packets-sent").unwrap(), 1000);
        assert_eq!(s.get::<u64>("bytes-sent").unwrap(), 1_000_000);
        assert_eq!(s.get::<u32>("plis").unwrap(), 6);
        assert_eq!(s.get::<i64>("packets-lost").unwrap(), 5);
        assert!((s.get::<f64>("rtt-ms").unwrap() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn freezes_and_encode_delay() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = SendStats::default();
        s.set_layers(1);
        for n in [0, 33, 66, 900, 933] {
            s.frame_sent(ms(n), 0);
        }
        assert_eq!(s.layers[0].freeze, Duration::from_millis(834));
        s.encoder_in(ms(0), gst::ClockTime::from_mseconds(1));
        s.encoder_in(ms(33), gst::ClockTime::from_mseconds(2));
        s.encoder_out(ms(10), gst::ClockTime::from_mseconds(1));
        assert_eq!(s.encode_delay_ms, 10.0);
        s.encoder_out(ms(53), gst::ClockTime::from_mseconds(2));
        assert!((s.encode_delay_ms - 11.0).abs() < 1e-9);
        // An unknown timestamp (a frame the encoder dropped) changes nothing.
        s.encoder_out(ms(60), gst::ClockTime::from_mseconds(9));
        assert!((s.encode_delay_ms - 11.0).abs() < 1e-9);
    }

    #[test]
    fn each_layer_is_counted_and_the_bitrate_is_their_sum() {
        gst::init().unwrap();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = SendStats::default();
        s.set_layers(3);
        // Two seconds: the low layers at 30 frames/s, the top one at 15, each frame in one
        // packet of 100, 200, 400 bytes; nothing is counted for a payloader that is not there.
        for n in 0..60 {
            let now = ms(n * 33);
            for (layer, bytes) in [(0, 100), (1, 200)] {
                s.frame_sent(now, layer);
                s.rtp_sent(now, layer, bytes);
            }
            if n % 2 == 0 {
                s.frame_sent(now, 2);
                s.rtp_sent(now, 2, 400);
            }
            s.frame_sent(now, 3);
            s.rtp_sent(now, 3, 1000);
        }
        let now = ms(59 * 33);
        let layer = |i| s.layer_fields(now, i, gst::Structure::builder("l")).build();
        // The last second (947 ms to 1947 ms, both ends included) holds 31 frames of the
        // low layers, 15 of the top one.
        for (i, fps, frames, bitrate) in [
            (0, 31.0, 60, 31 * 100 * 8),
            (1, 31.0, 60, 31 * 200 * 8),
            (2, 15.0, 30, 15 * 400 * 8),
        ] {
            let l = layer(i);
            assert_eq!(l.get::<f64>("fps").unwrap(), fps, "{l}");
            assert_eq!(l.get::<u64>("frames-sent").unwrap(), frames, "{l}");
            assert_eq!(l.get::<u64>("bitrate").unwrap(), bitrate, "{l}");
        }
        let all = s.fields(now, gst::Structure::builder("s")).build();
        assert_eq!(
            all.get::<u64>("bitrate").unwrap(),
            (31 * 300 + 15 * 400) * 8
        );
        assert_eq!(
            all.get::<u64>("frames-sent").unwrap(),
            30,
            "the top layer's"
        );
        assert_eq!(all.get::<f64>("fps").unwrap(), 15.0, "the top layer's");
        // Two seconds later, nothing sent in the last one.
        let idle = s.layer_fields(ms(59 * 33 + 2000), 0, gst::Structure::builder("l"));
        let idle = idle.build();
        assert_eq!(idle.get::<u64>("bitrate").unwrap(), 0);
        assert_eq!(idle.get::<u64>("frames-sent").unwrap(), 60);
    }
}
