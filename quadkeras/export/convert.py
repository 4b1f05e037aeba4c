"""SavedModel writing and LiteRT conversion (float, dynamic-range, full-int8 PTQ, QAT -> int8).

All LiteRT files are converted from one SavedModel with builtin ops only (no Flex/Select ops),
so `ai_edge_litert` runs them without extra delegates.

Example:

>>> import keras, tempfile
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
>>> sm = write_saved_model(model, tempfile.mkdtemp())
>>> len(to_litert(sm, "float")) > 0
True
"""

import contextlib
import os

import keras
import numpy as np

from quadkeras.export.dead_channels import live_dead_channels
from quadkeras.export.quad_qat import branch_fake_quant
from quadkeras.quantize import quantized_layers
from quadkeras.quantizers import FakeQuant
from quadkeras.utils.progress import track
from quadkeras.utils.validation import check_choice

LITERT_MODES = ("float", "dynamic", "int8", "qat")


def fake_quant_quantizers(model):
    """Every quantizer in `model` (`QuantizeWrapper`: kernel, input, output, branch;
    `QuantizeOutput`: output)."""
    return [q for layer in quantized_layers(model) for q in layer.quantizers()]


def has_fake_quant(model):
    """True if the model carries `fakequant` quantizers (what the converter turns into int8)."""
    return any(isinstance(q, FakeQuant) for q in fake_quant_quantizers(model))


@contextlib.contextmanager
def frozen_quantizers(model):
    """Trace quantizers with their stored ranges only (no first-batch data-init branch).

    The data-init `where(initialized, var, f(x))` makes min/max depend on the input, which the
    converter cannot fold into constants (FakeQuant then stays a Flex op). After training the
    flag is set, so dropping the branch does not change the values.
    """
    with contextlib.ExitStack() as stack:
        for q in fake_quant_quantizers(model):
            stack.enter_context(q.stored_parameters_only())
        yield


def input_signature(model):
    shape = tuple(model.input_shape)
    return [keras.InputSpec(shape=(None,) + shape[1:], dtype="float32")]


def write_saved_model(model, path, calibration_images=None):
    """Write an inference SavedModel (`serve` endpoint, dynamic batch) and return its path.

    With `calibration_images`, quantized quadratic layers also get a calibrated fake-quant on
    their fused linear output (see `quad_qat.branch_fake_quant`; for QAT -> int8 only).
    Dead `ours` product channels (branch-BN scale 0) are traced as an equal, int8-convertible
    function (`dead_channels.live_dead_channels`).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    extra = (branch_fake_quant(model, calibration_images) if calibration_images is not None
             else contextlib.nullcontext())
    with live_dead_channels(model), frozen_quantizers(model), extra:
        archive.add_endpoint("serve", lambda x: model(x, training=False),
                             input_signature=input_signature(model))
        archive.write_out(path, verbose=False)
    return path


def to_litert(saved_model_dir, mode, representative_data=None, num_samples=200):
    """LiteRT flatbuffer bytes for `mode` in float, dynamic, int8 (PTQ) or qat.

    int8 needs `representative_data` (float inputs, NHWC): the converter calibrates activation
    ranges on `num_samples` of them and emits int8 kernels with int8 builtins only. qat uses the
    ranges stored in the model's fake-quant ops (no data needed).
    """
    import tensorflow as tf  # noqa: PLC0415

    check_choice("mode", mode, LITERT_MODES)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if representative_data is None:
            raise ValueError("Invalid representative_data=None for litert_int8: expected float "
                             "input images (array) or a dataset name such as 'digits'.")
        samples = np.asarray(representative_data, "float32")[:num_samples]

        def gen():
            for i in track(range(len(samples)), label="int8 calibration", unit_name="image"):
                yield [samples[i:i + 1]]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def write_bytes(path, content):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path
