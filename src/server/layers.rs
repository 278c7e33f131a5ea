// SPDX-License-Identifier: MPL-2.0
//! Simulcast layers (RFC 8853): which of a publisher's layers a subscriber gets, and when it
//! may switch. A subscriber receives one layer; it moves to another one only at a keyframe of
//! that layer, so its decoder never sees a frame it cannot decode.

use std::time::{Duration, Instant};
use str0m::media::Rid;

/// A subscriber stays on its layer while the layer's bitrate is within this share of its
/// bandwidth estimate...
const STAY: f64 = 0.9;
/// ...and moves up to a larger layer only when that one's bitrate is within this share: the
/// gap between the two keeps a subscriber near the limit from going up and down.
const GO_UP: f64 = 0.75;

/// A layer that sent nothing for this long is taken as stopped (a publisher under
/// congestion drops its top layer first); its subscribers move to another one.
pub const LAYER_SILENCE: Duration = Duration::from_secs(1);

/// Which layer a subscriber asks for (`?quality=` on the WHEP URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    /// The largest layer.
    #[default]
    High,
    /// The middle one (of two layers: the smaller).
    Medium,
    /// The smallest.
    Low,
}

impl Quality {
    pub fn parse(s: &str) -> Option<Quality> {
        match s {
            "high" => Some(Quality::High),
            "medium" => Some(Quality::Medium),
            "low" => Some(Quality::Low),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quality::High => "high",
            Quality::Medium => "medium",
            Quality::Low => "low",
        }
    }
}

/// One layer of a publisher, as the server sees it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub rid: Rid,
    /// Size from its last keyframe.
    pub size: Option<(u32, u32)>,
    pub frames: u64,
    /// Its bitrate over the last second, bit/s.
    pub bitrate: u64,
    pub last_frame: Instant,
    pub last_keyframe: Option<Instant>,
    pub last_keyframe_request: Option<Instant>,
    /// A subscriber waits for a keyframe of this layer.
    pub keyframe_wanted: bool,
}

impl Layer {
    pub fn new(rid: Rid, now: Instant) -> Layer {
        Layer {
            rid,
            size: None,
            frames: 0,
            bitrate: 0,
            last_frame: now,
            last_keyframe: None,
            last_keyframe_request: None,
            keyframe_wanted: false,
        }
    }

    fn pixels(&self) -> u64 {
        self.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h))
    }
}

/// The layer a subscriber asking for `quality` should get among `layers`: those that sent
/// within [`LAYER_SILENCE`], by size (a layer whose size is not known yet counts as the
/// smallest), the order they appeared in breaking ties. With the subscriber's bandwidth
/// estimate (bit/s), no layer above what fits: a layer larger than `current` must fit within
/// [`GO_UP`] of the estimate, `current` and smaller ones within [`STAY`]; when none fits, the
/// smallest.
pub fn target(
    layers: &[Layer],
    quality: Quality,
    estimate: Option<u64>,
    current: Option<Rid>,
    now: Instant,
) -> Option<Rid> {
    let mut live: Vec<&Layer> = layers
        .iter()
        .filter(|l| now.saturating_duration_since(l.last_frame) <= LAYER_SILENCE)
        .collect();
    if live.is_empty() {
        return None;
    }
    live.sort_by_key(|l| l.pixels());
    let asked = match quality {
        Quality::High => live.len() - 1,
        Quality::Medium => (live.len() - 1) / 2,
        Quality::Low => 0,
    };
    let Some(estimate) = estimate else {
        return Some(live[asked].rid);
    };
    let on = current.and_then(|c| live.iter().position(|l| l.rid == c));
    let fits = |i: usize| {
        let share = if on.is_some_and(|on| i > on) || on.is_none() {
            GO_UP
        } else {
            STAY
        };
        live[i].bitrate as f64 <= estimate as f64 * share
    };
    let i = (0..=asked).rev().find(|i| fits(*i)).unwrap_or(0);
    Some(live[i].rid)
}

/// What to do with one frame of layer `rid` for a subscriber on layer `current` that should
/// get `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Forward it.
    Forward,
    /// Forward it: it is the keyframe that moves the subscriber to layer `rid`.
    Switch,
    /// Not for this subscriber.
    Skip,
}

