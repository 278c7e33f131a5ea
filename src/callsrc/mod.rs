// SPDX-License-Identifier: MPL-2.0
//! `callsrc`: watch one publisher of a call in a pipeline. It subscribes over WHEP (to the
//! call server of this project, or to any WHEP endpoint) and outputs the publisher's video,
//! decoded (default) or as it was sent.
//!
//! ```text
//! gst-launch-1.0 callsrc server=http://127.0.0.1:8080 channel=demo uid=cam ! videoconvert ! autovideosink
//! gst-launch-1.0 -e callsrc server=… channel=demo uid=cam decode=false ! h264parse ! matroskamux ! filesink location=call.mkv
//! ```
//!
//! Where: `whep-url` (any WHEP endpoint), else `server` + `channel` + `uid`
//! (`<server>/whep/<channel>/<uid>`; without `uid`, the first publisher the server lists in
//! the channel, then the next one when it leaves), else the process's embedded call server on
//! `port`. The publisher may come later: callsrc waits for it up to `timeout` seconds. Once
//! watching, it stays with the call: while the publisher is gone it repeats the last frame,
//! outputs black or ends the stream (`on-publisher-gone`), and subscribes again when it (or
//! the next publisher) is there, through a server restart too; bus messages
//! `callsrc-publisher` and `callsrc-publisher-gone` say so. The decoded output keeps the size
//! of the first frame when the publisher changes its resolution (scaled), like
//! `customvideosrc`.

use gst::glib;
use gst::prelude::*;

mod imp;
mod output;

glib::wrapper! {
    /// The `callsrc` element. See the module documentation.
    pub struct CallSrc(ObjectSubclass<imp::CallSrc>) @extends gst::Bin, gst::Element, gst::Object;
}

/// Where callsrc is in its session with the call.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSrcConnectionState")]
pub enum ConnectionState {
    /// Not started.
    #[default]
    #[enum_value(name = "New: not started", nick = "new")]
    New = 0,
    /// The publisher is not there yet; asking again until `timeout`.
    #[enum_value(name = "Waiting: the publisher is not there yet", nick = "waiting")]
    Waiting = 1,
    /// Offer sent, waiting for the answer and ICE/DTLS.
    #[enum_value(name = "Connecting: offer sent, connecting", nick = "connecting")]
    Connecting = 2,
    /// Media flows.
    #[enum_value(name = "Connected: media flows", nick = "connected")]
    Connected = 3,
    /// The subscription could not be made or was lost.
    #[enum_value(name = "Failed: could not subscribe", nick = "failed")]
    Failed = 4,
    /// Stopped; the subscription was ended.
    #[enum_value(name = "Closed: subscription ended", nick = "closed")]
    Closed = 5,
}

impl ConnectionState {
    pub fn nick(self) -> &'static str {
        match self {
            ConnectionState::New => "new",
            ConnectionState::Waiting => "waiting",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Failed => "failed",
            ConnectionState::Closed => "closed",
        }
    }
}

/// What callsrc outputs while the publisher is gone (it left, or its stream stopped), until it
/// or (without `uid`) the next publisher of the channel is there.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSrcPublisherGone")]
pub enum PublisherGone {
    /// The last frame, repeated at the publisher's frame rate.
    #[default]
    #[enum_value(name = "Freeze: repeat the last frame", nick = "freeze")]
    Freeze = 0,
    /// Black frames of the output's size, at the publisher's frame rate.
    #[enum_value(name = "Black: black frames", nick = "black")]
    Black = 1,
    /// End the stream (EOS).
    #[enum_value(name = "EOS: end the stream", nick = "eos")]
    Eos = 2,
}

/// Which simulcast layer of the publisher to get (RFC 8853), where the publisher sends
/// several: `?quality=` on the WHEP URL, as the call server of this project takes it.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCallSrcQuality")]
pub enum Quality {
    /// The largest layer (the server's default; nothing is added to the URL).
    #[default]
    #[enum_value(name = "High: the largest layer", nick = "high")]
    High = 0,
    /// The middle layer (of two: the smaller).
    #[enum_value(name = "Medium: the middle layer", nick = "medium")]
    Medium = 1,
    /// The smallest layer.
    #[enum_value(name = "Low: the smallest layer", nick = "low")]
    Low = 2,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::callsink::register_rtp_elements();
    PublisherGone::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    Quality::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "callsrc",
        gst::Rank::NONE,
        CallSrc::static_type(),
    )
}
