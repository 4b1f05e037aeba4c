#!/usr/bin/env bash
# Run the test suite once per Keras backend, each in its own process.
# tensorflow and torch run everything; jax runs the fast subset marked `jax`.
set -uo pipefail
PY=${1:-.venv/bin/python}
BACKENDS=${BACKENDS:-"tensorflow torch jax"}
status=0
for backend in $BACKENDS; do
  echo "=== KERAS_BACKEND=$backend ==="
  if [ "$backend" = jax ]; then sel=(-m jax); else sel=(); fi
  KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=3 "$PY" -m pytest -q "${sel[@]}" tests || status=1
done
exit $status
