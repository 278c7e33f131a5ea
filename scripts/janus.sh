#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# A real third-party WHIP server for the interoperability test (tests/janus.rs): Debian's Janus
# 1.1 (VideoRoom plugin) behind Meetecho's simple-whip-server, both on 127.0.0.1.
#
# Usage: scripts/janus.sh install|check|up|down
#   install  installs what is missing, and only that (quick and silent when all is there):
#            the Debian packages janus and curl (apt-get), node and npm when there is no node
#            yet, and simple-whip-server into /opt/gst-plugin-customvideo/simple-whip-server:
#            its source from Debian's package, its node modules from npm. Needs root (or
#            sudo) and the network.
#   check    exits 0 when everything `up` needs is installed; otherwise says what is missing.
#   up       starts Janus and the WHIP server in the background with a configuration written
#            into $JANUS_STATE_DIR, waits until both answer, creates the WHIP endpoints and
#            prints their URLs. An instance already running from the same state directory is
#            stopped first.
#   down     stops what `up` started from $JANUS_STATE_DIR and removes what it wrote there.
#
# What `up` serves:
#   http://127.0.0.1:$WHIP_PORT/whip/endpoint/customvideo       publishes into VideoRoom $JANUS_ROOM
#   http://127.0.0.1:$WHIP_PORT/whip/endpoint/customvideo-rtp   the same, and Janus also forwards
#       the publisher's video as plain RTP to udp://127.0.0.1:$JANUS_FORWARD_PORT (0: no such endpoint)
#   http://127.0.0.1:$JANUS_ADMIN_PORT/admin                    Janus's Admin API (secret customvideo-admin)
#   http://127.0.0.1:$JANUS_HTTP_PORT/janus                     Janus's own (plain HTTP) API, when
#       JANUS_HTTP_PORT is not 0: VideoRoom subscribers for benches/fanout.rs
#
# Environment (defaults in brackets): JANUS_STATE_DIR [${TMPDIR:-/tmp}/customvideo-janus],
# WHIP_PORT [7080], JANUS_FORWARD_PORT [5004], JANUS_ADMIN_PORT [7088], JANUS_WS_PORT [8188],
# JANUS_RTP_RANGE [20000-20100], JANUS_ROOM [1234], JANUS_DEBUG [4, Janus's log level],
# JANUS_HTTP_PORT [0: Janus's HTTP API off], JANUS_SESSION_TIMEOUT [60 s; 0: sessions never
# time out], JANUS_EVENT_LOOPS [0: Janus's default, a thread for each PeerConnection; n: n
# shared event loops (janus.jcfg event_loops)].
set -euo pipefail

WHIP_SERVER_DIR=/opt/gst-plugin-customvideo/simple-whip-server
# The node modules simple-whip-server needs (Debian's package depends on their Debian
# counterparts, which can clash with a node not from Debian). colors stays at 1.4.0: the
# releases after it were sabotaged by their author.
WHIP_SERVER_MODULES='"async": "3.2.6", "body-parser": "1.20.9", "colors": "1.4.0",
    "cors": "2.8.6", "debug": "4.4.3", "express": "4.22.3", "websocket": "1.0.35"'

STATE=${JANUS_STATE_DIR:-${TMPDIR:-/tmp}/customvideo-janus}
WHIP_PORT=${WHIP_PORT:-7080}
FORWARD_PORT=${JANUS_FORWARD_PORT:-5004}
ADMIN_PORT=${JANUS_ADMIN_PORT:-7088}
WS_PORT=${JANUS_WS_PORT:-8188}
RTP_RANGE=${JANUS_RTP_RANGE:-20000-20100}
ROOM=${JANUS_ROOM:-1234}
DEBUG_LEVEL=${JANUS_DEBUG:-4}
HTTP_PORT=${JANUS_HTTP_PORT:-0}
SESSION_TIMEOUT=${JANUS_SESSION_TIMEOUT:-60}
EVENT_LOOPS=${JANUS_EVENT_LOOPS:-0}
# Secrets of a Janus that listens on loopback only, for tests: the Admin API's, and the
# VideoRoom's admin key (RTP forwarding asks for it).
ADMIN_SECRET=customvideo-admin
ROOM_ADMIN_KEY=customvideo-room-admin
ENDPOINT=customvideo

