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
    /// What it sends, bits/s: the mean of its last two whole seconds.
    pub bitrate: u64,
    /// The second being counted: since when, and its bytes.
    window: (Instant, u64),
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
            bitrate: 0,
            window: (now, 0),
        }
    }

    /// Counts a frame of `bytes` of this layer.
    pub fn count(&mut self, now: Instant, bytes: usize) {
        self.window.1 += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window.0);
        if elapsed >= Duration::from_secs(1) {
            let second = self.window.1 * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            self.bitrate = if self.bitrate == 0 {
                second
            } else {
                (self.bitrate + second) / 2
            };
            self.window = (now, 0);
        }
    }

    fn pixels(&self) -> u64 {
        self.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h))
    }
}

/// The layers that sent within [`LAYER_SILENCE`], smallest first (a layer whose size is not
/// known yet counts as the smallest), the order they appeared in breaking ties: what
/// [`target`] and [`Fit::update`] choose among, taken once per frame for all its subscribers.
pub fn live(layers: &[Layer], now: Instant) -> Vec<Layer> {
    let mut live: Vec<Layer> = layers
        .iter()
        .filter(|l| now.saturating_duration_since(l.last_frame) <= LAYER_SILENCE)
        .cloned()
        .collect();
    live.sort_by_key(|l| l.pixels());
    live
}

/// The layer a subscriber asking for `quality` should get among the [`live`] layers, by size,
/// and no larger than `ceiling` (the largest its link carries, see [`Fit`]) when that one is
/// live.
pub fn target(live: &[Layer], quality: Quality, ceiling: Option<Rid>) -> Option<Rid> {
    if live.is_empty() {
        return None;
    }
    let mut i = match quality {
        Quality::High => live.len() - 1,
        Quality::Medium => (live.len() - 1) / 2,
        Quality::Low => 0,
    };
    if let Some(c) = ceiling.and_then(|c| live.iter().position(|l| l.rid == c)) {
        i = i.min(c);
    }
    Some(live[i].rid)
}

/// A layer carries a subscriber when its bitrate is at most this share of the
/// subscriber's bandwidth estimate (the rest: retransmissions, RTCP, the estimate's error).
const FITS: f64 = 0.9;
/// The next layer up is taken when its bitrate is at most this share of the estimate: more
/// headroom than [`FITS`], so that an estimate near a layer's bitrate does not move the
/// subscriber back and forth.
const FITS_UP: f64 = 0.75;
/// How long the estimate must stay under the layer, with loss, before the subscriber moves
/// down: an estimate dips for a moment on a busy machine.
const DOWN_AFTER: Duration = Duration::from_secs(1);
/// The subscriber's receiver reports must tell at least this fraction of packets lost (before
/// retransmission) for it to move down: a link that carries the layer loses nothing, while
/// the delay-based estimate also falls when the receiving machine is merely busy.
const LOSS_DOWN: f32 = 0.02;
/// A loss report counts for this long.
const LOSS_HELD: Duration = Duration::from_secs(3);
/// How long the estimate must carry the next layer up before the subscriber moves there.
const UP_AFTER: Duration = Duration::from_secs(3);
/// A move up that had to be undone within this time failed: the next one waits twice as
/// long (each move costs a keyframe of the new layer, which every viewer of that layer gets).
const UP_FAILED_WITHIN: Duration = Duration::from_secs(10);
/// The longest wait before trying a layer up again.
const UP_AFTER_MAX: Duration = Duration::from_secs(60);
/// Estimates in the first moments of a session are the estimator's starting value, not
/// what it measured.
const ESTIMATE_AFTER: Duration = Duration::from_secs(2);

/// Which layers a subscriber's link carries: from its bandwidth estimate (the server's
/// congestion control on the subscriber's leg, from its transport-wide feedback), with
/// hysteresis, as the largest layer it may get (`ceiling`).
#[derive(Debug, Clone, Default)]
pub struct Fit {
    /// The estimate, bits/s, and since when estimates come.
    estimate: Option<(u64, Instant)>,
    /// The largest layer the link carries; `None`: any.
    pub ceiling: Option<Rid>,
    /// A move the estimate asks for (down: true), and since when.
    pending: Option<(bool, Instant)>,
    /// When the subscriber last reported loss over [`LOSS_DOWN`].
    lossy: Option<Instant>,
    /// When it last moved up, and how long the estimate must carry the next layer up before
    /// it moves there (0: [`UP_AFTER`]).
    last_up: Option<Instant>,
    up_after: Duration,
}

impl Fit {
    /// A new bandwidth estimate of the subscriber's link, bits/s.
    pub fn estimated(&mut self, bps: u64, now: Instant) {
        let since = self.estimate.map_or(now, |(_, t)| t);
        self.estimate = Some((bps, since));
    }

