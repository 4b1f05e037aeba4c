#!/bin/bash
# BSQ's full reference recipe (issue #27 parts 4 / 5) on a lent GPU, in slices: every call runs the
# sweep for at most SLICE seconds (default 540, inside a 10-minute device command) and exits; the next
# call continues where it stopped (finished stages are reused, a killed engine run resumes from its
# last finished epoch). When every stage is done it prints DONE and the table.
# Per alpha: search 350 epochs (lr 0.1, step at 250, Prun_Int 100, coupled wd 1e-4, 4-bit activations,
# FC bias in bits) then finetune 300 epochs (lr 0.01, steps at 150 / 250), crop + flip, batch 128,
# evaluation batch 100, from the imported PyTorch checkpoint (its accuracy and the 8-bit conversion
# are evaluated once). As bench/gpu/session.sh: torch backend, NumPy input pipeline (the GPU image has
# no TensorFlow), keras (+ namex, optree) importable, the shared data at ./shared/data.
#   MODEL=resnet20 bash bench/gpu/bsq_recipe.sh      # BSQ's ResNet-20 (default)
#   MODEL=qresnet14 bash bench/gpu/bsq_recipe.sh     # QuadraLib's QResNet14, per-branch bits
# Environment: RUNS (state folder; must survive between calls: a warm machine, or carried back),
# SLICE (seconds per call), ALPHAS (comma list; default the recipe's 0,0.002,0.005,0.01),
# EXTRA (more bench/bsq_sweep.py flags, e.g. "--max_train=256 --epochs=1 --ft_epochs=1"),
# PY (python), OUT (a folder that receives table.md / sweep.json / sweep.png and progress.txt).
set -u
MODEL=${MODEL:-resnet20}
case "$MODEL" in
  resnet20) CKPT=${CKPT:-shared/data/bsq/resnet20_cifar10_fp.pth.tar} ;;
  qresnet14) CKPT=${CKPT:-shared/data/quadralib/qresnet14_cifar10.pth} ;;
  *) echo "error: Invalid MODEL=$MODEL: expected resnet20 or qresnet14." >&2; exit 1 ;;
esac
RUNS=${RUNS:-runs/bsq_recipe_$MODEL}
SLICE=${SLICE:-540}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-torch} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export PYTHONPATH=$PWD:${PYTHONPATH:-}
mkdir -p "$RUNS"
ARGS=(--recipe=reference --from_torch="$CKPT" --model="$MODEL" --dataset=cifar10 --data_pipeline=numpy
      --out="$RUNS" --json="$RUNS/sweep.json" --plot="$RUNS/sweep.png")
[ -n "${ALPHAS:-}" ] && ARGS+=(--alphas="$ALPHAS")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && ARGS+=($EXTRA)
SECONDS=0
timeout "$SLICE" $PY bench/bsq_sweep.py "${ARGS[@]}" >> "$RUNS/sweep.log" 2>&1
rc=$?
# progress: epochs done per stage (from each engine run's state.json)
progress() {
  for state in $(find "$RUNS" -name state.json | sort); do
    $PY -c "import json, os, sys; s = json.load(open(sys.argv[1])); \
print(f\"{os.path.relpath(os.path.dirname(sys.argv[1]), sys.argv[2])}: epoch {s['epoch']} of {s['config']['epochs']}\")" \
      "$state" "$RUNS"
  done
}
progress | tee "$RUNS/progress.txt"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; cp -f "$RUNS"/progress.txt "$RUNS"/*.json "$OUT"/ 2>/dev/null; fi
if [ $rc -eq 0 ]; then
  [ -n "${OUT:-}" ] && cp -f "$RUNS"/table.md "$RUNS"/sweep.png "$OUT"/ 2>/dev/null
  echo "DONE ($MODEL, ${SECONDS}s this call)"
  cat "$RUNS/table.md"
elif [ $rc -eq 124 ]; then
  echo "SLICE ENDED after ${SECONDS}s: call again to continue ($MODEL, state in $RUNS)"
else
  echo "FAILED (exit $rc); last lines of $RUNS/sweep.log:"
  tail -5 "$RUNS/sweep.log"
  exit "$rc"
fi
