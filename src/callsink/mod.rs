// SPDX-License-Identifier: MPL-2.0
//! `callsink`: publishes the video that reaches it to a call over WebRTC, using WHIP
//! (RFC 9725). With no server named it starts the process's embedded call server
//! ([`crate::server`]) and publishes there.
//!
//! Raw video is encoded (VP8, H.264, VP9 or AV1, real-time settings); encoded video is
//! parsed and sent as it is.

use gst::glib;
use gst::prelude::*;

mod cc;
mod chain;
mod codec;
mod connection;
mod imp;
pub mod liveness;
pub(crate) mod net;
mod session;
mod stats;
pub mod whip;

pub use codec::Codec;
pub(crate) use imp::check_answer;

glib::wrapper! {
    /// The `callsink` element. See the module documentation.
    pub struct CallSink(ObjectSubclass<imp::CallSink>) @extends gst::Bin, gst::Element, gst::Object;
}

/// State of the connection to the call.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSinkConnectionState")]
pub enum ConnectionState {
    /// Not started.
    #[default]
    #[enum_value(name = "New: not connected yet", nick = "new")]
    New = 0,
    /// Offer sent, waiting for the answer and ICE/DTLS.
    #[enum_value(name = "Connecting: offer sent, connecting", nick = "connecting")]
    Connecting = 1,
    /// Media flows.
    #[enum_value(name = "Connected: media flows", nick = "connected")]
    Connected = 2,
    /// The connection was lost and is being restored.
    #[enum_value(
        name = "Reconnecting: connection lost, restoring it",
        nick = "reconnecting"
    )]
    Reconnecting = 3,
    /// The call could not be joined or the connection failed.
    #[enum_value(name = "Failed: could not connect", nick = "failed")]
    Failed = 4,
    /// The session ended.
    #[enum_value(name = "Closed: session ended", nick = "closed")]
    Closed = 5,
}

/// The `codec` property: what to encode raw input with.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSinkCodec")]
pub enum CodecChoice {
    /// Offer every codec that can be encoded here; the server's answer decides.
    #[default]
    #[enum_value(
        name = "Auto: offer VP8, H.264, VP9, AV1; the answer decides",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "VP8", nick = "vp8")]
    Vp8 = 1,
    #[enum_value(name = "VP9", nick = "vp9")]
    Vp9 = 2,
    #[enum_value(name = "H.264 (constrained baseline)", nick = "h264")]
    H264 = 3,
    #[enum_value(name = "AV1", nick = "av1")]
    Av1 = 4,
}

impl CodecChoice {
    /// The codec chosen, `None` for auto.
    pub fn codec(self) -> Option<Codec> {
        match self {
            CodecChoice::Auto => None,
            CodecChoice::Vp8 => Some(Codec::Vp8),
            CodecChoice::Vp9 => Some(Codec::Vp9),
            CodecChoice::H264 => Some(Codec::H264),
            CodecChoice::Av1 => Some(Codec::Av1),
        }
    }
}

/// The `simulcast` property: how many layers of raw input are sent (RFC 8853).
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSinkSimulcast")]
pub enum Simulcast {
    /// One layer.
    #[default]
    #[enum_value(name = "None: one layer", nick = "none")]
    None = 0,
    /// The full size and a quarter size (rids q, f).
    #[enum_value(
        name = "Dual: the full size and a low layer (a quarter of the width and height)",
        nick = "dual"
    )]
    Dual = 1,
    /// The full size, half and a quarter (rids q, h, f).
    #[enum_value(name = "Three: the full size, half and a quarter", nick = "three")]
    Three = 2,
}

/// One simulcast layer: its rid, what its width and height are divided by, and its share of
/// the bitrate in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub divider: u32,
    pub share: u32,
}

impl Simulcast {
    /// The layers, lowest first (empty for `None`).
    pub fn layers(self) -> &'static [LayerSpec] {
        const fn l(rid: &'static str, divider: u32, share: u32) -> LayerSpec {
            LayerSpec {
                rid,
                divider,
                share,
            }
        }
        const DUAL: [LayerSpec; 2] = [l("q", 4, 15), l("f", 1, 85)];
        const THREE: [LayerSpec; 3] = [l("q", 4, 10), l("h", 2, 25), l("f", 1, 65)];
        match self {
            Simulcast::None => &[],
            Simulcast::Dual => &DUAL,
            Simulcast::Three => &THREE,
        }
    }
}

/// Makes sure the RTP elements from gst-plugins-rs (AV1 payloader, congestion control)
/// are registered in this process.
pub(crate) fn register_rtp_elements() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if gst::ElementFactory::find("rtpav1pay").is_none()
            && let Err(e) = gstrsrtp::plugin_register_static()
        {
            gst::warning!(gst::CAT_DEFAULT, "cannot register the RTP elements: {e}");
        }
    });
}

/// Registers `callsink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    ConnectionState::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    CodecChoice::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    Simulcast::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "callsink",
        gst::Rank::NONE,
        CallSink::static_type(),
    )
}
