// SPDX-License-Identifier: MPL-2.0
//! The encoding chain between callsink's input queue and webrtcbin, as one value, and the
//! pacing of the keyframes receivers ask for.
//!
//! ```text
//! raw:     videoconvert ─ videoscale ─ [scale caps] ─ [videorate] ─ [I420] ─ encoder ─ [parse/caps] ─┐
//! encoded: [parser ─ caps] ─────────────────────────────────────────────────────────────────────────┴─ payloader ─ [RTP caps]
//! ```
//!
//! Simulcast (raw input): one converted input, one branch per layer, all layers into one
//! transceiver; each layer's payloader writes its rid (RTP stream id extension), the MID, and
//! its own SSRC:
//!
//! ```text
//! videoconvert ─ tee ─┬─ queue ─ valve ─ videoscale ─ [size, I420] ─ encoder ─ [caps] ─ payloader ─ [RTP caps] ─┬─ rtpfunnel
//!                     └─ ... one branch per layer ...                                                           ┘
//! ```

use gst::prelude::*;
use std::time::{Duration, Instant};

use super::LayerSpec;
use super::codec::{self, Codec, Encoder};

/// Minimum time between two keyframes forced by the receivers' requests; a request that
/// comes sooner is served when the time is up.
const KEYFRAME_MIN_SPACING: Duration = Duration::from_millis(200);
/// A keyframe asked of the encoder and not seen after this long may be asked for again.
const KEYFRAME_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// One simulcast layer to build.
#[derive(Debug, Clone, Copy)]
pub struct LayerPlan {
    pub spec: LayerSpec,
    pub ssrc: u32,
    /// The id of the RTP stream id extension the answer accepted.
    pub rid_ext: u32,
}

/// The low layer's own parameters (0: derived from the input, as for the other layers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowLayer {
    pub width: u32,
    pub height: u32,
    /// Frames per second (drops frames only).
    pub fps: u32,
    /// A fixed bitrate, kbit/s, instead of its share of the estimate.
    pub kbps: u32,
}

/// One simulcast layer of a running chain.
#[derive(Debug, Clone)]
pub struct Layer {
    pub spec: LayerSpec,
    pub encoder: gst::Element,
    pub payloader: gst::Element,
    /// Drops the layer's input while congestion control holds the layer back.
    pub valve: gst::Element,
}

/// What the chain is built for.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub codec: Codec,
    /// Payload type the answer chose.
    pub pt: u32,
    pub ssrc: u32,
    /// Encoder bitrate at start, kbit/s.
    pub start_kbps: u32,
    /// Seconds between keyframes.
    pub keyframe_interval: u32,
    /// The MID header extension's id and the MID, when the answer accepted the extension.
    pub mid: Option<(u32, String)>,
    /// Simulcast layers, lowest first (raw input; empty: one stream).
    pub layers: Vec<LayerPlan>,
    /// The lowest simulcast layer's own parameters.
    pub low: LowLayer,
}

/// The elements of one encoding chain, in link order, and the ones callsink works with.
pub struct EncodingChain {
    pub codec: Codec,
    pub elements: Vec<gst::Element>,
    /// The encoder, for raw input.
    pub encoder: Option<gst::Element>,
    pub payloader: gst::Element,
    /// videoscale's caps filter, which congestion control sets (raw input).
    pub scale_caps: Option<gst::Element>,
    /// videorate, which congestion control sets (raw input with a frame rate).
    pub videorate: Option<gst::Element>,
    /// Simulcast layers, lowest first (empty: one stream).
    pub layers: Vec<Layer>,
    /// Links between elements when the chain is not a line (simulcast).
    links: Vec<(gst::Element, gst::Element)>,
}

fn make(name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|e| format!("cannot create {name} (is it installed?): {e}"))
}

fn capsfilter(caps: gst::Caps) -> Result<gst::Element, String> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|e| e.to_string())
}

