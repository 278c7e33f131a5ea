// SPDX-License-Identifier: MPL-2.0
//! The video codecs `callsink` can publish: how each is offered in SDP, which elements
//! encode, parse and payload it, and with which real-time settings.

use gst::prelude::*;
use gst_rtp::prelude::*;

pub use crate::codec::Codec;

/// The TWCC header extension (transport-wide congestion control feedback).
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
pub const TWCC_ID: u32 = 1;
/// The MID header extension (RFC 8843): which m-line a packet belongs to, needed when the
/// offer names no SSRC (simulcast).
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const MID_ID: u32 = 2;
/// The RTP stream id header extension (RFC 8852): which simulcast layer a packet is of.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const RID_ID: u32 = 3;

impl Codec {
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
        Encoder::installed(self).is_some() && gst::ElementFactory::find(self.payloader()).is_some()
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
        let mut s = self.rtp_caps();
        s.set("ssrc", ssrc);
        s
    }

    /// The caps this codec is offered with for simulcast `rids` (lowest first): no SSRC
    /// (each layer has its own, told apart by the RID extension), the MID and RID
    /// extensions, and, when `first` (webrtcbin writes the attributes of every structure of
    /// the transceiver's codec preferences), `rid-<id>=send` and `a-simulcast`, which
    /// GStreamer's SDP library turns into `a=rid:<id> send` and `a=simulcast:send f;h;q`.
    /// The highest layer comes first, as Janus reads simulcast offers unless told otherwise
    /// (and browsers' offers usually are); the call server orders layers by their size.
    pub fn simulcast_offer_caps(self, rids: &[&str], first: bool) -> gst::Structure {
        let mut s = self.rtp_caps();
        s.set(format!("extmap-{MID_ID}"), MID_URI);
        s.set(format!("extmap-{RID_ID}"), RID_URI);
        if first {
            let highest_first: Vec<&str> = rids.iter().rev().copied().collect();
            for rid in &highest_first {
                s.set(format!("rid-{rid}"), "send");
            }
            s.set("a-simulcast", format!("send {}", highest_first.join(";")));
        }
        s
    }

    /// The caps of this codec in an offer, sending or receiving: payload type, feedback
    /// (NACK, PLI, FIR, TWCC) and, for H.264, the profile every browser decodes.
    pub fn rtp_caps(self) -> gst::Structure {
        let mut s = gst::Structure::builder("application/x-rtp")
            .field("media", "video")
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

    /// Caps between encoder and payloader (H.264: constrained baseline, byte-stream; AV1:
    /// an OBU stream of temporal units).
    pub fn encoded_caps(self) -> Option<gst::Caps> {
        match self {
            Codec::H264 => Some(
                gst::Caps::builder("video/x-h264")
                    .field("profile", "constrained-baseline")
                    .field("stream-format", "byte-stream")
                    .build(),
            ),
            Codec::Av1 => Some(
                gst::Caps::builder("video/x-av1")
                    .field("stream-format", "obu-stream")
                    .field("alignment", "tu")
                    .build(),
            ),
            Codec::Vp8 | Codec::Vp9 => None,
        }
    }

    /// The payloader, for payload type `pt`, with the TWCC extension.
    pub fn make_payloader(self, pt: u32, ssrc: u32) -> Result<gst::Element, String> {
        let name = self.payloader();
        let pay = gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("cannot create {name} (is it installed?): {e}"))?;
        // From strings: the types differ between payloaders (gst-plugins-rs's `rtpav1pay`
        // has a signed 64-bit `ssrc`).
        set_if_present(&pay, "pt", &pt.to_string());
        set_if_present(&pay, "ssrc", &ssrc.to_string());
        set_if_present(&pay, "mtu", "1200");
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

/// Adds header extension `factory` (`rtphdrextmid`, `rtphdrextstreamid`) with `id` to
/// payloader `pay`, writing `value` into its property `property`.
pub fn add_sdes_extension(
    pay: &gst::Element,
    factory: &str,
    id: u32,
    property: &str,
    value: &str,
) -> Result<(), String> {
    let ext = gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| format!("cannot create {factory} (is it installed?): {e}"))?
        .downcast::<gst_rtp::RTPHeaderExtension>()
        .map_err(|_| format!("{factory} is not an RTP header extension"))?;
    ext.set_id(id);
    ext.set_property(property, value);
    pay.emit_by_name::<()>("add-extension", &[&ext]);
    Ok(())
}

