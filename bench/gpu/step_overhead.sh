#!/bin/bash
# Issue #26's GPU rows in one prepared run: bench/step_overhead.py on the card, compute regime
# (batch 128, 32x32 px: on a GPU the CIFAR step is bound by per-layer work), plain PyTorch
# eager / torch.compile (on CUDA) against quadkeras on torch (eager, jit_compile=True) and jax
# (jit). For a lent GPU machine whose image has torch and jax but no TensorFlow / Keras:
# keras, namex and optree travel as wheels in .whl (see docs/benchmarks.md).
#   bash bench/gpu/step_overhead.sh        (on the device: results in $OUT)
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
KERAS_BACKEND=torch python3 -c "import keras, torch, jax; print('keras', keras.__version__, 'torch', torch.__version__, 'jax', jax.__version__, torch.cuda.get_device_name(), jax.devices())" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
M=${M:-qresnet14,resnet20,resnet20_lsq}  # e.g. M=resnet20_lsq
B="python3 bench/step_overhead.py --models=$M --regimes=compute --rounds=3 --steps=10 --warmup=3"
SECONDS=0
PARTS=${PARTS:-"torch_eager jax_compiled torch_compiled"}  # e.g. PARTS=torch_compiled T3=540
for part in $PARTS; do
  case $part in
    torch_eager) timeout ${T1:-120} $B --backends=torch --modes=eager 2>&1 | tee "$OUT/$part.txt" ;;
    jax_compiled) timeout ${T2:-150} $B --backends=jax --modes=compiled 2>&1 | tee "$OUT/$part.txt" ;;
    torch_compiled) timeout ${T3:-270} $B --backends=torch --modes=compiled 2>&1 | tee "$OUT/$part.txt" ;;
    *) echo "unknown part $part"; exit 1 ;;
  esac
  echo "$part done ${SECONDS}s"
done
