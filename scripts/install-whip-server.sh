#!/usr/bin/env bash
# Idempotent install of simple-whip-server (Meetecho's WHIP server in front of Janus) into a
# cache folder: its Debian package conflicts with a Node that did not come from Debian, so the
# .deb is unpacked (apt-get download + dpkg -x) and its few dependencies installed with npm.
# tests/test_broadcast_sfu.py runs it from there (node <cache>/src/server.js).
# Usage: scripts/install-whip-server.sh     (called by scripts/install-media-servers.sh)
#   $MSADTALKER_WHIP_SERVER_DIR: where (default ${XDG_CACHE_HOME:-~/.cache}/msadtalker/simple-whip-server)
set -euo pipefail

log() { printf '[install-whip-server] %s\n' "$*" >&2; }

dest="${MSADTALKER_WHIP_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msadtalker/simple-whip-server}"
if [ -f "$dest/.installed" ]; then
  exit 0
fi
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
if ! command -v npm >/dev/null 2>&1; then
  if command -v node >/dev/null 2>&1; then
    log "node without npm: install npm for this Node and run this again"
    exit 1
  fi
  log "installing nodejs npm (Debian)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    nodejs npm >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download writes into the current folder; the _apt user may not reach a temp folder.
if ! apt-get download -q simple-whip-server >/dev/null 2>&1; then
  $sudo apt-get update -qq
  apt-get download -q simple-whip-server >/dev/null 2>&1
fi
dpkg -x simple-whip-server_*.deb unpacked

rm -rf "$dest"
mkdir -p "$dest"
cp -r unpacked/usr/share/simple-whip-server/src "$dest/src"
rm -f "$dest/src/config.js"  # a link to /etc/simple-whip-server/config.js: ours instead
# The settings a test needs, from the environment (the package's defaults otherwise).
cat > "$dest/src/config.js" <<'JS'
module.exports = {
	janus: { address: process.env.WHIP_JANUS_WS || 'ws://127.0.0.1:8188' },
	port: parseInt(process.env.WHIP_PORT || '7080', 10),
	rest: '/whip',
	allowTrickle: true,
	strictETags: false,
	iceServers: []
};
JS
# The modules server.js and whip-janus.js require (the package's Depends: node-*).
cat > "$dest/package.json" <<'JSON'
{
  "name": "simple-whip-server-unpacked",
  "private": true,
  "dependencies": {
    "async": ">=3.2 <4",
    "body-parser": ">=1.20 <2",
    "colors": "1.4.0",
    "cors": ">=2.8 <3",
    "debug": ">=4.3 <5",
    "express": ">=4.18 <5",
    "websocket": ">=1.0.34 <2"
  }
}
JSON
log "npm install into $dest"
(cd "$dest" && npm install --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
touch "$dest/.installed"
log "installed: node $dest/src/server.js (WHIP_PORT, WHIP_JANUS_WS)"