pub fn take(current: Option<Rid>, target: Option<Rid>, rid: Rid, keyframe: bool) -> Take {
    if current == Some(rid) {
        return Take::Forward;
    }
    if keyframe && target == Some(rid) {
        return Take::Switch;
    }
    // The current layer stopped (or there is none yet) and the target gave no keyframe
    // yet: any keyframe beats a frozen picture.
    if keyframe && current.is_none() && target.is_none() {
        return Take::Switch;
    }
    Take::Skip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> Rid {
        Rid::from(s)
    }

    fn layer(name: &str, size: Option<(u32, u32)>, now: Instant) -> Layer {
        Layer {
            size,
            ..Layer::new(rid(name), now)
        }
    }

    #[test]
    fn each_quality_gets_its_layer_by_size_among_the_live_ones() {
        let now = Instant::now();
        // Announced in any order: sizes decide.
        let layers = [
            layer("f", Some((1280, 720)), now),
            layer("q", Some((320, 180)), now),
            layer("h", Some((640, 360)), now),
        ];
        let target = |layers: &[Layer], q, now| target(layers, q, None, None, now);
        assert_eq!(target(&layers, Quality::High, now), Some(rid("f")));
        assert_eq!(target(&layers, Quality::Medium, now), Some(rid("h")));
        assert_eq!(target(&layers, Quality::Low, now), Some(rid("q")));
        // Two layers (dual stream): medium is the smaller.
        assert_eq!(target(&layers[..2], Quality::Medium, now), Some(rid("q")));
        // The top layer stopped: high gets the largest that still sends.
        let mut stopped = layers.clone();
        stopped[0].last_frame = now - 2 * LAYER_SILENCE;
        let later = now + Duration::from_millis(10);
        assert_eq!(target(&stopped, Quality::High, later), Some(rid("h")));
        assert_eq!(target(&[], Quality::High, now), None);
    }

    #[test]
    fn the_bandwidth_estimate_caps_the_layer_with_a_gap_between_going_up_and_down() {
        let now = Instant::now();
        let mut layers = [
            layer("q", Some((320, 180)), now),
            layer("h", Some((640, 360)), now),
            layer("f", Some((1280, 720)), now),
        ];
        for (l, kbps) in layers.iter_mut().zip([150, 500, 1500]) {
            l.bitrate = kbps * 1000;
        }
        let pick = |estimate_kbps: u64, current: &str, quality| {
            target(
                &layers,
                quality,
                Some(estimate_kbps * 1000),
                Some(rid(current)),
                now,
            )
        };
        // Plenty: what was asked for.
        assert_eq!(pick(5000, "f", Quality::High), Some(rid("f")));
        assert_eq!(pick(5000, "q", Quality::Medium), Some(rid("h")));
        // 600 kbit/s: f does not fit, h does.
        assert_eq!(pick(600, "f", Quality::High), Some(rid("h")));
        // On h at 1700 kbit/s: f (1500) fits within 90 % but not within 75 %: stay.
        assert_eq!(pick(1700, "h", Quality::High), Some(rid("h")));
        // On f at 1700: stay on f; at 1600 it no longer fits within 90 %.
        assert_eq!(pick(1700, "f", Quality::High), Some(rid("f")));
        assert_eq!(pick(1600, "f", Quality::High), Some(rid("h")));
        // At 2100 f fits within 75 %: go up.
        assert_eq!(pick(2100, "h", Quality::High), Some(rid("f")));
        // Nothing fits: the smallest.
        assert_eq!(pick(50, "f", Quality::High), Some(rid("q")));
        // A joiner (no layer yet) goes up only with the larger margin.
        assert_eq!(
            target(&layers, Quality::High, Some(1_600_000), None, now),
            Some(rid("h"))
        );
    }

    #[test]
    fn a_subscriber_switches_only_at_a_keyframe_of_its_target() {
        let (l, h) = (rid("l"), rid("h"));
        // Joining: nothing until the target's keyframe.
        assert_eq!(take(None, Some(h), l, true), Take::Skip);
        assert_eq!(take(None, Some(h), h, false), Take::Skip);
        assert_eq!(take(None, Some(h), h, true), Take::Switch);
        // On l, asked for h: l goes on until h's keyframe.
        assert_eq!(take(Some(l), Some(h), l, false), Take::Forward);
        assert_eq!(take(Some(l), Some(h), h, false), Take::Skip);
        assert_eq!(take(Some(l), Some(h), h, true), Take::Switch);
        // No live layer known: the first keyframe of any.
        assert_eq!(take(None, None, l, true), Take::Switch);
    }
}
