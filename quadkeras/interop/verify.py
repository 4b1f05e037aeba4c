"""Check a converted model: Keras forward vs the PyTorch (QuadraLib layout) forward.

Example:

>>> from quadkeras.models import build_model
>>> from quadkeras.interop import state_dict_of
>>> model = build_model("resnet20")
>>> torch_logit_difference(model, state_dict_of(model)) < 1e-4  # doctest: +SKIP
True
"""

import numpy as np
import keras

from quadkeras.models.model_config import config_of


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


def torch_logit_difference(model, state, images=None, batch=8, seed=0):
    """max |logit| difference between `model` (a zoo-built Keras model that carries its
    config, `quadkeras.models.model_config`) and the PyTorch network holding `state`, on `images` (default:
    `batch` standard-normal images)."""
    config = config_of(model)
    if config is None:
        raise ValueError(f"Invalid model {model.name!r}: no model config attached; build it with "
                         "quadkeras.models.build_model or import_torch_checkpoint.")
    if images is None:
        shape = (batch, *config["input_shape"])
        images = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    keras_logits = np.asarray(keras.ops.convert_to_numpy(model(images, training=False)))
    return float(np.abs(keras_logits - torch_logits(config, state, images)).max())
