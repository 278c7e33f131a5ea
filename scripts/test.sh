#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Runs the whole test suite (unit, element, end-to-end and example tests) after setup.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
G_DEBUG=fatal-criticals cargo test --locked -- --test-threads=2