impl EncodingChain {
    /// The chain for input `caps` (raw video, or encoded video of `config.codec`).
    pub fn build(caps: &gst::CapsRef, config: &ChainConfig) -> Result<EncodingChain, String> {
        if !config.layers.is_empty() && Codec::from_caps(caps).is_none() {
            return Self::build_layers(caps, config);
        }
        let codec = config.codec;
        let mut elements = Vec::new();
        let mut encoder = None;
        let (mut scale_caps, mut videorate) = (None, None);
        if Codec::from_caps(caps).is_some() {
            if let Some(p) = codec.parser() {
                let parser = make(p)?;
                if codec == Codec::H264 {
                    parser.set_property("config-interval", -1i32);
                }
                elements.push(parser);
                if codec == Codec::H264 {
                    // The payloader takes byte-stream access units with SPS/PPS in band.
                    elements.push(capsfilter(
                        gst::Caps::builder("video/x-h264")
                            .field("stream-format", "byte-stream")
                            .field("alignment", "au")
                            .build(),
                    )?);
                }
            }
        } else {
            let rate = caps
                .structure(0)
                .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                .filter(|f| f.numer() > 0);
            let fps = rate.map_or(30.0, |f| f.numer() as f64 / f.denom() as f64);
            let keyframe_frames = (fps * config.keyframe_interval as f64).round() as u32;
            let enc = Encoder::make(codec, config.start_kbps, keyframe_frames)?;
            elements.push(make("videoconvert")?);
            // Congestion control may lower the resolution (videoscale + caps) or the frame
            // rate (videorate) following the track's optimization mode. Frames of a
            // variable-rate input (framerate 0/1) carry no duration for videorate to work
            // with: such input is only scaled.
            elements.push(make("videoscale")?);
            let scale = capsfilter(gst::Caps::new_any())?;
            elements.push(scale.clone());
            scale_caps = Some(scale);
            if rate.is_some() {
                let r = make("videorate")?;
                r.set_property("drop-only", true);
                r.set_property("skip-to-first", true);
                elements.push(r.clone());
                videorate = Some(r);
            }
            elements.push(capsfilter(
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )?);
            elements.push(enc.clone());
            if codec == Codec::Av1 {
                // av1enc's temporal units become the OBU stream the payloader takes.
                elements.push(make("av1parse")?);
            }
            if let Some(c) = codec.encoded_caps() {
                elements.push(capsfilter(c)?);
            }
            encoder = Some(enc);
        }
        let payloader = codec.make_payloader(config.pt, config.ssrc)?;
        if let Some((id, mid)) = &config.mid {
            codec::add_sdes_extension(&payloader, "rtphdrextmid", *id, "mid", mid)?;
        }
        elements.push(payloader.clone());
        elements.push(rtp_caps(codec, config.pt, config.ssrc)?);
        Ok(EncodingChain {
            codec,
            elements,
            encoder,
            payloader,
            scale_caps,
            videorate,
            layers: vec![],
            links: vec![],
        })
    }

    /// The simulcast chain for raw input `caps`: see the module documentation. Layer sizes
    /// are the input's divided by the layer's divider (even, at least 2).
    fn build_layers(caps: &gst::CapsRef, config: &ChainConfig) -> Result<EncodingChain, String> {
        let codec = config.codec;
        let s = caps.structure(0).ok_or("input caps without a structure")?;
        let (Ok(width), Ok(height)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
            return Err(format!("simulcast needs the input's size: {caps}"));
        };
        let fps = s
            .get::<gst::Fraction>("framerate")
            .ok()
            .filter(|f| f.numer() > 0)
            .map_or(30.0, |f| f.numer() as f64 / f.denom() as f64);
        let keyframe_frames = (fps * config.keyframe_interval as f64).round() as u32;
        let convert = make("videoconvert")?;
        let tee = make("tee")?;
        let funnel = make("rtpfunnel")?;
        let mut elements = vec![convert.clone(), tee.clone()];
        let mut links = vec![(convert, tee.clone())];
        let mut layers = Vec::new();
        for (i, plan) in config.layers.iter().enumerate() {
            let spec = plan.spec;
            let low = if i == 0 && config.layers.len() > 1 {
                config.low
            } else {
                LowLayer::default()
            };
            let even = |v: i32| ((v / spec.divider.max(1) as i32) & !1).max(2);
            let (w, h) = match (low.width, low.height) {
                (0, 0) => (even(width), even(height)),
                // One given: the other keeps the input's aspect ratio.
                (lw, 0) => (lw as i32, (lw as i32 * height / width) & !1),
                (0, lh) => ((lh as i32 * width / height) & !1, lh as i32),
                (lw, lh) => (lw as i32, lh as i32),
            };
            let (w, h) = (w.max(2), h.max(2));
            let kbps = if low.kbps > 0 {
                low.kbps
            } else {
                (config.start_kbps * spec.share / 100).max(30)
            };
            let queue = gst::ElementFactory::make("queue")
                .property_from_str("leaky", "downstream")
                .property("max-size-buffers", 2u32)
                .property("max-size-bytes", 0u32)
                .property("max-size-time", 0u64)
                .build()
                .map_err(|e| e.to_string())?;
            let valve = make("valve")?;
            let enc = Encoder::make(codec, kbps, keyframe_frames)?;
            let mut branch = vec![queue, valve.clone(), make("videoscale")?];
            if low.fps > 0 && fps > low.fps as f64 {
                let r = make("videorate")?;
                r.set_property("drop-only", true);
                r.set_property("skip-to-first", true);
                r.set_property("max-rate", low.fps as i32);
                branch.push(r);
            }
            branch.push(capsfilter(
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("width", w)
                    .field("height", h)
                    .build(),
            )?);
            branch.push(enc.clone());
            if codec == Codec::Av1 {
                branch.push(make("av1parse")?);
            }
            if let Some(c) = codec.encoded_caps() {
                branch.push(capsfilter(c)?);
            }
            let pay = codec.make_payloader(config.pt, plan.ssrc)?;
            if let Some((id, mid)) = &config.mid {
                codec::add_sdes_extension(&pay, "rtphdrextmid", *id, "mid", mid)?;
            }
            codec::add_sdes_extension(&pay, "rtphdrextstreamid", plan.rid_ext, "rid", spec.rid)?;
            branch.push(pay.clone());
            branch.push(rtp_caps(codec, config.pt, plan.ssrc)?);
            links.push((tee.clone(), branch[0].clone()));
            links.extend(branch.windows(2).map(|w| (w[0].clone(), w[1].clone())));
            links.push((branch.last().expect("a branch").clone(), funnel.clone()));
            elements.extend(branch);
            layers.push(Layer {
                spec,
                encoder: enc,
                payloader: pay,
                valve,
            });
        }
        // The funnel is last: its src pad feeds webrtcbin.
        elements.push(funnel);
        let top = layers.last().ok_or("no simulcast layer")?;
        Ok(EncodingChain {
            codec,
            encoder: Some(top.encoder.clone()),
            payloader: top.payloader.clone(),
            scale_caps: None,
            videorate: None,
            elements,
            layers,
            links,
        })
    }

