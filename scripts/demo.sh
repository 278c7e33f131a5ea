#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The demo: an application renders its own frames (a moving square and a frame counter),
# pushes them into customvideosrc, and the track is encoded to a WebM file; the track
# statistics are printed at the end. Arguments are passed to the example
# (--duration SECS, --output PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo run --locked --quiet --example push -- "$@"
