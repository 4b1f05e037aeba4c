"""Training at odd batch sizes (1, 3) does not crash the process (issue #28).

The quickstart model segfaulted at `--batch_size=3` / `1` on torch and tensorflow: its ResNet
shortcut, a strided 1x1 conv, ran on oneDNN's strided 1x1 NHWC backward-weights kernel, which
writes past its workspace (uxlfoundation/oneDNN#6035; segfaults on AVX-512 hosts from
in_channels 8, on AVX2 hosts below 8, where on 1 thread a 4-channel shortcut at batch 3
segfaulted here). `fused_ops.conv2d` now runs it as a stride-1 conv of the subsampled input.

A subprocess per backend (a segfault is a failed test, not a dead pytest), run once, from the
TensorFlow process: a step of the quickstart model at batch 1 and 3, and of a ResNet whose
shortcut has 4 input channels, on one thread (where the AVX2 kernel crashes).
"""

import os
import subprocess
import sys

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="subprocesses of both backends, started once")

STEPS = r"""
import keras, numpy as np
if keras.backend.backend() == "torch":
    import torch; torch.set_num_threads(1)
else:
    import tensorflow as tf; tf.config.threading.set_intra_op_parallelism_threads(1)
from quadkeras.models import build_model
from quadkeras.optimizers.sgd import CoupledDecaySGD
narrow = {"family": "resnet", "input_shape": [32, 32, 3], "num_classes": 5, "stem_filters": 4,
          "stages": [{"filters": 4, "blocks": 1, "stride": 1}, {"filters": 8, "blocks": 1, "stride": 2}],
          "conv": {"type": "quad", "neuron": "ours", "use_bias": False}, "use_bias": False}
rng = np.random.default_rng(0)
for config, batches in (("configs/models/quickstart_qresnet.yaml", (1, 3, 3)), (narrow, (3, 3, 1))):
    model = build_model(config)
    model.compile(optimizer=CoupledDecaySGD(0.1, momentum=0.9, l2=5e-4, global_clipnorm=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for n in batches:
        x = rng.standard_normal((n, *model.input_shape[1:])).astype("float32")
        loss = float(model.train_on_batch(x, rng.integers(0, model.output_shape[-1], n)))
        assert np.isfinite(loss), (n, loss)
print("odd batches ok")
"""


@TF_ONLY
def test_odd_batch_sizes_train_without_crashing():
    procs = {}
    for backend in ("tensorflow", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
        procs[backend] = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", STEPS], cwd=REPO,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
    for backend, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:  # the 2-thread AVX2 kernel hangs instead of crashing
            proc.kill()
            out, err = proc.communicate()
        assert proc.returncode == 0 and "odd batches ok" in out, (backend, proc.returncode, err[-2000:])