    /// Links the chain's elements (all in the same bin).
    pub fn link(&self) -> Result<(), String> {
        if self.links.is_empty() {
            return gst::Element::link_many(&self.elements)
                .map_err(|e| format!("cannot link the encoding chain: {e}"));
        }
        for (a, b) in &self.links {
            a.link(b).map_err(|e| {
                format!(
                    "cannot link the simulcast chain ({} to {}): {e}",
                    a.name(),
                    b.name()
                )
            })?;
        }
        Ok(())
    }

    /// Every payloader of the chain (one per simulcast layer).
    pub fn payloaders(&self) -> Vec<gst::Element> {
        if self.layers.is_empty() {
            vec![self.payloader.clone()]
        } else {
            self.layers.iter().map(|l| l.payloader.clone()).collect()
        }
    }

    /// The src pad of the last element, which feeds webrtcbin.
    pub fn end(&self) -> Option<gst::Pad> {
        self.elements.last().and_then(|e| e.static_pad("src"))
    }
}

/// The caps after a payloader: what it sends, under which SSRC.
fn rtp_caps(codec: Codec, pt: u32, ssrc: u32) -> Result<gst::Element, String> {
    capsfilter(
        gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", codec.encoding_name())
            .field("payload", pt as i32)
            .field("clock-rate", 90000i32)
            .field("ssrc", ssrc)
            .build(),
    )
}

/// What to do with a receiver's keyframe request.
#[derive(Debug, PartialEq)]
pub enum KeyframeRequest {
    /// Pass it to the encoder.
    Forward,
    /// A keyframe asked for earlier has not come out yet: it serves this request too.
    Coming,
    /// The last keyframe was asked for too recently: ask again after this long.
    After(Duration),
}

/// Paces keyframe requests: at most one outstanding, at least KEYFRAME_MIN_SPACING apart,
/// and none lost (a request inside the spacing is served when it ends).
#[derive(Debug, Default)]
pub struct KeyframePacer {
    last_request: Option<Instant>,
    /// When the last keyframe entered the payloader.
    last_keyframe: Option<Instant>,
    /// A request waits for the spacing to pass.
    deferred: bool,
}

impl KeyframePacer {
    /// A receiver asks for a keyframe at `now`.
    pub fn request(&mut self, now: Instant) -> KeyframeRequest {
        let decision = match self.last_request {
            None => KeyframeRequest::Forward,
            Some(asked) => {
                let since = now.saturating_duration_since(asked);
                let answered = self.last_keyframe.is_some_and(|k| k >= asked);
                if !answered && since < KEYFRAME_REQUEST_TIMEOUT {
                    KeyframeRequest::Coming
                } else if since < KEYFRAME_MIN_SPACING {
                    KeyframeRequest::After(KEYFRAME_MIN_SPACING - since)
                } else {
                    KeyframeRequest::Forward
                }
            }
        };
        if decision == KeyframeRequest::Forward {
            self.last_request = Some(now);
        }
        decision
    }

    /// Marks a deferred request; false when one is already waiting (this one joins it).
    pub fn defer(&mut self) -> bool {
        !std::mem::replace(&mut self.deferred, true)
    }

    /// callsink asks the encoder for a keyframe itself (connected, or a deferred request).
    pub fn forced(&mut self, now: Instant) {
        self.deferred = false;
        self.last_request = Some(now);
    }

