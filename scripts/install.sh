#!/usr/bin/env bash
# Create the virtual environment and install quadkeras with its test extras (dev, jax, onnx).
# torch==2.13.0 goes in FIRST: on CPU machines it resolves to a local CPU wheel; any other
# torch requirement would pull several GB of CUDA packages.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if ! $VENV/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0" || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
$PIP install -q -e ".[dev,jax,onnx]"
