// SPDX-License-Identifier: MPL-2.0
//! `scripts/install.sh` into a staging directory (DESTDIR): the plugin lands in GStreamer's
//! system plugin directory (as `pkg-config` names it), GStreamer loads it from there with
//! both elements, `callserver` and its systemd unit are in the prefix, and `--uninstall`
//! removes every file again.

mod common;

use common::build::cargo_build;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn install(destdir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .args(args)
        .env("DESTDIR", destdir)
        .output()
        .expect("bash runs")
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `gst-inspect-1.0 ARGS` that sees only the plugins in `system_dir`, with a registry of
/// its own.
fn inspect(system_dir: &Path, registry: &Path, args: &[&str]) -> Output {
    Command::new("gst-inspect-1.0")
        .args(args)
        .env("GST_PLUGIN_SYSTEM_PATH_1_0", system_dir)
        .env_remove("GST_PLUGIN_PATH")
        .env_remove("GST_PLUGIN_PATH_1_0")
        .env("GST_REGISTRY_1_0", registry)
        .output()
        .expect("gst-inspect-1.0 runs (gstreamer1.0-tools)")
}

#[test]
fn install_puts_the_plugin_where_gstreamer_finds_it_and_uninstall_removes_it() {
    // The plugin and callserver of the tests' own build.
    let from = cargo_build(&["--lib", "--bin", "callserver"]);
    let dest = std::env::temp_dir().join(format!("customvideo-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();

    let out = install(&dest, &["--from", from.to_str().unwrap()]);
    assert!(out.status.success(), "install failed:\n{}", text(&out));

    let pluginsdir = Command::new("pkg-config")
        .args(["--variable=pluginsdir", "gstreamer-1.0"])
        .output()
        .expect("pkg-config runs");
    let pluginsdir = String::from_utf8_lossy(&pluginsdir.stdout)
        .trim()
        .to_owned();
    assert!(pluginsdir.starts_with('/'), "pluginsdir {pluginsdir:?}");
    let staged_plugins = dest.join(pluginsdir.trim_start_matches('/'));
    assert!(
        staged_plugins.join("libgstcustomvideo.so").is_file(),
        "the plugin is not in {}: {:?}",
        staged_plugins.display(),
        files(&dest)
    );
    let bin = dest.join("usr/local/bin/callserver");
    let unit = dest.join("usr/local/lib/systemd/system/callserver.service");
    assert!(bin.is_file() && unit.is_file(), "{:?}", files(&dest));
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains("ExecStart=/usr/local/bin/callserver $CALLSERVER_ARGS"),
        "{unit_text}"
    );
    let help = Command::new(&bin).arg("--help").output().unwrap();
    assert!(text(&help).contains("--view-token"), "{}", text(&help));

    // GStreamer loads the plugin from the (staged) system directory, with no
    // GST_PLUGIN_PATH.
    let registry = dest.join("registry.bin");
    let out = inspect(&staged_plugins, &registry, &["customvideo"]);
    let listing = text(&out);
    assert!(
        out.status.success() && listing.contains("customvideosrc") && listing.contains("callsink"),
        "gst-inspect-1.0 customvideo:\n{listing}"
    );

    let out = install(&dest, &["--uninstall"]);
    assert!(out.status.success(), "uninstall failed:\n{}", text(&out));
    let left: Vec<_> = files(&dest)
        .into_iter()
        .filter(|f| f != &registry)
        .collect();
    assert!(left.is_empty(), "uninstall left {left:?}");
    let out = inspect(&staged_plugins, &registry, &["customvideo"]);
    assert!(
        !out.status.success(),
        "still found after uninstall:\n{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dest);
}
