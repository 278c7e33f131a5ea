// SPDX-License-Identifier: MPL-2.0
//! callsink's send statistics: what its own probes count (frames, bytes, freezes, encode
//! delay) and what webrtcbin reports (packets, feedback, round trip, the candidate pair),
//! put together as the `stats` structure.

use gst::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rate::Rate;

/// A pause between frames longer than this counts as a freeze.
const FREEZE_GAP: Duration = Duration::from_millis(600);
/// Frames remembered while they are inside the encoder.
const ENCODING_WINDOW: usize = 60;

/// What callsink's own probes count.
#[derive(Debug, Default)]
pub struct SendStats {
    pub frames: u64,
    first_frame: Option<Instant>,
    last_frame: Option<Instant>,
    /// Pauses over FREEZE_GAP between frames, summed.
    freeze: Duration,
    /// RTP bytes leaving the payloader, for the send bitrate.
    sent_bytes: Rate,
    /// Frames entering the payloader, for the send frame rate.
    sent_frames: Rate,
    /// Frames inside the encoder: (timestamp, when it entered).
    encoding: VecDeque<(gst::ClockTime, Instant)>,
    /// Moving average of the encode delay.
    encode_delay_ms: f64,
}

impl SendStats {
    /// A frame entered the payloader.
    pub fn frame_sent(&mut self, now: Instant) {
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

    /// RTP bytes left the payloader.
    pub fn rtp_sent(&mut self, now: Instant, bytes: u64) {
        self.sent_bytes.add(now, bytes);
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

    /// Adds the counted fields to `b`.
    pub fn fields(&self, now: Instant, mut b: gst::structure::Builder) -> gst::structure::Builder {
        b = b
            .field("frames-sent", self.frames)
            .field("fps", self.sent_frames.per_second(now) as f64)
            .field("bitrate", self.sent_bytes.per_second(now) * 8)
            .field("freeze-time-ms", self.freeze.as_millis() as u64)
            .field("encode-delay-ms", self.encode_delay_ms);
        if let (Some(t), true) = (self.first_frame, self.frames > 0) {
            let secs = now.saturating_duration_since(t).as_secs_f64();
            if secs > 0.0 {
                b = b.field("average-fps", self.frames as f64 / secs);
            }
        }
        b
    }
}

/// Adds what `webrtcbin` reports to `b`.
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
                            b = b.field(f, v);
                        }
                    }
                    for (k, f) in [
                        ("nack-count", "nacks"),
                        ("pli-count", "plis"),
                        ("fir-count", "firs"),
                    ] {
                        if let Ok(v) = s.get::<u32>(k) {
                            b = b.field(f, v);
                        }
                    }
                }
                "remote-inbound-rtp" => {
                    if let Ok(v) = s.get::<f64>("round-trip-time") {
                        b = b.field("rtt-ms", v * 1000.0);
                    }
                    if let Ok(v) = s.get::<f64>("jitter") {
                        b = b.field("jitter-ms", v * 1000.0);
                    }
                    if let Ok(v) = s.get::<i64>("packets-lost") {
                        b = b.field("packets-lost", v);
                    }
                    if let Ok(v) = s.get::<f64>("fraction-lost") {
                        b = b.field("fraction-lost", v);
                    }
                }
                _ => (),
            }
        }
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
    fn freezes_and_encode_delay() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = SendStats::default();
        for n in [0, 33, 66, 900, 933] {
            s.frame_sent(ms(n));
        }
        assert_eq!(s.freeze, Duration::from_millis(834));
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
}
