// SPDX-License-Identifier: MPL-2.0
//! Runs a test inside its own private network namespace (scripts/netns-run.sh), so that the
//! WebRTC stacks it starts cannot send anything off the machine.

use std::process::Command;
use std::sync::RwLock;

const MARK: &str = "CUSTOMVIDEO_IN_NETNS";

/// Call first thing in a test named `name`: returns true when the test body should run
/// (we are inside the namespace); otherwise it re-runs the test binary for just this test
/// inside a fresh namespace, asserts that it passed, and returns false.
pub fn enter(name: &str) -> bool {
    run(name, false)
}

/// [`enter`] for a test that needs the machine to itself (several encoders at 1280x720,
/// browsers): no other test of this binary runs at the same time.
#[allow(dead_code)]
pub fn enter_alone(name: &str) -> bool {
    run(name, true)
}

/// Held for reading by each test running in its namespace, for writing by one that runs
/// alone.
static RUNNING: RwLock<()> = RwLock::new(());

fn run(name: &str, alone: bool) -> bool {
    if std::env::var_os(MARK).is_some() {
        return true;
    }
    // A test that failed while holding the lock poisons it; the others still run.
    let _shared = (!alone).then(|| RUNNING.read().unwrap_or_else(|e| e.into_inner()));
    let _alone = alone.then(|| RUNNING.write().unwrap_or_else(|e| e.into_inner()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-run.sh");
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(script)
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARK, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script} (root and unshare are needed): {e}"));
    // What the test printed is passed on (cargo shows it with --nocapture, or when the test
    // fails); the inner run's own report only when it failed: one test, one result line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.starts_with("test ")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "{name} failed inside its network namespace:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
