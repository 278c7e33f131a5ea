// SPDX-License-Identifier: MPL-2.0
//! The custom events that travel with a custom video track.
//!
//! `customvideosrc` sends the track's optimization mode downstream as a custom sticky event
//! (`GST_EVENT_CUSTOM_DOWNSTREAM_STICKY`) whose structure is
//!
//! ```text
//! customvideo/optimization-mode, mode=(string){balanced|detail|motion}
//! ```
//!
//! Sinks that publish the track (such as `callsink`) read it to choose how to degrade under
//! congestion: `detail` keeps the resolution and lowers the frame rate, `motion` keeps the frame
//! rate and lowers the resolution, `balanced` does both. Other elements pass it on untouched.

use gst::glib;

/// What the track should favour when the network cannot carry everything (the call-SDK
/// `optimizationMode`). `customvideosrc` sends it downstream with the track; sinks such as
/// `callsink` read it to choose how to degrade.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCustomVideoOptimizationMode")]
pub enum OptimizationMode {
    /// Trade resolution and frame rate evenly.
    #[default]
    #[enum_value(
        name = "Balanced: lower resolution and frame rate evenly",
        nick = "balanced"
    )]
    Balanced = 0,
    /// Keep the resolution (sharp text and details), lower the frame rate.
    #[enum_value(name = "Detail: keep resolution, lower frame rate", nick = "detail")]
    Detail = 1,
    /// Keep the frame rate (smooth motion), lower the resolution.
    #[enum_value(name = "Motion: keep frame rate, lower resolution", nick = "motion")]
    Motion = 2,
}

/// Name of the structure carried by the optimization-mode event.
pub const OPTIMIZATION_MODE_EVENT: &str = "customvideo/optimization-mode";

/// Builds the sticky event announcing `mode`.
pub fn optimization_mode_event(mode: OptimizationMode) -> gst::Event {
    let s = gst::Structure::builder(OPTIMIZATION_MODE_EVENT)
        .field("mode", mode_nick(mode))
        .build();
    gst::event::CustomDownstreamSticky::new(s)
}

/// Reads the optimization mode from an event, if it is the optimization-mode event.
pub fn parse_optimization_mode(event: &gst::EventRef) -> Option<OptimizationMode> {
    if event.type_() != gst::EventType::CustomDownstreamSticky {
        return None;
    }
    let s = event.structure()?;
    if s.name() != OPTIMIZATION_MODE_EVENT {
        return None;
    }
    match s.get::<&str>("mode").ok()? {
        "balanced" => Some(OptimizationMode::Balanced),
        "detail" => Some(OptimizationMode::Detail),
        "motion" => Some(OptimizationMode::Motion),
        _ => None,
    }
}

fn mode_nick(mode: OptimizationMode) -> &'static str {
    match mode {
        OptimizationMode::Balanced => "balanced",
        OptimizationMode::Detail => "detail",
        OptimizationMode::Motion => "motion",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        gst::init().unwrap();
        for mode in [
            OptimizationMode::Balanced,
            OptimizationMode::Detail,
            OptimizationMode::Motion,
        ] {
            let ev = optimization_mode_event(mode);
            assert!(ev.is_sticky());
            assert_eq!(parse_optimization_mode(&ev), Some(mode));
        }
        let other = gst::event::CustomDownstreamSticky::new(gst::Structure::new_empty("x"));
        assert_eq!(parse_optimization_mode(&other), None);
    }
}
