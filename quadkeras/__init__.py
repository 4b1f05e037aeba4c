"""quadkeras: quadratic neural networks and quantization-aware training for Keras 3.

Example:

>>> import quadkeras
>>> from quadkeras.layers import QuadConv2D
>>> model = quadkeras.models.build_model("qresnet14")
>>> model.count_params() > 0
True
"""

__version__ = "0.1.0"

from quadkeras import layers  # noqa: E402,F401
from quadkeras import models  # noqa: E402,F401

# Everything a saved `.keras` file may reference (layers, quantizers and wrappers, BSQ
# wrappers, the training optimizer and LR schedules) is registered by `import quadkeras`,
# so `keras.models.load_model(path)` works after it, also on a run's last.keras.
from quadkeras import bsq  # noqa: E402,F401
from quadkeras import quantize  # noqa: E402,F401
from quadkeras import training  # noqa: E402,F401