say() { echo "janus.sh: $*"; }
fail() { echo "janus.sh: $*" >&2; exit 1; }

# The Debian packages that are not installed, of those given.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Prints what is missing for `up`, one item a line; nothing when all is there.
missing() {
  command -v janus >/dev/null 2>&1 || echo "janus (Debian package janus)"
  command -v curl >/dev/null 2>&1 || echo "curl"
  command -v node >/dev/null 2>&1 || echo "node"
  [ -f "$WHIP_SERVER_DIR/.installed" ] || echo "simple-whip-server in $WHIP_SERVER_DIR"
}

check() {
  local what=()
  mapfile -t what < <(missing)
  if ((${#what[@]})); then
    echo "janus.sh: not installed:" >&2
    printf '  %s\n' "${what[@]}" >&2
    echo "janus.sh: install them with: bash scripts/janus.sh install (or bash scripts/setup.sh)" >&2
    return 1
  fi
}

install() {
  # Nothing missing: nothing to do (and no root needed).
  if [ -z "$(missing)" ]; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    exec sudo bash "$0" install
  fi
  export DEBIAN_FRONTEND=noninteractive

  local need=()
  mapfile -t need < <(missing_packages janus curl)
  # node and npm from any origin will do; Debian's only when there is none.
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  [ -f "$WHIP_SERVER_DIR/.installed" ] || command -v npm >/dev/null 2>&1 || need+=(npm)
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${need[@]}"
    if [[ " ${need[*]} " == *" janus "* ]] && command -v systemctl >/dev/null 2>&1; then
      # The package starts a system-wide Janus on the ports `up` uses; `up` runs its own.
      say "disabling the janus.service the package enabled (scripts/janus.sh up runs its own)"
      systemctl disable --now janus.service >/dev/null 2>&1 || true
    fi
  fi

  if [ ! -f "$WHIP_SERVER_DIR/.installed" ]; then
    install_whip_server
  fi
  say "installed: janus $(dpkg-query -W -f='${Version}' janus), simple-whip-server $(cat "$WHIP_SERVER_DIR/.installed") in $WHIP_SERVER_DIR"
}

# Meetecho's simple-whip-server, from the upstream snapshot that Debian packages: its two
# source files, with a config.js that reads the file `up` writes, and its node modules from
# npm. Built beside the target and moved in place at the end, so that an interrupted install
# leaves nothing half done behind.
install_whip_server() {
  local work new version
  say "installing simple-whip-server into $WHIP_SERVER_DIR"
  apt-cache show simple-whip-server >/dev/null 2>&1 || apt-get update -q
  work=$(mktemp -d)
  new="$WHIP_SERVER_DIR.new"
  trap 'rm -rf "$work" "$new"' EXIT
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root simple-whip-server)
  dpkg-deb -x "$work"/simple-whip-server_*.deb "$work/pkg"
  version=$(dpkg-deb -f "$work"/simple-whip-server_*.deb Version)

  rm -rf "$new"
  mkdir -p "$new/src"
  cp "$work/pkg/usr/share/simple-whip-server/src/server.js" \
    "$work/pkg/usr/share/simple-whip-server/src/whip-janus.js" "$new/src/"
  cp "$work/pkg/usr/share/doc/simple-whip-server/copyright" "$new/"
  cat >"$new/src/config.js" <<'JS'
// The settings are in the file that gst-plugin-customvideo's scripts/janus.sh up writes.
module.exports = require(process.env.WHIP_SERVER_CONFIG);
JS
  cat >"$new/package.json" <<JSON
{
  "name": "customvideo-simple-whip-server",
  "private": true,
  "dependencies": {
    $WHIP_SERVER_MODULES
  }
}
JSON
  (cd "$new" && npm install --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$version" >"$new/.installed"

  rm -rf "$WHIP_SERVER_DIR"
  mv "$new" "$WHIP_SERVER_DIR"
  rm -rf "$work"
  trap - EXIT
}

# Comma-separated names of the *.so files in directory $1, except those named after it:
# what Janus is told not to load.
all_but() {
  local dir=$1 f names=()
  shift
  for f in "$dir"/*.so; do
    [ -e "$f" ] || continue
    [[ " $* " == *" ${f##*/} "* ]] || names+=("${f##*/}")
  done
  (IFS=,; echo "${names[*]}")
}

# Janus's configuration: only the VideoRoom plugin, the HTTP transport for the Admin API (and
# Janus's API when JANUS_HTTP_PORT is set) and the WebSocket transport the WHIP server talks
# to, all on 127.0.0.1; no STUN, no TURN, no mDNS.
write_janus_config() {
  local lib
  # The package's module directory, /usr/lib/<multiarch triplet>/janus.
  lib=$(dpkg -L janus 2>/dev/null |
    awk '/\/janus\/plugins$/ { dir = $0 } END { sub(/\/plugins$/, "", dir); print dir }') || true
  [ -d "$lib/plugins" ] || fail "no plugins of Debian's janus package found (bash scripts/janus.sh install)"
  cat >"$STATE/conf/janus.jcfg" <<EOF
general: {
	configs_folder = "$STATE/conf"
	plugins_folder = "$lib/plugins"
	transports_folder = "$lib/transports"
	events_folder = "$lib/events"
	loggers_folder = "$lib/loggers"
	debug_level = $DEBUG_LEVEL
	admin_secret = "$ADMIN_SECRET"
	session_timeout = $SESSION_TIMEOUT
	server_name = "customvideo-janus"
$(if [ "$EVENT_LOOPS" != 0 ]; then printf '\tevent_loops = %s\n' "$EVENT_LOOPS"; fi)
}
media: {
	rtp_port_range = "$RTP_RANGE"
}
nat: {
	ignore_mdns = true
}
plugins: {
	disable = "$(all_but "$lib/plugins" libjanus_videoroom.so)"
}
transports: {
	disable = "$(all_but "$lib/transports" libjanus_http.so libjanus_websockets.so)"
}
loggers: {
	disable = "$(all_but "$lib/loggers")"
}
events: {
	broadcast = false
	disable = "$(all_but "$lib/events")"
}
EOF
  cat >"$STATE/conf/janus.transport.http.jcfg" <<EOF
general: {
$(if [ "$HTTP_PORT" != 0 ]; then
    printf '\tbase_path = "/janus"\n\thttp = true\n\tport = %s\n\tip = "127.0.0.1"\n' "$HTTP_PORT"
  else
    printf '\thttp = false\n'
  fi)
	https = false
}
admin: {
	admin_base_path = "/admin"
	admin_http = true
	admin_port = $ADMIN_PORT
	admin_ip = "127.0.0.1"
	admin_https = false
}
EOF
  cat >"$STATE/conf/janus.transport.websockets.jcfg" <<EOF
general: {
	json = "plain"
	ws = true
	ws_port = $WS_PORT
	ws_ip = "127.0.0.1"
	wss = false
}
admin: {
	admin_ws = false
	admin_wss = false
}
EOF
  # bitrate = 0: no bandwidth cap sent to publishers (Debian's sample room has 128 kbit/s).
  cat >"$STATE/conf/janus.plugin.videoroom.jcfg" <<EOF
general: {
	admin_key = "$ROOM_ADMIN_KEY"
}
room-$ROOM: {
	description = "gst-plugin-customvideo"
	publishers = 16
	bitrate = 0
	fir_freq = 10
	audiocodec = "opus"
	videocodec = "vp8,h264,vp9,av1"
	record = false
}
EOF
}

# Waits (10 s at most) until command "$3..." succeeds, while the process in pid file $1 lives;
# when it does not, shows the end of log $2, stops everything and fails.
wait_ready() {
  local pidfile=$1 log=$2
  shift 2
  for _ in $(seq 100); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.1
  done
  echo "janus.sh: $(basename "$log" .log) did not start; the end of $log:" >&2
  tail -n 30 "$log" >&2
  down
  exit 1
}

admin_ping() {
  curl -fsS -m 1 -H 'Content-Type: application/json' \
    -d "{\"janus\":\"ping\",\"transaction\":\"up\",\"admin_secret\":\"$ADMIN_SECRET\"}" \
    "http://127.0.0.1:$ADMIN_PORT/admin"
}

# Creates WHIP endpoint $1 on the WHIP server, with more JSON fields in $2.
create_endpoint() {
  curl -fsS -m 5 -H 'Content-Type: application/json' \
    -d "{\"id\":\"$1\",\"room\":$ROOM,\"label\":\"$1\"$2}" \
    "http://127.0.0.1:$WHIP_PORT/whip/create" >/dev/null ||
    { down; fail "the WHIP server refused to create endpoint $1"; }
}

up() {
  check || exit 1
  down
  mkdir -p "$STATE/conf"
  write_janus_config
  janus -F "$STATE/conf" -C "$STATE/conf/janus.jcfg" --disable-colors --debug-timestamps \
    </dev/null >"$STATE/janus.log" 2>&1 &
  echo $! >"$STATE/janus.pid"
  wait_ready "$STATE/janus.pid" "$STATE/janus.log" admin_ping

  cat >"$STATE/whip-server.config.js" <<EOF
module.exports = {
	janus: { address: 'ws://127.0.0.1:$WS_PORT' },
	port: $WHIP_PORT,
	rest: '/whip',
	allowTrickle: true,
	strictETags: false,
	iceServers: []
};
EOF
  # The WHIP server answers its health check once it is connected to Janus.
  (cd "$WHIP_SERVER_DIR" && WHIP_SERVER_CONFIG="$STATE/whip-server.config.js" \
    DEBUG='whip:*,-whip:debug,janus:*,-janus:debug,-janus:vdebug' exec node src/server.js) \
    </dev/null >"$STATE/whip-server.log" 2>&1 &
  echo $! >"$STATE/whip-server.pid"
  wait_ready "$STATE/whip-server.pid" "$STATE/whip-server.log" \
    curl -fsS -m 1 "http://127.0.0.1:$WHIP_PORT/whip/healthcheck"

  local base="http://127.0.0.1:$WHIP_PORT/whip/endpoint"
  create_endpoint "$ENDPOINT" ""
  say "WHIP endpoint $base/$ENDPOINT (VideoRoom $ROOM)"
  if [ "$FORWARD_PORT" != 0 ]; then
    create_endpoint "$ENDPOINT-rtp" ",\"adminKey\":\"$ROOM_ADMIN_KEY\",\"recipient\":{\"host\":\"127.0.0.1\",\"videoPort\":$FORWARD_PORT}"
    say "WHIP endpoint $base/$ENDPOINT-rtp (VideoRoom $ROOM, video also forwarded as RTP to udp://127.0.0.1:$FORWARD_PORT)"
  fi
  say "Admin API http://127.0.0.1:$ADMIN_PORT/admin (secret $ADMIN_SECRET)"
  say "Janus pid $(cat "$STATE/janus.pid"), WHIP server pid $(cat "$STATE/whip-server.pid"), logs in $STATE"
}

down() {
  local name pid pids=()
  # The pid files name "janus" and "node" processes; a pid that now belongs to another
  # program (the process ended and its pid was reused) is left alone.
  for name in whip-server:node janus:janus; do
    pid=$(cat "$STATE/${name%:*}.pid" 2>/dev/null) || continue
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${name#*:}" ] && kill "$pid" 2>/dev/null; then
      pids+=("$pid")
    fi
    rm -f "$STATE/${name%:*}.pid"
  done
  # Both end within a few seconds (Janus closes its sessions first); 5 s at most.
  for _ in $(seq 50); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
  # Only what `up` wrote: the state directory may have been given by the caller.
  rm -rf "$STATE/conf"
  rm -f "$STATE/janus.log" "$STATE/whip-server.log" "$STATE/whip-server.config.js"
  rmdir "$STATE" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 install|check|up|down" >&2
    exit 2
    ;;
esac
