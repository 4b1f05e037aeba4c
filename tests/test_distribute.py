"""`distribute="data_parallel"`: 2 simulated devices equal 1 device, exact resume, bad input.

The 2-device runs need their own process (jax: XLA_FLAGS before import; tensorflow: logical
CPUs before TF starts; torch: two gloo processes under torchrun), so the end-to-end test
drives `bench/distribute_overhead.py` small, for the backend of this test process.
"""

import argparse
import importlib.util
import os
import types

import keras
import pytest

from quadkeras.training import resolve_config
from quadkeras.training.distribute import JaxPlan, check_batch, make_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tolerances of the 2-replica run vs the 1-device run at the same global batch (digits
# quickstart model, 2 epochs x 2 steps, lr 0.1). The math is the same; only summation order
# differs (all-reduce, global-batch BN moments in two passes vs the fused BN kernel).
LOSS_ATOL = 1e-3  # per-epoch training loss
WEIGHT_RTOL = 5e-3  # max |w1 - w2| / max(1, max |w1|), any weight (BN moving variance ~50)
RESUME_RTOL = 1e-5  # 2-replica: killed after epoch 1 + resumed vs straight


def _bench():
    spec = importlib.util.spec_from_file_location(
        "distribute_overhead", os.path.join(REPO, "bench", "distribute_overhead.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.jax
def test_bad_distribute_values_are_one_line_errors():
    with pytest.raises(ValueError, match=r"Invalid distribute='ddp': expected one of"):
        resolve_config({"distribute": "ddp"})
    with pytest.raises(ValueError, match=r"Invalid batch_size=64: .*over 3 replicas; expected a multiple of 3"):
        check_batch({"batch_size": 64, "distribute": "data_parallel"}, 3)
    check_batch({"batch_size": 64, "distribute": "data_parallel"}, 4)
    assert make_plan({"distribute": "", "batch_size": 7}).replicas == 1
    digits = types.SimpleNamespace(x_test=range(45), x_val=None)
    with pytest.raises(ValueError, match=r"Invalid max_test=45: jax DataParallel .* test split has 45 examples"):
        JaxPlan.check_data(types.SimpleNamespace(replicas=2), resolve_config({"max_test": 45}), digits)
    JaxPlan.check_data(types.SimpleNamespace(replicas=3), resolve_config({"max_test": 45}), digits)
    with pytest.raises(ValueError, match=r"Invalid eval_batch_size=20: .* evaluation batch has 20 examples"):
        JaxPlan.check_data(types.SimpleNamespace(replicas=3), resolve_config({"eval_batch_size": 20}), digits)
    if keras.backend.backend() == "torch" and "WORLD_SIZE" not in os.environ:
        with pytest.raises(ValueError, match=r"Invalid distribute='data_parallel' for backend 'torch': launch .* torchrun"):
            make_plan({"distribute": "data_parallel", "batch_size": 64})


@pytest.mark.jax
def test_two_replicas_match_one_device_and_resume_exactly():
    bench = _bench()
    args = argparse.Namespace(epochs=2, batch_size=64, max_train=128, max_test=64, quant="", timeout=600)
    r = bench.compare(keras.backend.backend(), args)
    assert len(r["loss_dp"]) == len(r["loss_single"]) == 2
    assert r["max_loss_gap"] < LOSS_ATOL, r
    assert r["max_weight_gap"] < WEIGHT_RTOL, r
    assert r["max_resume_weight_gap"] < RESUME_RTOL and r["max_resume_loss_gap"] < RESUME_RTOL, r
    assert r["loss_dp"][1] < r["loss_dp"][0]  # it trained
    assert "\n" not in r["bad_batch_error"] and "Invalid batch_size=63" in r["bad_batch_error"]
