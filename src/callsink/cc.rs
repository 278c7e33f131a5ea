// SPDX-License-Identifier: MPL-2.0
//! Congestion control policy: the bitrate bounds (properties, else the track's hints), and
//! what the picture gives up when the estimate falls (the track's optimization mode). The
//! estimate itself comes from gst-plugins-rs `rtpgccbwe` (Google congestion control over
//! transport-wide feedback); this file decides what to do with it.

use crate::OptimizationMode;

/// Highest bitrate when neither `max-bitrate` nor the track says, kbit/s.
pub const DEFAULT_MAX_BITRATE: u32 = 2500;
/// Lowest bitrate when neither `min-bitrate` nor the track says, kbit/s.
pub const DEFAULT_MIN_BITRATE: u32 = 100;

/// Hints carried by the track (tags and the optimization-mode event).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackHints {
    pub min_kbps: Option<u32>,
    pub max_kbps: Option<u32>,
    pub mode: OptimizationMode,
}

/// The encoder's bitrate at start and its bounds, kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitrates {
    pub start: u32,
    pub min: u32,
    pub max: u32,
}

impl Bitrates {
    /// From the properties (0: unset) and the track's hints.
    pub fn new(start: u32, min: u32, max: u32, hints: &TrackHints) -> Bitrates {
        let max = if max > 0 {
            max
        } else {
            hints.max_kbps.unwrap_or(DEFAULT_MAX_BITRATE)
        };
        let min = if min > 0 {
            min
        } else {
            hints.min_kbps.unwrap_or(DEFAULT_MIN_BITRATE)
        }
        .min(max);
        let start = if start > 0 {
            start.clamp(min, max)
        } else {
            max
        };
        Bitrates { start, min, max }
    }

    /// The encoder's bitrate for `estimate` (kbit/s, none yet: the start).
    pub fn target(&self, estimate: Option<u32>) -> u32 {
        estimate.unwrap_or(self.start).clamp(self.min, self.max)
    }
}

/// How far the picture is degraded to fit the estimated bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degradation {
    /// Scale of width and height, in percent.
    pub scale: u32,
    /// Divider of the frame rate.
    pub fps_divider: u32,
}

impl Default for Degradation {
    fn default() -> Self {
        Degradation {
            scale: 100,
            fps_divider: 1,
        }
    }
}

impl Degradation {
    /// What `mode` gives up when the bitrate is `ratio` of the maximum: `detail` keeps the
    /// resolution and lowers the frame rate, `motion` keeps the frame rate and lowers the
    /// resolution, `balanced` lowers the resolution first and then the frame rate. Without
    /// a frame rate to lower (`can_lower_rate` false) only the resolution moves.
    pub fn for_ratio(mode: OptimizationMode, ratio: f64, can_lower_rate: bool) -> Degradation {
        let level = if ratio >= 0.6 {
            0
        } else if ratio >= 0.3 {
            1
        } else {
            2
        };
        let (scale, fps_divider) = match (mode, level) {
            (_, 0) => (100, 1),
            (OptimizationMode::Detail, 1) => (100, 2),
            (OptimizationMode::Detail, _) => (100, 4),
            (OptimizationMode::Motion, 1) => (75, 1),
            (OptimizationMode::Motion, _) => (50, 1),
            (OptimizationMode::Balanced, 1) => (75, 1),
            (OptimizationMode::Balanced, _) => (75, 2),
        };
        Degradation {
            scale,
            fps_divider: if can_lower_rate { fps_divider } else { 1 },
        }
    }

    /// The caps videoscale is held to for input of `input` (raw video caps).
    pub fn scale_caps(&self, input: &gst::StructureRef) -> gst::Caps {
        let mut caps = gst::Caps::builder("video/x-raw");
        if let (Ok(w), Ok(h)) = (input.get::<i32>("width"), input.get::<i32>("height"))
            && self.scale < 100
        {
            let even = |v: i32| ((v * self.scale as i32 / 100) & !1).max(2);
            caps = caps.field("width", even(w)).field("height", even(h));
        }
        caps.build()
    }

