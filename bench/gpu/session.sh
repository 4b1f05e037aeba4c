#!/bin/bash
# The GPU rows of bench/results/2026-11-26.md in one prepared run (#10 parity seeds, #11 LSQ on the
# whole CIFAR-10 train split, #12 GPU speed), for a lent GPU machine whose image has torch
# but no TensorFlow: quadkeras runs on the torch backend with its NumPy input pipeline.
# Needs keras (+ namex, optree) importable and the shared data at ./shared/data.
#   OUT=/tmp/gpu bash bench/gpu/session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch OMP_NUM_THREADS=4 PYTHONPATH=$PWD:${PYTHONPATH:-}
PY=python3
CKPT=shared/data/quadralib/qresnet14_cifar10.pth
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import keras, torch; print('keras', keras.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
# decode CIFAR-10 once into the cache (Pillow) before processes run side by side
SECONDS=0
$PY -c "from quadkeras.data import load_data; d = load_data('cifar10'); print('cifar10', d.x_train.shape, d.x_test.shape)"
echo "decode ${SECONDS}s"
# 1. speed, alone on the GPU
for mp in "" bfloat16; do
  timeout 120 $PY bench/train_throughput.py --models=qresnet14 --epochs=2 --max_train=25600 \
      --batch_size=256 --mixed_precision=$mp 2>&1 | grep '^{' | tee -a "$OUT/throughput.jsonl"
done
timeout 120 $PY bench/reference_parity.py --max_train=5000 --max_test=1000 --epochs=2 --batch_size=128 \
    --seeds=0 --backends=torch 2>&1 | tail -4 | tee "$OUT/parity_speed.log"
timeout 60 $PY bench/quad_layer.py --backends torch --repeats 5 2>&1 | tail -4 | tee "$OUT/quad_layer.log"
echo "speed part ${SECONDS}s"
# 2. side by side: LSQ fine-tunes of the imported QResNet14 and reference-parity seeds
LEFT=${LEFT:-270}
timeout $LEFT $PY bench/quad_lsq.py --model=$CKPT --wbits=4 --abits=4 --train_images=0 --epochs=4 \
    --batch_size=128 --lr=0.01 > "$OUT/lsq_w4a4.log" 2>&1 &
timeout $LEFT $PY bench/quad_lsq.py --model=$CKPT --wbits=2 --abits=2 --train_images=0 --epochs=4 \
    --batch_size=128 --lr=0.01 > "$OUT/lsq_w2a2.log" 2>&1 &
timeout $LEFT $PY bench/reference_parity.py --max_train=5000 --max_test=1000 --epochs=8 --batch_size=128 \
    --seeds=0,1,2,3,4,5 --backends=torch --json="$OUT/parity.json" > "$OUT/parity.log" 2>&1 &
wait
echo "all ${SECONDS}s"
grep -E "acc|Error|error" "$OUT/lsq_w4a4.log" | tail -5
grep -E "acc|Error|error" "$OUT/lsq_w2a2.log" | tail -5
tail -14 "$OUT/parity.log"
