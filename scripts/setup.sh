#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Installs what gst-plugin-customvideo needs on Debian 12. Idempotent: what is present is not
# touched, apt runs only when a package is missing, rustup only when there is no Rust.
#
#   scripts/setup.sh          everything: to build, run and test (scripts/test.sh, CI) — the
#                             GStreamer development files and plugins, Rust with rustfmt and
#                             clippy, PyGObject, Chromium and chromedriver, nginx (a load
#                             balancer in a test), Janus VideoRoom behind Meetecho's WHIP
#                             server (scripts/janus.sh)
#   scripts/setup.sh --demo   only what the demo needs (scripts/demo.sh): GStreamer, Rust
#
# It builds nothing: scripts/demo.sh and scripts/test.sh build what they run.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
  --demo) mode=demo ;;
  "") ;;
  *) echo "setup: unknown option $1 (--demo or nothing)" >&2; exit 2 ;;
esac

# To build the plugin (a C linker for Rust, the GStreamer and OpenSSL headers) and run it.
packages=(
  ca-certificates
  curl
  gcc
  libc6-dev
  pkg-config
  libssl-dev
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
)
if [ "$mode" = all ]; then
  # The tests' peers and tools: Python apps, the browser, network namespaces.
  packages+=(
    python3-gi
    python3-gst-1.0
    gir1.2-gstreamer-1.0
    gir1.2-gst-plugins-base-1.0
    chromium
    chromium-driver
    iproute2
    nginx-light
  )
fi

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
  # The load-balancer test (tests/scaling.rs) runs nginx with a configuration of its own;
  # the service the package may have started is not wanted.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now nginx.service >/dev/null 2>&1 || true
  fi
fi

# Rust: the rust-version of Cargo.toml or newer, from rustup when there is none.
need_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing Rust (rustup-init from static.rust-lang.org, stable toolchain)"
  # rustup-init acts by the name it is called with.
  dir=$(mktemp -d)
  curl --proto '=https' --tlsv1.2 -sSf -o "$dir/rustup-init" \
    "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init"
  chmod +x "$dir/rustup-init"
  "$dir/rustup-init" -y -q --profile minimal --default-toolchain stable
  rm -rf "$dir"
fi
have_rust=$(rustc --version | cut -d' ' -f2)
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -1)" != "$need_rust" ]; then
  if command -v rustup >/dev/null 2>&1; then
    echo "setup: Rust $have_rust is older than $need_rust: updating the stable toolchain"
    rustup update stable -q
  else
    echo "setup: Rust $have_rust is older than $need_rust and there is no rustup to update it" >&2
    exit 1
  fi
fi

if [ "$mode" = all ]; then
  # CI checks formatting and lints.
  if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
      if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        rustup component add "$c"
      fi
    done
  fi
  # Janus VideoRoom behind Meetecho's WHIP server, for the interoperability test
  # (tests/janus.rs): installed by scripts/janus.sh (apt, and npm for the WHIP server).
  bash scripts/janus.sh install
fi
echo "setup: ready ($mode)"
