#!/usr/bin/env bash
# Run the test suite once per Keras backend, each in its own process.
# tensorflow and torch run everything but the `slow` end-to-end runs; jax runs the subset
# marked `jax` plus the `slow` ones (JAX is the fastest backend for them on CPU).
# The docstring examples of the package (`--doctest-modules quadkeras`, set up by the root
# conftest.py) run once, in the tensorflow process.
#
# The backends' processes are independent, so by default they run side by side in two lanes
# (tensorflow | torch then jax): most tests are single-threaded Python, and two lanes keep both
# CPU cores of a CI machine busy. Each line is prefixed with its backend; each lane ends with
# the slowest tests (--durations). PARALLEL=0 runs the backends one after another instead.
set -uo pipefail
PY=${1:-.venv/bin/python}
BACKENDS=${BACKENDS:-"tensorflow torch jax"}
PARALLEL=${PARALLEL:-1}
TESTS=${TESTS:-tests}  # what pytest collects (a file or folder, for a quick check of this script)
DOCTESTS=${DOCTESTS-quadkeras}  # whose docstring examples the tensorflow process runs ("" = none)

run_backend() {  # run_backend <backend>: one pytest process, lines prefixed with the backend
  local backend=$1 sel=()
  if [ "$backend" = jax ]; then sel=(-m "jax or slow"); fi
  if [ "$backend" = tensorflow ] && [ -n "$DOCTESTS" ]; then sel=(--doctest-modules $DOCTESTS); fi
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=3 "$PY" -m pytest -q -p no:cacheprovider \
    --durations=15 "${sel[@]}" $TESTS 2>&1 | sed -u "s/^/[$backend] /"
  return "${PIPESTATUS[0]}"
}

run_lane() {  # run_lane <backend>...: the backends one after another; fails if any failed
  local status=0 backend
  for backend in "$@"; do run_backend "$backend" || status=1; done
  return $status
}

read -r -a all <<< "$BACKENDS"
if [ "$PARALLEL" = 1 ] && [ "${#all[@]}" -gt 1 ]; then
  run_lane "${all[0]}" & first=$!
  run_lane "${all[@]:1}" & rest=$!
  status=0
  wait "$first" || status=1
  wait "$rest" || status=1
else
  run_lane "${all[@]}"; status=$?
fi
echo "=== tests: $([ $status = 0 ] && echo passed || echo FAILED) (backends: $BACKENDS) ==="
exit $status
