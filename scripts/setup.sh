#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Installs what gst-plugin-customvideo needs to build, test and run on Debian 12, then builds
# the plugin. Idempotent: packages already present are not touched, apt runs only when
# something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pkg-config
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-nice
  python3-gi
  python3-gst-1.0
  gir1.2-gstreamer-1.0
  gir1.2-gst-plugins-base-1.0
  libssl-dev
  chromium
  chromium-driver
  curl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo (Rust 1.92 or newer, e.g. from rustup) is required but not found" >&2
    exit 1
  fi
fi

# Janus VideoRoom behind Meetecho's WHIP server, for the interoperability test (tests/janus.rs):
# installed by scripts/janus.sh (apt, and npm for the WHIP server's modules) when missing.
bash scripts/janus.sh install

cargo build --locked --all-targets
echo "setup: ready (plugin at $(pwd)/target/debug/libgstcustomvideo.so)"