    /// videorate's `max-rate` for input of `input`.
    pub fn max_rate(&self, input: &gst::StructureRef) -> i32 {
        let fps = input
            .get::<gst::Fraction>("framerate")
            .ok()
            .filter(|f| f.numer() > 0)
            .map_or(30, |f| (f.numer() / f.denom()).max(1));
        (fps / self.fps_divider as i32).max(1)
    }
}

/// The congestion controller's latest word and what was made of it.
#[derive(Debug, Default)]
pub struct Congestion {
    /// The estimate, kbit/s.
    pub estimate: Option<u32>,
    pub degradation: Degradation,
}

impl Congestion {
    /// The degradation for `target` kbit/s out of `max`, if it differs from the current one
    /// (which it then becomes).
    pub fn replan(
        &mut self,
        mode: OptimizationMode,
        target: u32,
        max: u32,
        can_lower_rate: bool,
    ) -> Option<Degradation> {
        let wanted =
            Degradation::for_ratio(mode, target as f64 / max.max(1) as f64, can_lower_rate);
        (wanted != self.degradation).then(|| {
            self.degradation = wanted;
            wanted
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OptimizationMode::*;

    fn d(scale: u32, fps_divider: u32) -> Degradation {
        Degradation { scale, fps_divider }
    }

    #[test]
    fn degradation_follows_the_optimization_mode() {
        assert_eq!(
            Degradation::for_ratio(Detail, 0.9, true),
            Degradation::default()
        );
        assert_eq!(Degradation::for_ratio(Detail, 0.4, true), d(100, 2));
        assert_eq!(Degradation::for_ratio(Motion, 0.4, true), d(75, 1));
        assert_eq!(Degradation::for_ratio(Motion, 0.1, true), d(50, 1));
        assert_eq!(Degradation::for_ratio(Balanced, 0.1, true), d(75, 2));
        // Variable-rate input: only the resolution moves.
        assert_eq!(Degradation::for_ratio(Detail, 0.1, false), d(100, 1));
        assert_eq!(Degradation::for_ratio(Balanced, 0.1, false), d(75, 1));
    }

    #[test]
    fn bitrates_come_from_properties_then_hints_then_defaults() {
        let none = TrackHints::default();
        assert_eq!(
            Bitrates::new(0, 0, 0, &none),
            Bitrates {
                start: 2500,
                min: 100,
                max: 2500
            }
        );
        let hints = TrackHints {
            min_kbps: Some(500),
            max_kbps: Some(2000),
            ..Default::default()
        };
        assert_eq!(
            Bitrates::new(0, 0, 0, &hints),
            Bitrates {
                start: 2000,
                min: 500,
                max: 2000
            }
        );
        assert_eq!(
            Bitrates::new(9000, 0, 1000, &hints),
            Bitrates {
                start: 1000,
                min: 500,
                max: 1000
            }
        );
        let b = Bitrates::new(800, 300, 1200, &hints);
        assert_eq!(b.target(None), 800);
        assert_eq!(b.target(Some(50)), 300);
        assert_eq!(b.target(Some(5000)), 1200);
    }

    #[test]
    fn replanning_reports_changes_only() {
        let mut c = Congestion::default();
        assert_eq!(c.replan(Motion, 2000, 2000, true), None);
        assert_eq!(c.replan(Motion, 700, 2000, true), Some(d(75, 1)));
        assert_eq!(c.replan(Motion, 700, 2000, true), None);
        assert_eq!(c.replan(Motion, 1900, 2000, true), Some(d(100, 1)));
    }

    #[test]
    fn scaled_sizes_stay_even() {
        gst::init().unwrap();
        let input = gst::Structure::builder("video/x-raw")
            .field("width", 642i32)
            .field("height", 362i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let caps = d(75, 2).scale_caps(&input);
        let s = caps.structure(0).unwrap();
        assert_eq!(s.get::<i32>("width").unwrap(), 480);
        assert_eq!(s.get::<i32>("height").unwrap(), 270);
        assert_eq!(d(75, 2).max_rate(&input), 15);
        assert!(
            d(100, 1)
                .scale_caps(&input)
                .structure(0)
                .unwrap()
                .get::<i32>("width")
                .is_err()
        );
    }
}
