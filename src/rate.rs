// SPDX-License-Identifier: MPL-2.0
//! A rate over the last second (bytes, frames, …), as call statistics report it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window over which rates are computed.
const WINDOW: Duration = Duration::from_secs(1);

/// Amounts added over time; `per_second` is their sum over the last second.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    pub(crate) fn add(&mut self, now: Instant, amount: u64) {
        self.samples.push_back((now, amount));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    pub(crate) fn per_second(&self, now: Instant) -> u64 {
        self.samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .map(|(_, amount)| amount)
            .sum()
    }
}

/// The bytes of the buffer or buffer list a pad probe sees (0 for anything else).
pub(crate) fn probed_bytes(info: &gst::PadProbeInfo) -> u64 {
    let bytes = match &info.data {
        Some(gst::PadProbeData::Buffer(b)) => b.size(),
        Some(gst::PadProbeData::BufferList(l)) => l.calculate_size(),
        _ => 0,
    };
    bytes as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_second_only() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        for i in 0..30 {
            r.add(t0 + Duration::from_millis(i * 100), 10);
        }
        // At 2.9 s: the samples from 1.9 s to 2.9 s, 11 of them.
        assert_eq!(r.per_second(t0 + Duration::from_millis(2900)), 110);
        assert_eq!(r.per_second(t0 + Duration::from_secs(10)), 0);
    }
}
