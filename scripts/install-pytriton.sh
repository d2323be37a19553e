#!/usr/bin/env bash
# The Triton test server's own venv: nvidia-pytriton 0.7.0 (it bundles a tritonserver binary)
# pins numpy < 2, which the project's venv does not use, so it lives apart, in
# .cache/pytriton-venv (git-ignored). tests/test_triton.py finds it there (or via
# $MSADTALKER_PYTRITON_PYTHON).
# Idempotent: a venv that imports its packages and was made for this requirement list is kept.
# Any failure exits non-zero with pip's log: `.ci/bootstrap.sh test` runs this and stops there.
# Its tritonserver's Python backend stub links libpython: tests/triton_server.py puts the
# interpreter's lib/ on LD_LIBRARY_PATH itself; this script checks that the library resolves.
# Usage: scripts/install-pytriton.sh      (called by `.ci/bootstrap.sh test`)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install-pytriton] %s\n' "$*" >&2; }

venv=.cache/pytriton-venv
requirements=("nvidia-pytriton==0.7.0" "onnxruntime>=1.18,<2")
stamp="$venv/.msadtalker-requirements"
ready() {
  [ -x "$venv/bin/python" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "${requirements[*]}" ] \
    && "$venv/bin/python" -c "import pytriton, onnxruntime" >/dev/null 2>&1
}
if ready; then
  exit 0
fi

if [ -n "${PYTHON:-}" ]; then
  python="$PYTHON"
elif [ -x .venv/bin/python ]; then
  python="$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')/bin/python3"
else
  python=python3.11
fi
log "installing ${requirements[*]} into $venv (~125 MB download)"
"$python" -m venv --clear "$venv"
log_file="$venv/pip-install.log"
if ! "$venv/bin/pip" install --quiet "${requirements[@]}" >"$log_file" 2>&1; then
  cat "$log_file" >&2
  log "FAILED: pip could not install ${requirements[*]} (log above)"
  exit 1
fi
"$venv/bin/python" -c "import pytriton, onnxruntime"

# The stub for this Python version must find libpython (from the interpreter's LIBDIR or the
# system's library path, e.g. Debian's libpython3.11), or every model fails to load.
read -r version libdir < <("$venv/bin/python" -c \
  'import sys, sysconfig; print(f"{sys.version_info[0]}.{sys.version_info[1]}", sysconfig.get_config_var("LIBDIR"))')
stub="$("$venv/bin/python" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)')"
stub="$stub/tritonserver/python_backend_stubs/$version/triton_python_backend_stub"
if [ ! -x "$stub" ]; then
  log "FAILED: nvidia-pytriton has no Python backend stub for Python $version ($stub)"
  exit 1
fi
if missing="$(LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$stub" \
  | grep 'not found')"; then
  log "FAILED: the Triton Python backend stub cannot load: ${missing//$'\t'/}"
  log "install the shared libpython$version (Debian: apt-get install libpython$version)"
  exit 1
fi
printf '%s' "${requirements[*]}" >"$stamp"
log "ready: $("$venv/bin/python" -c 'import importlib.metadata as m; print("nvidia-pytriton", m.version("nvidia-pytriton"))')"