/// How an encoder's bitrate property counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    BitsPerSecond,
    KilobitsPerSecond,
}

/// One encoder element callsink can use, and everything it needs to know about it: the
/// codec, the real-time settings, which property holds the bitrate and in which unit, and
/// which one the distance between keyframes. The only place that knows encoders.
#[derive(Debug)]
pub struct Encoder {
    pub factory: &'static str,
    codec: Codec,
    bitrate: (&'static str, Unit),
    /// Another property that takes the same bitrate (a ceiling), if any.
    max_bitrate: Option<&'static str>,
    keyframe_distance: &'static str,
    /// Settings shared with other encoders of the same library.
    base: &'static [(&'static str, &'static str)],
    settings: &'static [(&'static str, &'static str)],
}

/// libvpx (vp8enc, vp9enc) in real time, at a constant bitrate with the rate-control buffer of
/// WebRTC's own encoder.
const LIBVPX_REAL_TIME: &[(&str, &str)] = &[
    ("deadline", "1"),
    ("end-usage", "cbr"),
    ("lag-in-frames", "0"),
    ("error-resilient", "default"),
    ("buffer-size", "1000"),
    ("buffer-initial-size", "500"),
    ("buffer-optimal-size", "600"),
];

/// Every encoder, best first for each codec.
const ENCODERS: &[Encoder] = &[
    Encoder {
        factory: "vp8enc",
        codec: Codec::Vp8,
        bitrate: ("target-bitrate", Unit::BitsPerSecond),
        max_bitrate: None,
        keyframe_distance: "keyframe-max-dist",
        base: LIBVPX_REAL_TIME,
        settings: &[("cpu-used", "4")],
    },
    Encoder {
        factory: "x264enc",
        codec: Codec::H264,
        bitrate: ("bitrate", Unit::KilobitsPerSecond),
        max_bitrate: None,
        keyframe_distance: "key-int-max",
        base: &[],
        settings: &[
            ("tune", "zerolatency"),
            ("speed-preset", "ultrafast"),
            ("bframes", "0"),
            ("b-adapt", "false"),
            ("threads", "2"),
        ],
    },
    Encoder {
        factory: "openh264enc",
        codec: Codec::H264,
        bitrate: ("bitrate", Unit::BitsPerSecond),
        max_bitrate: Some("max-bitrate"),
        keyframe_distance: "gop-size",
        base: &[],
        // Its default rate control ("quality") ignores the bitrate.
        settings: &[
            ("rate-control", "bitrate"),
            ("enable-frame-skip", "true"),
            ("usage-type", "camera"),
        ],
    },
    Encoder {
        factory: "vp9enc",
        codec: Codec::Vp9,
        bitrate: ("target-bitrate", Unit::BitsPerSecond),
        max_bitrate: None,
        keyframe_distance: "keyframe-max-dist",
        base: LIBVPX_REAL_TIME,
        settings: &[("cpu-used", "8"), ("row-mt", "true")],
    },
    Encoder {
        factory: "av1enc",
        codec: Codec::Av1,
        bitrate: ("target-bitrate", Unit::KilobitsPerSecond),
        max_bitrate: None,
        keyframe_distance: "keyframe-max-dist",
        base: &[],
        settings: &[
            ("usage-profile", "realtime"),
            ("cpu-used", "10"),
            ("end-usage", "cbr"),
            // libaom's constant-bitrate control asserts (and aborts the process) with
            // av1enc's default quantizer bounds (0, 0).
            ("min-quantizer", "4"),
            ("max-quantizer", "56"),
            ("lag-in-frames", "0"),
            ("threads", "2"),
        ],
    },
];

impl Encoder {
    /// The encoders of `codec`, best first.
    fn of(codec: Codec) -> impl Iterator<Item = &'static Encoder> {
        ENCODERS.iter().filter(move |e| e.codec == codec)
    }

