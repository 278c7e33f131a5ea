#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Coverage-guided fuzzing (libFuzzer, cargo-fuzz) of every reader of untrusted bytes:
#   bitstream  H.264 SPS / VP8 key-frame headers of forwarded media
#   stun       the STUN reader that routes datagrams from new addresses
#   sdp        the SDP checks on offers, answers and trickle fragments
#   link       callsink's reader of a WHIP server's Link headers
#   offer      WHIP/WHEP offers and trickle fragments into the forwarding core (str0m's SDP)
#   datagram   STUN/DTLS/RTP/RTCP datagrams into the forwarding core
#   http       whole requests to the call server's HTTP port (a server in the process)
#
# Usage: scripts/fuzz.sh [target ...]     (default: all of them)
#   FUZZ_RUNS=N        inputs per target (default 100000)
#   FUZZ_SECONDS=S     time limit per target (default 3600; the slowest target, offer, needs
#                      about 20 minutes for 10^5 inputs on 2 cores)
#
# Each target starts from fuzz/seeds/<target> and fuzz/regressions/<target>; what it learns
# stays in fuzz/corpus/<target> (not committed). An input that fails is written to
# fuzz/artifacts/<target>/: fix the cause, then keep the input in fuzz/regressions/<target>/
# so that tests/fuzz.rs runs it from then on (the run's output is kept beside it, fuzz.log).
# Ends with one line per target:
# "<target>: N inputs, ok" or "... FAILED".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

all=(bitstream stun sdp link offer datagram http)
targets=("${@:-${all[@]}}")
runs=${FUZZ_RUNS:-100000}
seconds=${FUZZ_SECONDS:-3600}

cd fuzz
# GLib's one-time allocations are not leaks; everything else is still checked.
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp:print_suppressions=0"
summary=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t"/ 2>/dev/null || true
  cp -n regressions/"$t"/* "corpus/$t"/ 2>/dev/null || true
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
      -runs="$runs" -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    cp "$log" "artifacts/$t/fuzz.log"
    grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -60
  fi
  done_runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  summary+=("$t: ${done_runs:-0} inputs, $result")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$status"
