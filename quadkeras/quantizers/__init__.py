"""Quantizers with straight-through gradients: one base class, one module per method.

`get(spec)` accepts a `Quantizer`, a string spec (grammar in `quadkeras.quantizers.spec`:
``name[:bits][:option]...``) or a config dict.

Example:

>>> from quadkeras import quantizers
>>> quantizers.get("dorefa:2").bits
2
>>> sorted(quantizers.QUANTIZERS)[:3]  # "bsq": BSQ's bit planes, registered by quadkeras.bsq
['bsq', 'dorefa', 'fakequant']
"""

from quadkeras.quantizers.base import Quantizer
from quadkeras.quantizers.binary import XNOR, Ternary
from quadkeras.quantizers.dorefa import DoReFa
from quadkeras.quantizers.fakequant import FakeQuant
from quadkeras.quantizers.lqnet import LQNet
from quadkeras.quantizers.lsq import LSQ
from quadkeras.quantizers.lsq_mq import LSQModelQuantization
from quadkeras.quantizers.maxabs import MaxAbs
from quadkeras.quantizers.nonuniform import NonUniform
from quadkeras.quantizers.pact import PACT
from quadkeras.quantizers.spec import QUANTIZERS, deserialize, get, serialize

# The methods and the spec / Keras-config round trip; the spec grammar's pieces (ALIASES,
# parse_spec) and the wrappers' clone stay in quadkeras.quantizers.spec, the base class's
# helpers (register, REGISTRY, is_quantizer_parameter) in quadkeras.quantizers.base.
__all__ = ["DoReFa", "FakeQuant", "LQNet", "LSQ", "LSQModelQuantization", "MaxAbs", "NonUniform",
           "PACT", "QUANTIZERS", "Quantizer", "Ternary", "XNOR", "deserialize", "get", "serialize"]
