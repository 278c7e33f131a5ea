#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Installs gst-plugin-customvideo like a GStreamer plugin:
#   the plugin   -> GStreamer's system plugin directory (pkg-config --variable=pluginsdir
#                   gstreamer-1.0, e.g. /usr/lib/x86_64-linux-gnu/gstreamer-1.0)
#   callserver   -> PREFIX/bin
#   a systemd unit for the call server -> PREFIX/lib/systemd/system/callserver.service
# and records what it installed in PREFIX/share/gst-plugin-customvideo/installed, which
# --uninstall removes again. Afterwards `gst-inspect-1.0 customvideo` works with no
# environment variables.
#
# Usage: scripts/install.sh [--prefix DIR] [--from DIR] [--uninstall]
#   --prefix DIR   where callserver and the unit go (default /usr/local)
#   --from DIR     install the builds in DIR (e.g. target/debug) instead of building a
#                  release (cargo build --release)
#   --uninstall    remove what an earlier install put there
#   DESTDIR=...    stage everything under this directory (packaging, tests)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
from=""
uninstall=false
while (($#)); do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --from) from="$2"; shift 2 ;;
    --uninstall) uninstall=true; shift ;;
    -h|--help) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
destdir="${DESTDIR:-}"
manifest="$destdir$prefix/share/gst-plugin-customvideo/installed"
sudo=""
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

if $uninstall; then
  if [ ! -f "$manifest" ]; then
    echo "install: nothing to uninstall ($manifest not found)" >&2
    exit 1
  fi
  while IFS= read -r f; do
    $sudo rm -f "$destdir$f"
    echo "removed $f"
  done <"$manifest"
  $sudo rm -f "$manifest"
  $sudo rmdir "$(dirname "$manifest")" 2>/dev/null || true
  exit 0
fi

pluginsdir=$(pkg-config --variable=pluginsdir gstreamer-1.0 2>/dev/null || true)
if [ -z "$pluginsdir" ]; then
  echo "install: pkg-config does not know gstreamer-1.0: run scripts/setup.sh first" >&2
  exit 1
fi

if [ -z "$from" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --locked --release --lib --bin callserver
  from=target/release
fi
for f in "$from/libgstcustomvideo.so" "$from/callserver"; do
  if [ ! -f "$f" ]; then
    echo "install: $f is missing: build it first (cargo build --release)" >&2
    exit 1
  fi
done

installed=()
put() { # put MODE SOURCE TARGET
  $sudo install -D -m "$1" "$2" "$destdir$3"
  installed+=("$3")
  echo "installed $3"
}
put 0644 "$from/libgstcustomvideo.so" "$pluginsdir/libgstcustomvideo.so"
put 0755 "$from/callserver" "$prefix/bin/callserver"
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|@BINDIR@|$prefix/bin|" packaging/callserver.service >"$unit"
put 0644 "$unit" "$prefix/lib/systemd/system/callserver.service"
printf '%s\n' "${installed[@]}" | $sudo install -D -m 0644 /dev/stdin "$manifest"
if [ -z "$destdir" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $sudo systemctl daemon-reload || true
fi
echo "install: done. gst-inspect-1.0 customvideo; callserver --help;" \
  "systemctl enable --now callserver (options in /etc/default/callserver)"