    /// The fraction of packets lost the subscriber's last receiver reports tell.
    pub fn lost(&mut self, fraction: f32, now: Instant) {
        if fraction >= LOSS_DOWN {
            self.lossy = Some(now);
        }
    }

    /// The estimate, once it is one: after the first two seconds of estimates.
    pub fn estimate(&self, now: Instant) -> Option<u64> {
        self.estimate
            .filter(|(_, since)| now.saturating_duration_since(*since) >= ESTIMATE_AFTER)
            .map(|(e, _)| e)
    }

    /// Moves the ceiling among the [`live`] layers as the estimate asks, once it asked long enough:
    /// down to the largest layer the estimate carries (while the subscriber loses packets),
    /// up one layer at a time.
    pub fn update(&mut self, live: &[Layer], now: Instant) {
        let Some(estimate) = self.estimate(now) else {
            return;
        };
        let Some(top) = live.len().checked_sub(1) else {
            return;
        };
        let at = self
            .ceiling
            .and_then(|c| live.iter().position(|l| l.rid == c))
            .unwrap_or(top);
        let carried = |l: &Layer, share: f64| l.bitrate as f64 <= estimate as f64 * share;
        let lossy = self
            .lossy
            .is_some_and(|t| now.saturating_duration_since(t) <= LOSS_HELD);
        let wanted = if at > 0 && lossy && !carried(&live[at], FITS) {
            let fits = live[..at]
                .iter()
                .rposition(|l| carried(l, FITS))
                .unwrap_or(0);
            Some((true, fits))
        } else if at < top && carried(&live[at + 1], FITS_UP) {
            Some((false, at + 1))
        } else {
            None
        };
        let Some((down, to)) = wanted else {
            self.pending = None;
            return;
        };
        match self.pending {
            Some((d, since)) if d == down => {
                let after = if down {
                    DOWN_AFTER
                } else {
                    self.up_after.max(UP_AFTER)
                };
                if now.saturating_duration_since(since) >= after {
                    let failed = self
                        .last_up
                        .is_some_and(|t| now.saturating_duration_since(t) <= UP_FAILED_WITHIN);
                    if !down {
                        self.last_up = Some(now);
                    } else if failed {
                        self.up_after = (self.up_after.max(UP_AFTER) * 2).min(UP_AFTER_MAX);
                    } else {
                        self.up_after = UP_AFTER;
                    }
                    // The top layer as ceiling is no ceiling: a larger layer that starts
                    // later is taken.
                    self.ceiling = (to != top).then_some(live[to].rid);
                    self.pending = None;
                }
            }
            _ => self.pending = Some((down, now)),
        }
    }
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
        assert_eq!(
            target(&live(&layers, now), Quality::High, None),
            Some(rid("f"))
        );
        assert_eq!(
            target(&live(&layers, now), Quality::Medium, None),
            Some(rid("h"))
        );
        assert_eq!(
            target(&live(&layers, now), Quality::Low, None),
            Some(rid("q"))
        );
        // Two layers (dual stream): medium is the smaller.
        assert_eq!(
            target(&live(&layers[..2], now), Quality::Medium, None),
            Some(rid("q"))
        );
        // The top layer stopped: high gets the largest that still sends.
        let mut stopped = layers.clone();
        stopped[0].last_frame = now - 2 * LAYER_SILENCE;
        let later = now + Duration::from_millis(10);
        assert_eq!(
            target(&live(&stopped, later), Quality::High, None),
            Some(rid("h"))
        );
        assert_eq!(target(&live(&[], now), Quality::High, None), None);
    }

    #[test]
    fn the_ceiling_caps_the_quality_asked_for() {
        let now = Instant::now();
        let layers = [
            layer("q", Some((320, 180)), now),
            layer("h", Some((640, 360)), now),
            layer("f", Some((1280, 720)), now),
        ];
        let h = Some(rid("h"));
        assert_eq!(target(&live(&layers, now), Quality::High, h), h);
        assert_eq!(target(&live(&layers, now), Quality::Low, h), Some(rid("q")));
        // A ceiling that stopped sending caps nothing.
        assert_eq!(
            target(&live(&layers[..1], now), Quality::High, h),
            Some(rid("q"))
        );
    }

    #[test]
    fn counts_each_layers_bitrate_over_whole_seconds() {
        let t0 = Instant::now();
        let mut l = Layer::new(rid("f"), t0);
        // 30 frames of 5000 bytes a second: 1.2 Mbit/s.
        for i in 1..=60 {
            l.count(t0 + Duration::from_millis(i * 1000 / 30), 5000);
        }
        assert!(
            (1_150_000..=1_250_000).contains(&l.bitrate),
            "{}",
            l.bitrate
        );
    }

    /// Layers q, h, f sending 150, 500 and 1500 kbit/s.
    fn sending(now: Instant) -> Vec<Layer> {
        [("q", 320, 150), ("h", 640, 500), ("f", 1280, 1500)]
            .into_iter()
            .map(|(name, w, kbps)| Layer {
                bitrate: kbps * 1000,
                ..layer(name, Some((w, w * 9 / 16)), now)
            })
            .collect()
    }

    #[test]
    fn the_estimate_moves_the_ceiling_down_at_once_and_up_a_layer_at_a_time() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut fit = Fit::default();
        let at = |fit: &mut Fit, t: u64, kbps: u64| {
            fit.estimated(kbps * 1000, ms(t));
            let layers = sending(ms(t));
            fit.update(&live(&layers, ms(t)), ms(t));
            fit.ceiling.map(|r| r.to_string())
        };
        // The estimator's first value counts for nothing.
        assert_eq!(at(&mut fit, 0, 100), None);
        assert_eq!(at(&mut fit, 1000, 100), None);
        // A low estimate without loss (a busy receiver) moves nothing.
        let mut busy = Fit::default();
        at(&mut busy, 0, 400);
        busy.lost(0.01, ms(2000));
        assert_eq!(at(&mut busy, 2000, 400), None);
        assert_eq!(at(&mut busy, 5000, 400), None);
        // A link of 400 kbit/s that loses packets: after a second under the top layer, down
        // to q at once.
        fit.lost(0.2, ms(2000));
        assert_eq!(at(&mut fit, 2000, 400), None);
        assert_eq!(at(&mut fit, 2500, 400), None);
        assert_eq!(at(&mut fit, 3000, 400).as_deref(), Some("q"));
        // A dip shorter than a second moves nothing.
        let mut steady = Fit::default();
        at(&mut steady, 0, 5000);
        steady.lost(0.1, ms(2000));
        assert_eq!(at(&mut steady, 2000, 5000), None);
        assert_eq!(at(&mut steady, 2100, 1200), None);
        assert_eq!(at(&mut steady, 2900, 1200), None);
        assert_eq!(at(&mut steady, 3000, 5000), None);
        assert_eq!(at(&mut steady, 3500, 1200), None);
        // The link grows to 3 Mbit/s: h after 3 s (500 kbit/s within 3/4 of it), then f
        // after 3 s more.
        assert_eq!(at(&mut fit, 4000, 3000).as_deref(), Some("q"));
        assert_eq!(at(&mut fit, 6900, 3000).as_deref(), Some("q"));
        assert_eq!(at(&mut fit, 7000, 3000).as_deref(), Some("h"));
        assert_eq!(at(&mut fit, 7100, 3000).as_deref(), Some("h"));
        assert_eq!(at(&mut fit, 10100, 3000), None);
        // Near a layer's bitrate nothing moves: 1500 kbit/s is within 0.9 of 1700 (stays
        // on f) but not within 0.75 of it (would not go up to f).
        assert_eq!(at(&mut fit, 11000, 1700), None);
        assert_eq!(at(&mut fit, 20000, 1700), None);
    }

    #[test]
    fn a_move_up_that_fails_makes_the_next_one_wait_twice_as_long() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut fit = Fit::default();
        let at = |fit: &mut Fit, t: u64, kbps: u64, loss: f32| {
            fit.lost(loss, ms(t));
            fit.estimated(kbps * 1000, ms(t));
            let layers = sending(ms(t));
            fit.update(&live(&layers, ms(t)), ms(t));
            fit.ceiling.map(|r| r.to_string())
        };
        // On h (a 700 kbit/s link, losing packets on f).
        at(&mut fit, 0, 700, 0.0);
        at(&mut fit, 2000, 700, 0.1);
        assert_eq!(at(&mut fit, 3000, 700, 0.1).as_deref(), Some("h"));
        // The estimate swings to 2 Mbit/s (f within 3/4): up after 3 s, and f loses packets at
        // once: back down, and the next move up waits 6 s, then 12 s.
        let mut t = 4000;
        for wait in [3000, 6000, 12000] {
            assert_eq!(at(&mut fit, t, 2000, 0.0).as_deref(), Some("h"));
            assert_eq!(
                at(&mut fit, t + wait - 100, 2000, 0.0).as_deref(),
                Some("h")
            );
            assert_eq!(at(&mut fit, t + wait, 2000, 0.0), None, "after {wait} ms");
            t += wait + 1000;
            assert_eq!(at(&mut fit, t, 700, 0.1), None);
            assert_eq!(at(&mut fit, t + 1000, 700, 0.1).as_deref(), Some("h"));
            t += 2000;
        }
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
