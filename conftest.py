"""Doctest setup for `pytest --doctest-modules quadkeras` (the tensorflow lane of scripts/run_tests.sh).

Each docstring example runs from a fresh Keras session with fixed seeds, so auto-generated layer
names (`dense`, not `dense_12`) and random draws do not depend on which examples ran before.
"""

import gc
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads (through keras)
import keras  # noqa: E402

# The apps define their absl flags on the process-wide FLAGS when imported, and several define
# the same flag (`--model`), so one process can import only one app. The apps run as
# subprocesses in tests/faults; here only `quickstart` (which imports `train`) is collected,
# the one app module with a docstring example.
collect_ignore = [f"quadkeras/cli/{app}.py" for app in
                  ("auto_build", "bsq", "convert", "export", "quadratize", "summary")]

_PACKAGE = pathlib.Path(__file__).resolve().parent / "quadkeras"


@pytest.fixture(autouse=True)
def _fresh_keras_session(request):
    if _PACKAGE not in request.node.path.parents:
        yield  # tests/conftest.py sets up the unit tests
        return
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def pytest_collection_finish(session):
    """Keep what collection imported out of the garbage collector's full passes.

    Keras' `clear_session()` (after every test and around every doctest) runs `gc.collect()`,
    which walked the ~0.5M objects of TensorFlow / torch / JAX, Keras, quadkeras and the test
    modules each time (~0.2 s per call measured, more as the heap grows). They live as long as
    the process, so they are moved to the permanent generation once (`gc.freeze()`); what a
    test creates is still collected at its end. Cuts no check, only the repeated walk. The
    first `clear_session()` imports what it needs (torch: `torch._dynamo`), so it runs first.
    """
    keras.backend.clear_session()
    gc.freeze()
