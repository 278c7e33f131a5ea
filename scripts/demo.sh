#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The demo: the application draws a custom video track (a moving square and a running clock)
# into customvideosrc, and callsink publishes it into the embedded call server; open the
# printed URL in a browser to watch. Runs until Ctrl-C, or for --duration SECS.
# Other options: --port 8080 --channel demo --codec auto|vp8|vp9|h264|av1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release --bin customvideo-demo
exec target/release/customvideo-demo "$@"
