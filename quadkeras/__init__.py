"""quadkeras: quadratic neural networks and quantization-aware training for Keras 3.

`import quadkeras` registers everything a saved `.keras` file may reference (layers,
quantizers and wrappers, BSQ wrappers, the training optimizer and LR schedules), so
`keras.models.load_model(path)` works after it, also on a run's last.keras. The rest
(`quadkeras.training`'s trainer, BSQ's conversion and callbacks, export, interop, ...)
loads on first use: `quadkeras.<subpackage>` is imported when first read (PEP 562).

Example:

>>> import quadkeras
>>> from quadkeras.layers import QuadConv2D
>>> model = quadkeras.models.build_model("qresnet14")
>>> model.count_params() > 0
True
"""

import importlib

__version__ = "0.1.0"

# The modules that register serializable objects (and the packages the example uses).
from quadkeras import layers, models, quantize, quantizers  # noqa: E402,F401
from quadkeras.bsq import activation as _bsq_activation  # noqa: E402,F401
from quadkeras.bsq import legacy as _bsq_legacy  # noqa: E402,F401
from quadkeras.bsq import quantizer as _bsq_quantizer  # noqa: E402,F401
from quadkeras.quantize import fold as _fold  # noqa: E402,F401
from quadkeras import optimizers  # noqa: E402,F401

SUBPACKAGES = ("autobuilder", "backend", "bsq", "cli", "data", "export", "interop", "layers", "models",
               "optimizers", "quadratize", "quantize", "quantizers", "report", "summary", "training", "utils")


def __getattr__(name):
    """`quadkeras.<subpackage>`, imported on first access."""
    if name in SUBPACKAGES:
        return importlib.import_module(f"quadkeras.{name}")
    raise AttributeError(f"module 'quadkeras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBPACKAGES))
