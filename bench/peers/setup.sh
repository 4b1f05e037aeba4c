#!/usr/bin/env bash
# Optional, separate environment for the peer benchmarks (issue #18): TFMOT (Keras 2 / tf_keras)
# and HGQ2 (Keras 3) next to quadkeras' own dependencies. Never a runtime dependency of
# quadkeras and never used by `make test` or .ci/run.
#
#   bash bench/peers/setup.sh [python3] [bench/peers/.venv]
#
# quadkeras itself is NOT installed here: the benches import it from the checkout (PYTHONPATH).
# Pins: tensorflow-cpu and tf_keras must share a minor version (2.21); TFMOT 0.8.1 declares
# absl-py~=1.2, which conflicts with keras/quadkeras' absl-py>=2, so TFMOT goes in with
# --no-deps and its other requirements are listed explicitly.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-python3}
VENV=${2:-bench/peers/.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, exactly as scripts/install.sh does (CPU wheel; anything else pulls CUDA wheels).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0" || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
# quadkeras' runtime dependencies (pyproject.toml) plus LiteRT and JAX.
$PIP install -q "keras>=3.15" "tensorflow-cpu==2.21.0" "absl-py>=2.0" "numpy>=1.26" "pyyaml>=6.0" \
  "scikit-learn>=1.3" "ai-edge-litert>=1.2" "jax>=0.4.30" "jaxlib>=0.4.30"
# Peers: tf_keras matching TF, HGQ2 (Keras 3), TFMOT (Keras 2) without its stale absl pin.
$PIP install -q "tf_keras==2.21.0" "HGQ2==0.2.0"
$PIP install -q --no-deps "tensorflow-model-optimization==0.8.1"
$PIP install -q "dm-tree" "mock" "six" "scipy"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for p in ("keras", "tensorflow-cpu", "tf_keras", "tensorflow-model-optimization", "HGQ2",
          "quantizers", "torch", "jax", "ai-edge-litert"):
    try:
        print(f"{p:32s} {md.version(p)}")
    except md.PackageNotFoundError:
        print(f"{p:32s} MISSING")
PY
