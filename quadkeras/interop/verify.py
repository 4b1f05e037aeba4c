"""Check a converted model: Keras forward vs the PyTorch (QuadraLib layout) forward, with a verdict.

`check_logits(model, state)` runs both networks on random images and compares the logits
against a tolerance relative to their size: `max |logit(keras) - logit(torch)| <= rtol *
max |logit(torch)|`. The default `rtol` is `default_rtol(model) = SAFETY * depth * eps32`:
float32 rounds every result to a relative `eps32` = 2**-23 ≈ 1.2e-7, each weighted layer (a
conv or dense; a quadratic layer counts twice, since the relative errors of its two
factors add in the product) adds its own rounding in a different summation order on each
side, so the expected difference grows with `depth`; `SAFETY` = 100 covers the measured
spread with a wide margin (measured ratio difference / (depth * eps32): 0.4 for QuadraLib's
QResNet14 checkpoint on every backend, 0.06 for random ResNet-20/QResNet14, up to 2.4 for
random QVGG-7 and 1.2 for VGG-13). QResNet14 (depth 28): rtol 3.3e-4; QVGG-7 (15): 1.8e-4;
ResNet-20 (22): 2.6e-4. A real mismatch (another padding, a wrong flatten order, another BN
epsilon) is orders of magnitude larger. A difference that is not finite (NaN/inf: the
network overflows float32 on the inputs) never passes. The Keras forward runs with TF32 /
reduced-precision matmuls off (`float32_precision`), the PyTorch one on the CPU.

`readback_differences` is the exact check of a written checkpoint: every tensor read back
must equal the model's (NaN never equals anything, so it can never read as a 0 difference).

Example:

>>> from quadkeras.models import build_model
>>> from quadkeras.interop import state_dict_of
>>> model = build_model("resnet20")
>>> round(default_rtol(model) / EPS32)
2200
>>> check_logits(model, state_dict_of(model)).passed  # doctest: +SKIP
True
"""

import dataclasses
import math

import numpy as np
import keras

from quadkeras import backend
from quadkeras.layers import QuadLayerBase
from quadkeras.models.model_config import config_of

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23
SAFETY = 100  # margin over the measured difference / (depth * EPS32) (at most 2.4)


def layer_depth(model):
    """Weighted layers of `model` (convs, dense), a quadratic one counting 2."""
    return sum(2 if isinstance(layer, QuadLayerBase) else 1 for layer in model.layers
               if getattr(layer, "kernel", None) is not None)


def default_rtol(model):
    """`SAFETY * layer_depth(model) * EPS32`: the default relative logit tolerance."""
    return SAFETY * max(layer_depth(model), 1) * EPS32


@dataclasses.dataclass
class LogitCheck:
    """The result of `check_logits`: `difference` = max |logit(keras) - logit(torch)|, `scale`
    = max |logit(torch)|, passed when both are finite and difference <= rtol * scale."""

    difference: float
    scale: float
    rtol: float

    @property
    def limit(self):
        return self.rtol * self.scale

    @property
    def finite(self):
        return math.isfinite(self.difference) and math.isfinite(self.scale)

    @property
    def passed(self):
        return self.finite and self.difference <= self.limit

    def line(self):
        """One line for the report: the numbers and PASS / FAIL."""
        return (f"max |logit(keras) - logit(torch)| = {self.difference:.3g} on random inputs, "
                f"tolerance {self.rtol:.3g} x max |logit| {self.scale:.3g} = {self.limit:.3g}: "
                f"{'PASS' if self.passed else 'FAIL'}")


def torch_logits(config, state, images):
    """Logits of `quadkeras.interop.torch_nets` built from `config` with `state` loaded
    (`strict=True`; missing BN counters are filled in), on NHWC float `images`, in eval mode."""
    import torch  # noqa: PLC0415 (optional dependency)

    from quadkeras.interop.torch_nets import build_torch_model  # noqa: PLC0415

    net = build_torch_model(config)
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
    for key, value in net.state_dict().items():
        tensors.setdefault(key, value) if key.endswith("num_batches_tracked") else None
    net.load_state_dict(tensors, strict=True)
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()


def float32_precision():
    """Full float32 matmuls / convs for the Keras forward while the tolerance is checked: on
    an Ampere-or-later GPU, torch (cuDNN convs) and TensorFlow default to TF32 (10-bit
    mantissa, ~1e-3 relative) and JAX to its "default" matmul precision, which the float32
    tolerance does not cover. Restored afterwards; nothing changes on a CPU. A context
    manager (`quadkeras.backend.active().float32_precision`)."""
    return backend.active().float32_precision()


def _both_logits(model, state, images, batch, seed):
    config = config_of(model)
    if config is None:
        raise ValueError(f"Invalid model {model.name!r}: no model config attached; build it with "
                         "quadkeras.models.build_model or import_torch_checkpoint.")
    if images is None:
        shape = (batch, *config["input_shape"])
        images = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    with float32_precision():
        keras_logits = np.asarray(keras.ops.convert_to_numpy(model(images, training=False)))
    return keras_logits, torch_logits(config, state, images)  # torch_nets runs on the CPU


def check_logits(model, state, rtol=None, images=None, batch=8, seed=0):
    """`LogitCheck` of `model` (a zoo-built Keras model carrying its config) against the
    PyTorch network holding `state`, on `images` (default: `batch` standard-normal images);
    `rtol` defaults to `default_rtol(model)`."""
    rtol = default_rtol(model) if rtol is None else float(rtol)
    if not (math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"Invalid rtol={rtol!r}: expected a finite number > 0.")
    keras_logits, reference = _both_logits(model, state, images, batch, seed)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, reported as FAIL
        difference = float(np.max(np.abs(keras_logits.astype("float64") - reference)))
        scale = float(np.max(np.abs(reference.astype("float64"))))
    return LogitCheck(difference, scale, rtol)


def readback_differences(written, expected):
    """(keys of `expected` whose tensor in `written` is missing or differs in shape or any
    element, max |difference| over all keys). NaN equals nothing and propagates into the
    maximum, so a NaN can never read as a 0 difference."""
    differing, worst = [], 0.0
    for key, want in expected.items():
        got = written.get(key)
        want = np.asarray(want)
        if got is None or np.shape(got) != want.shape:
            differing.append(key)
            worst = math.inf
            continue
        got = np.asarray(got)
        if not np.array_equal(got, want):
            differing.append(key)
        if want.size:
            with np.errstate(invalid="ignore", over="ignore"):
                gap = float(np.max(np.abs(got.astype("float64") - want.astype("float64"))))
            worst = math.nan if math.isnan(gap) or math.isnan(worst) else max(worst, gap)
    return differing, worst
