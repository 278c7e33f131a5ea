// SPDX-License-Identifier: MPL-2.0
//! The video codecs `callsink` can publish: how each is offered in SDP, which elements
//! encode, parse and payload it, and with which real-time settings.

use gst::prelude::*;
use gst_rtp::prelude::*;

/// A video codec for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Av1,
}

/// The TWCC header extension (transport-wide congestion control feedback).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const TWCC_ID: u32 = 1;

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1];

    /// The name in SDP (`a=rtpmap`) and in the `codec` property (lower case).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::H264 => "H264",
            Codec::Av1 => "AV1",
        }
    }

    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    /// The codec of encoded input caps (`video/x-vp8`, ...).
    pub fn from_caps(caps: &gst::CapsRef) -> Option<Codec> {
        match caps.structure(0)?.name().as_str() {
            "video/x-vp8" => Some(Codec::Vp8),
            "video/x-vp9" => Some(Codec::Vp9),
            "video/x-h264" => Some(Codec::H264),
            "video/x-av1" => Some(Codec::Av1),
            _ => None,
        }
    }

    /// Payload type used in our offer.
    pub fn payload_type(self) -> i32 {
        match self {
            Codec::Vp8 => 96,
            Codec::Vp9 => 98,
            Codec::H264 => 102,
            Codec::Av1 => 45,
        }
    }

    /// Encoder elements to try, best first.
    fn encoders(self) -> &'static [&'static str] {
        match self {
            Codec::Vp8 => &["vp8enc"],
            Codec::Vp9 => &["vp9enc"],
            Codec::H264 => &["x264enc", "openh264enc"],
            Codec::Av1 => &["av1enc"],
        }
    }

    fn payloader(self) -> &'static str {
        match self {
            Codec::Vp8 => "rtpvp8pay",
            Codec::Vp9 => "rtpvp9pay",
            Codec::H264 => "rtph264pay",
            Codec::Av1 => "rtpav1pay",
        }
    }

    /// The parser for already-encoded input, if the codec needs one.
    pub fn parser(self) -> Option<&'static str> {
        match self {
            Codec::H264 => Some("h264parse"),
            Codec::Av1 => Some("av1parse"),
            Codec::Vp8 | Codec::Vp9 => None,
        }
    }

    /// Whether GStreamer has what it takes to publish this codec from raw video.
    pub fn can_encode(self) -> bool {
        self.encoders()
            .iter()
            .any(|e| gst::ElementFactory::find(e).is_some())
            && gst::ElementFactory::find(self.payloader()).is_some()
    }

    /// Whether encoded input of this codec can be published.
    pub fn can_payload(self) -> bool {
        gst::ElementFactory::find(self.payloader()).is_some()
            && self
                .parser()
                .is_none_or(|p| gst::ElementFactory::find(p).is_some())
    }

    /// The caps this codec is offered with (RTP, feedback, TWCC). The SSRC goes into the
    /// SDP so that the receiver can tell the stream apart without a MID extension.
    pub fn offer_caps(self, ssrc: u32) -> gst::Structure {
        let mut s = gst::Structure::builder("application/x-rtp")
            .field("media", "video")
            .field("ssrc", ssrc)
            .field("encoding-name", self.encoding_name())
            .field("payload", self.payload_type())
            .field("clock-rate", 90000i32)
            .field("rtcp-fb-nack", true)
            .field("rtcp-fb-nack-pli", true)
            .field("rtcp-fb-ccm-fir", true)
            .field("rtcp-fb-transport-cc", true)
            .field(format!("extmap-{TWCC_ID}"), TWCC_URI)
            .build();
        if self == Codec::H264 {
            // Constrained baseline, packetization mode 1: what every browser decodes.
            s.set("packetization-mode", "1");
            s.set("profile-level-id", "42e01f");
            s.set("level-asymmetry-allowed", "1");
        }
        s
    }

    /// Creates the encoder with real-time settings; `kbps` is the starting bitrate and
    /// `keyframe_frames` the maximum distance between keyframes in frames.
    pub fn make_encoder(self, kbps: u32, keyframe_frames: u32) -> Result<gst::Element, String> {
        let name = self
            .encoders()
            .iter()
            .find(|e| gst::ElementFactory::find(e).is_some())
            .ok_or_else(|| {
                format!(
                    "no {} encoder is installed (looked for {})",
                    self.encoding_name(),
                    self.encoders().join(", ")
                )
            })?;
        let enc = gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("cannot create {name}: {e}"))?;
        let set = |k: &str, v: &str| {
            if enc.find_property(k).is_some() {
                enc.set_property_from_str(k, v);
            }
        };
        let bps = (kbps as u64 * 1000).to_string();
        let kf = keyframe_frames.max(1).to_string();
        match *name {
            "vp8enc" | "vp9enc" => {
                set("deadline", "1");
                set("cpu-used", if self == Codec::Vp8 { "4" } else { "8" });
                set("end-usage", "cbr");
                set("lag-in-frames", "0");
                set("target-bitrate", &bps);
                set("keyframe-max-dist", &kf);
                set("error-resilient", "default");
                set("buffer-size", "1000");
                set("buffer-initial-size", "500");
                set("buffer-optimal-size", "600");
                if self == Codec::Vp9 {
                    set("row-mt", "true");
                }
            }
            "x264enc" => {
                set("tune", "zerolatency");
                set("speed-preset", "ultrafast");
                set("bitrate", &kbps.to_string());
                set("key-int-max", &kf);
                set("bframes", "0");
                set("b-adapt", "false");
                set("threads", "2");
            }
            "openh264enc" => {
                set("bitrate", &bps);
                set("gop-size", &kf);
                set("usage-type", "screen");
            }
            "av1enc" => {
                set("usage-profile", "realtime");
                set("cpu-used", "10");
                set("end-usage", "cbr");
                set("target-bitrate", &kbps.to_string());
                set("keyframe-max-dist", &kf);
                set("lag-in-frames", "0");
                set("threads", "2");
            }
            _ => (),
        }
        Ok(enc)
    }

    /// Sets the encoder's bitrate while it runs.
    pub fn set_bitrate(enc: &gst::Element, kbps: u32) {
        let name = enc
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default();
        match name.as_str() {
            "vp8enc" | "vp9enc" | "openh264enc" => {
                enc.set_property("target-bitrate", (kbps as i32).saturating_mul(1000))
            }
            "x264enc" => enc.set_property("bitrate", kbps),
            "av1enc" => enc.set_property("target-bitrate", kbps),
            _ => (),
        }
    }

    /// Caps between encoder and payloader (H.264: constrained baseline, byte-stream).
    pub fn encoded_caps(self) -> Option<gst::Caps> {
        match self {
            Codec::H264 => Some(
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .field("stream-format", "byte-stream")
                    .build(),
            ),
            _ => None,
        }
    }

    /// The payloader, for payload type `pt`, with the TWCC extension.
    pub fn make_payloader(self, pt: u32, ssrc: u32) -> Result<gst::Element, String> {
        let name = self.payloader();
        let pay = gst::ElementFactory::make(name)
            .property("pt", pt)
            .property("ssrc", ssrc)
            .property("mtu", 1200u32)
            .build()
            .map_err(|e| format!("cannot create {name} (is it installed?): {e}"))?;
        if self == Codec::H264 {
            pay.set_property("config-interval", -1i32);
            pay.set_property_from_str("aggregate-mode", "zero-latency");
        }
        if self == Codec::Vp8 {
            pay.set_property_from_str("picture-id-mode", "15-bit");
        }
        if let Ok(twcc) = gst::ElementFactory::make("rtphdrexttwcc").build()
            && let Ok(ext) = twcc.downcast::<gst_rtp::RTPHeaderExtension>()
        {
            ext.set_id(TWCC_ID);
            pay.emit_by_name::<()>("add-extension", &[&ext]);
        }
        Ok(pay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_encoding_name(c.encoding_name()), Some(c));
            assert_eq!(
                Codec::from_encoding_name(&c.encoding_name().to_lowercase()),
                Some(c)
            );
        }
        assert_eq!(Codec::from_encoding_name("h265"), None);
    }

    #[test]
    fn h264_is_offered_constrained_baseline() {
        gst::init().unwrap();
        let s = Codec::H264.offer_caps(1234);
        assert_eq!(s.get::<&str>("profile-level-id").unwrap(), "42e01f");
        assert_eq!(s.get::<&str>("packetization-mode").unwrap(), "1");
        assert_eq!(
            s.get::<&str>(&format!("extmap-{TWCC_ID}")).unwrap(),
            TWCC_URI
        );
    }
}
