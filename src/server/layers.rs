// SPDX-License-Identifier: MPL-2.0
//! Simulcast layers (RFC 8853): which of a publisher's layers a subscriber gets, and when it
//! may switch. A subscriber receives one layer; it moves to another one only at a keyframe of
//! that layer, so its decoder never sees a frame it cannot decode.

use std::time::{Duration, Instant};
use str0m::media::Rid;

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
/// smallest), the order they appeared in breaking ties.
pub fn target(layers: &[Layer], quality: Quality, now: Instant) -> Option<Rid> {
    let mut live: Vec<&Layer> = layers
        .iter()
        .filter(|l| now.saturating_duration_since(l.last_frame) <= LAYER_SILENCE)
        .collect();
    if live.is_empty() {
        return None;
    }
    live.sort_by_key(|l| l.pixels());
    let i = match quality {
        Quality::High => live.len() - 1,
        Quality::Medium => (live.len() - 1) / 2,
        Quality::Low => 0,
    };
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