    /// A keyframe entered the payloader.
    pub fn keyframe_sent(&mut self, now: Instant) {
        self.last_keyframe = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_paced_and_never_lost() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Nothing asked yet: forward.
        let mut p = KeyframePacer::default();
        assert_eq!(p.request(t0), KeyframeRequest::Forward);
        // Asked 50 ms ago and no keyframe since: the coming keyframe serves this one too.
        assert_eq!(p.request(ms(50)), KeyframeRequest::Coming);
        assert_eq!(p.request(ms(900)), KeyframeRequest::Coming);
        // The keyframe came out 30 ms after the request; a new request 80 ms after the first
        // (a subscriber that joined just after it) is served when the spacing is over.
        p.keyframe_sent(ms(30));
        assert_eq!(
            p.request(ms(80)),
            KeyframeRequest::After(Duration::from_millis(120))
        );
        assert!(p.defer());
        assert!(!p.defer(), "a second deferred request joins the first");
        // Answered, and long enough ago: forward.
        assert_eq!(p.request(ms(250)), KeyframeRequest::Forward);
        // Never answered within the timeout (lost on the way): ask again.
        assert_eq!(p.request(ms(1300)), KeyframeRequest::Forward);
        // A keyframe callsink forced counts as asked for.
        p.forced(ms(2000));
        assert_eq!(p.request(ms(2050)), KeyframeRequest::Coming);
    }

    #[test]
    fn raw_and_encoded_chains() {
        gst::init().unwrap();
        let config = ChainConfig {
            codec: Codec::Vp8,
            pt: 96,
            ssrc: 7,
            start_kbps: 800,
            keyframe_interval: 2,
            mid: None,
            layers: vec![],
            low: LowLayer::default(),
        };
        let raw = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let chain = EncodingChain::build(&raw, &config).unwrap();
        assert!(chain.encoder.is_some() && chain.scale_caps.is_some());
        assert!(chain.videorate.is_some());
        let enc = chain.encoder.as_ref().unwrap();
        assert_eq!(Encoder::of_element(enc).unwrap().bitrate(enc), 800);
        let vfr = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(0, 1))
            .build();
        assert!(
            EncodingChain::build(&vfr, &config)
                .unwrap()
                .videorate
                .is_none()
        );
        // Simulcast: one branch per layer, into an rtpfunnel at the end.
        let sized = gst::Caps::builder("video/x-raw")
            .field("width", 1280i32)
            .field("height", 720i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let mut simulcast = config.clone();
        simulcast.layers = super::super::Simulcast::Three
            .layers()
            .iter()
            .enumerate()
            .map(|(i, &spec)| LayerPlan {
                spec,
                ssrc: 10 + i as u32,
                rid_ext: 3,
            })
            .collect();
        let chain = EncodingChain::build(&sized, &simulcast).unwrap();
        assert_eq!(chain.layers.len(), 3);
        assert_eq!(chain.payloaders().len(), 3);
        assert_eq!(
            chain.elements.last().unwrap().factory().unwrap().name(),
            "rtpfunnel"
        );
        let kbps: Vec<u32> = chain
            .layers
            .iter()
            .map(|l| Encoder::of_element(&l.encoder).unwrap().bitrate(&l.encoder))
            .collect();
        assert_eq!(kbps, [80, 200, 520]);
        // The low layer's own size, frame rate and bitrate.
        simulcast.low = LowLayer {
            width: 160,
            height: 0,
            fps: 15,
            kbps: 50,
        };
        let chain = EncodingChain::build(&sized, &simulcast).unwrap();
        let low = &chain.layers[0].encoder;
        assert_eq!(Encoder::of_element(low).unwrap().bitrate(low), 50);
        let names: Vec<String> = chain
            .elements
            .iter()
            .filter_map(|e| e.factory().map(|f| f.name().to_string()))
            .collect();
        assert_eq!(names.iter().filter(|n| *n == "videorate").count(), 1);
        let sizes: Vec<String> = chain
            .elements
            .iter()
            .filter_map(|e| {
                let caps = e
                    .find_property("caps")
                    .map(|_| e.property::<gst::Caps>("caps"))?;
                let s = caps.structure(0)?;
                Some(format!(
                    "{}x{}",
                    s.get::<i32>("width").ok()?,
                    s.get::<i32>("height").ok()?
                ))
            })
            .collect();
        assert_eq!(sizes, ["160x90", "640x360", "1280x720"]);
        let encoded = gst::Caps::builder("video/x-vp8").build();
        let chain = EncodingChain::build(&encoded, &config).unwrap();
        assert!(chain.encoder.is_none() && chain.scale_caps.is_none());
        assert_eq!(chain.elements.len(), 2, "payloader and RTP caps");
    }
}
