#!/usr/bin/env bash
# Idempotent install of the real media servers the broadcast tests run against (Debian apt):
# only the missing packages are installed. The tests start their own instances (own config,
# own port, in a temporary prefix or network namespace), so the packages' system services are
# never started here.
# Usage: scripts/install-media-servers.sh      (called by `.ci/bootstrap.sh test`)
set -euo pipefail

log() { printf '[install-media-servers] %s\n' "$*" >&2; }

# One line per server; add yours with the reason it is needed.
packages=(
  nginx libnginx-mod-rtmp  # RTMP push tests: an RTMP ingest on loopback (tests/test_broadcast_rtmp.py); load balancer test (tests/test_loadbalancer.py)
  coturn  # TURN relay test: relay-only ICE through a STUN/TURN server (tests/test_server_turn.py)
  janus  # SFU fan-out test: Janus VideoRoom behind simple-whip-server (tests/test_broadcast_sfu.py)
)

# simple-whip-server (WHIP in front of Janus) is unpacked into a cache, not apt-installed: its
# package conflicts with a Node that did not come from Debian.
# A failure here is loud but leaves the other servers' installs alone (that test then skips).
bash "$(dirname "${BASH_SOURCE[0]}")/install-whip-server.sh" \
  || log "WARNING: simple-whip-server not installed: tests/test_broadcast_sfu.py will skip"

missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
# Keep the packages' services from starting (port 80 and friends): a policy-rc.d that says
# "no" for the length of the install, unless the machine already has one (containers do).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
log "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