    /// The best installed encoder of `codec`.
    pub fn installed(codec: Codec) -> Option<&'static Encoder> {
        Encoder::of(codec).find(|e| gst::ElementFactory::find(e.factory).is_some())
    }

    /// The entry for a running encoder element.
    pub fn of_element(element: &gst::Element) -> Option<&'static Encoder> {
        let factory = element.factory()?;
        ENCODERS.iter().find(|e| e.factory == factory.name())
    }

    /// The encoder for `codec` with real-time settings; `kbps` is the starting bitrate and
    /// `keyframe_frames` the longest distance between keyframes in frames.
    pub fn make(codec: Codec, kbps: u32, keyframe_frames: u32) -> Result<gst::Element, String> {
        let spec = Encoder::installed(codec).ok_or_else(|| {
            format!(
                "no {} encoder is installed (looked for {})",
                codec.encoding_name(),
                Encoder::of(codec)
                    .map(|e| e.factory)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let enc = gst::ElementFactory::make(spec.factory)
            .build()
            .map_err(|e| format!("cannot create {}: {e}", spec.factory))?;
        for (k, v) in spec.base.iter().chain(spec.settings) {
            set_if_present(&enc, k, v);
        }
        set_if_present(
            &enc,
            spec.keyframe_distance,
            &keyframe_frames.max(1).to_string(),
        );
        spec.set_bitrate(&enc, kbps);
        Ok(enc)
    }

    fn value(&self, kbps: u32) -> String {
        match self.bitrate.1 {
            Unit::BitsPerSecond => (u64::from(kbps) * 1000).min(i32::MAX as u64).to_string(),
            Unit::KilobitsPerSecond => kbps.to_string(),
        }
    }

    /// Sets the bitrate of `enc`, an element of this encoder, while it runs.
    pub fn set_bitrate(&self, enc: &gst::Element, kbps: u32) {
        let value = self.value(kbps);
        set_if_present(enc, self.bitrate.0, &value);
        if let Some(max) = self.max_bitrate {
            set_if_present(enc, max, &value);
        }
    }

    /// The bitrate `enc`, an element of this encoder, is set to, in kbit/s.
    pub fn bitrate(&self, enc: &gst::Element) -> u32 {
        let Some(v) = enc
            .find_property(self.bitrate.0)
            .map(|_| enc.property_value(self.bitrate.0))
            .and_then(|v| v.transform::<u64>().ok())
            .and_then(|v| v.get::<u64>().ok())
        else {
            return 0;
        };
        let kbps = match self.bitrate.1 {
            Unit::BitsPerSecond => v / 1000,
            Unit::KilobitsPerSecond => v,
        };
        u32::try_from(kbps).unwrap_or(u32::MAX)
    }
}

/// Sets property `name` of `element` from its string form, if the element has it (the
/// property set of an encoder varies a little with its version).
fn set_if_present(element: &gst::Element, name: &str, value: &str) {
    if element.find_property(name).is_some() {
        element.set_property_from_str(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_installed_encoder_takes_and_reports_its_bitrate() {
        gst::init().unwrap();
        let mut tried = 0;
        for spec in ENCODERS {
            if gst::ElementFactory::find(spec.factory).is_none() {
                continue;
            }
            let enc = gst::ElementFactory::make(spec.factory).build().unwrap();
            for (k, _) in spec.base.iter().chain(spec.settings) {
                assert!(
                    enc.find_property(k).is_some(),
                    "{} has no property {k}",
                    spec.factory
                );
            }
            assert!(enc.find_property(spec.bitrate.0).is_some());
            assert!(enc.find_property(spec.keyframe_distance).is_some());
            spec.set_bitrate(&enc, 1234);
            assert_eq!(spec.bitrate(&enc), 1234, "{}", spec.factory);
            assert_eq!(Encoder::of_element(&enc).unwrap().factory, spec.factory);
            let made = Encoder::make(spec.codec, 777, 60).unwrap();
            if made.factory().unwrap().name() == spec.factory {
                assert_eq!(spec.bitrate(&made), 777, "{}", spec.factory);
            }
            tried += 1;
        }
        assert!(tried >= 2, "hardly any encoder installed");
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
