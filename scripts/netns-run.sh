#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Runs a command inside a fresh network namespace that has only loopback plus a private veth
# pair (10.255.0.1/24 on cv0), so that nothing a WebRTC stack sends on its own (STUN to public
# servers, UPnP/SSDP multicast, mDNS) can leave the machine. Needs root.
# Usage: scripts/netns-run.sh COMMAND [ARGS...]
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
exec unshare -n bash -c '
  ip link set lo up
  ip link add cv0 type veth peer name cv1
  ip addr add 10.255.0.1/24 dev cv0
  ip link set cv0 up; ip link set cv1 up
  exec "$@"' netns-run "$@"
