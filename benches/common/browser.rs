// SPDX-License-Identifier: MPL-2.0
//! The tests' driver of Debian's headless Chromium (tests/common/browser.rs) for the
//! benchmarks, with the one helper of tests/common it needs.

use std::time::{Duration, Instant};

/// Calls `cond` every 5 ms until it holds or `timeout` passed; whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[allow(dead_code)]
#[path = "../../tests/common/browser.rs"]
mod driver;

pub use driver::Browser;

/// Chromium with web security off, so that a script injected into one page may negotiate with
/// a WHEP endpoint on another origin (gst-plugins-rs `whepserversink` sends no CORS headers).
pub fn start() -> Browser {
    Browser::start_with(&["--disable-web-security"])
}
