// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer plugin `customvideo`: custom video tracks for real-time calls.
//!
//! * [`CustomVideoSrc`] (`customvideosrc`) wraps any frame producer — frames pushed by the
//!   application, a draw callback, or any GStreamer source description — as one steady,
//!   well-formed live video track with track controls and statistics.
//! * [`CallSink`] (`callsink`) publishes video to a call over WebRTC (WHIP), by default into
//!   the process's embedded call server ([`server`]).

use gst::glib;

pub mod callsink;
pub mod callsrc;
pub mod codec;
pub mod customvideosrc;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
mod random;
mod rate;
pub mod server;

pub use callsink::CallSink;
pub use callsrc::CallSrc;
pub use customvideosrc::{CustomVideoSrc, OnProducerEnd, VideoRotation};
pub use events::OptimizationMode;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    customvideosrc::register(plugin)?;
    callsink::register(plugin)?;
    callsrc::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    customvideo,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://gstreamer.freedesktop.org",
    env!("BUILD_REL_DATE")
);
