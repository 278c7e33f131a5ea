// SPDX-License-Identifier: MPL-2.0
//! Building what the tests run as programs (the examples, the plugin library for
//! `GST_PLUGIN_PATH`), once per test run and with the same profile and target directory as
//! the tests: running a stale binary would test old code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// `<target>/<profile>`: tests run from `<target>/<profile>/deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps")
        .to_path_buf()
}

/// `cargo build ARGS` for the tests' profile, once per set of arguments.
pub fn cargo_build(args: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Vec<String>, ()>>> = OnceLock::new();
    let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    let dir = profile_dir();
    if built.contains_key(&key) {
        return dir;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("build")
        .args(args)
        .arg("--target-dir")
        .arg(dir.parent().expect("target directory"));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => (),
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => panic!("unexpected target layout {}", dir.display()),
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(key, ());
    dir
}

/// Builds the examples (and with them the plugin library).
pub fn build_examples() -> PathBuf {
    cargo_build(&["--example", "push", "--example", "draw"])
}

/// A directory that holds only the plugin library, for `GST_PLUGIN_PATH`: GStreamer scans
/// plugin directories recursively, and `<target>/<profile>` also holds the libraries of every
/// dependency (among them other GStreamer plugins). It lives beside the profile directories,
/// not in one, so that `GST_PLUGIN_PATH=target/debug` does not find the plugin twice.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = cargo_build(&["--lib"]);
        let lib = profile.join("libgstcustomvideo.so");
        assert!(lib.exists(), "{} was not built", lib.display());
        let dir = profile
            .parent()
            .unwrap()
            .join("plugin-path")
            .join(profile.file_name().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        // Made aside and renamed into place: another test run may be doing the same.
        let pending = dir.join(format!(".link-{}", std::process::id()));
        let _ = std::fs::remove_file(&pending);
        std::os::unix::fs::symlink(&lib, &pending).unwrap();
        std::fs::rename(&pending, dir.join("libgstcustomvideo.so")).unwrap();
        dir
    })
}
