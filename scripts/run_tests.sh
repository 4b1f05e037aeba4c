#!/usr/bin/env bash
# Run the test suite once per Keras backend, each in its own process.
# tensorflow and torch run everything but the `slow` end-to-end runs; jax runs the subset
# marked `jax` plus the `slow` ones (JAX is the fastest backend for them on CPU).
set -uo pipefail
PY=${1:-.venv/bin/python}
BACKENDS=${BACKENDS:-"tensorflow torch jax"}
status=0
for backend in $BACKENDS; do
  echo "=== KERAS_BACKEND=$backend ==="
  if [ "$backend" = jax ]; then sel=(-m "jax or slow"); else sel=(); fi
  KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=3 "$PY" -m pytest -q "${sel[@]}" tests || status=1
done
exit $status
