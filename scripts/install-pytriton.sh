#!/usr/bin/env bash
# The Triton test server's own venv: nvidia-pytriton 0.7.0 (it bundles a tritonserver binary)
# pins numpy < 2, which the project's venv does not use, so it lives apart, in
# .cache/pytriton-venv (git-ignored). tests/test_triton.py finds it there (or via
# $MSADTALKER_PYTRITON_PYTHON) and skips its slow test, saying so, without it.
# Its tritonserver links libpython: tests/triton_server.py puts the interpreter's lib/ on
# LD_LIBRARY_PATH itself.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')/bin/python3}"
"$python" -m venv .cache/pytriton-venv
.cache/pytriton-venv/bin/pip install --quiet "nvidia-pytriton==0.7.0" "onnxruntime>=1.18,<2"
.cache/pytriton-venv/bin/python -c "import pytriton, onnxruntime; print('pytriton ready')"
