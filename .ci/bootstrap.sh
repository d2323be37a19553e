#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine with Python 3.11: system packages (only the
# missing ones), a virtual environment in .venv, and the project with the requested extras.
# Usage: source .ci/bootstrap.sh <profile>   profile: serve | test
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile="${1:-serve}"
cd "$repo"

# Bold only on a terminal: CI logs and pipes get plain text.
if [ -t 2 ]; then
  log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }
else
  log() { printf '[bootstrap] %s\n' "$*" >&2; }
fi

python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  log "Python >= 3.11 is required (found $("$python_bin" --version 2>&1))"; exit 1
fi

# --- system packages -------------------------------------------------------------------
apt_packages=(espeak-ng ffmpeg libportaudio2)
if [ "$profile" = test ]; then apt_packages+=(chromium pulseaudio sox); fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# Real media servers the broadcast tests start themselves (nginx-rtmp, ...): test profile only.
if [ "$profile" = test ] && [ -f scripts/install-media-servers.sh ]; then
  bash scripts/install-media-servers.sh
fi

# --- virtual environment ---------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$python_bin" -m venv .venv
fi
py=.venv/bin/python

extras="live"
[ "$profile" = test ] && extras="live,neural,export,triton,dev"
# One stamp per pyproject.toml version, listing the extras installed with it: `serve` after
# `run` finds its extras already there and installs nothing.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
have_extras() {
  [ -f "$stamp" ] || return 1
  local extra
  for extra in ${1//,/ }; do
    grep -qx "$extra" "$stamp" || return 1
  done
}
if ! have_extras "$extras"; then
  "$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if [ "$profile" = test ] && ! "$py" -c 'import torch' >/dev/null 2>&1; then
    # The CPU build of torch: a plain `pip install torch` pulls ~3 GB of CUDA libraries.
    log "installing torch (CPU build)"
    "$py" -m pip install -q "torch==2.13.*" 2>/dev/null \
      || "$py" -m pip install -q "torch>=2.3,<2.15" --index-url https://download.pytorch.org/whl/cpu
  fi
  log "installing msadtalker[$extras]"
  # The build backend's deprecation chatter goes to a log; it is shown only on failure.
  if ! "$py" -m pip install -q -e ".[$extras]" > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    exit 1
  fi
  tr ',' '\n' <<<"$extras" >> "$stamp"
fi
# The Triton test server's own venv (PyTriton pins numpy < 2): tests/test_triton.py. The script
# does nothing when the venv is ready. An explicit exit: `source ... && pytest` disables set -e.
if [ "$profile" = test ] && ! bash scripts/install-pytriton.sh; then
  log "scripts/install-pytriton.sh failed: tests/test_triton.py needs .cache/pytriton-venv"
  exit 1
fi
export PATH="$repo/.venv/bin:$PATH"
