"""Loading BSQ `.keras` files written before the bit planes were a quantizer.

Until 2026-12-04 a BSQ layer was a `BitQuantWrapper` host with the planes, scales and
precisions as its own variables (`conv/pos_planes`, `conv/scale`, `conv/pos_bias_planes`, ...),
saved positionally under the host. Now it is a `QuantizeWrapper` whose kernel (and bias)
slot holds a `quadkeras.bsq.BitPlanes` quantizer (`conv/kernel/pos_planes`, ...).

`BitQuantWrapper` here is that `QuantizeWrapper`, under the old registered name: Keras
addresses a layer's weights in a file by its class name, so a file's `bit_quant_wrapper_3`
entries find this class. Its config (`bits`, `representation`, `quantize_bias`, `per_branch`)
becomes the quantizers', and the host's old positional entries are assigned to the
quantizers' variables. Nothing else is different: it is a `QuantizeWrapper` with `BitPlanes`,
and `quadkeras.bsq.bsq_layers` lists it. Files it writes load with it again. New models never
create it (`to_bsq` makes `QuantizeWrapper`s).

Covered by `tests/test_bsq_legacy.py` with `tests/data/legacy_bsq*.keras`, written at commit
a22423f by the script in `tests/data/README.md`.
"""

import keras
import numpy as np

from quadkeras.bsq.quantizer import BitPlanes  # noqa: F401 (registers "bsq" for the spec below)
from quadkeras.quantize.wrapper import QuantizeWrapper
from quadkeras.quantizers.base import LOADED

OLD_ARGUMENTS = ("bits", "representation", "quantize_bias", "per_branch")


@keras.saving.register_keras_serializable(package="quadkeras")
class BitQuantWrapper(QuantizeWrapper):
    """A `QuantizeWrapper` with `BitPlanes` quantizers, loaded from a file of the old layout."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "bits" in config:  # the old layout: the host's own arguments
            old = {key: config.pop(key, None) for key in OLD_ARGUMENTS}
            spec = {"name": "bsq", "bits": int(old["bits"]), "representation": old["representation"] or "bits",
                    # files written before per-branch bits hold one fused kernel
                    "per_branch": bool(old["per_branch"])}
            config["kernel_quantizer"] = spec
            config["bias_quantizer"] = {**spec, "per_branch": True} if old["quantize_bias"] else None
        return super().from_config(config, custom_objects)

    def old_variables(self):
        """The quantizers' variables in the order the old host saved its own: the trainable
        ones (per part: planes or normalised weight, scale; kernel parts, then the bias), then
        the others (per kernel part its precision, `reg_strength`, the bias precision)."""
        kernel, bias = self.kernel_quantizer, self.bias_quantizer
        weighted = ("pos_planes", "neg_planes", "scale") if kernel.representation == "bits" else ("norm", "scale")
        parts = [(kernel, b) for b in kernel.branches] + ([(bias, None)] if bias is not None else [])
        trainable = [q.part_variable(kind, b) for q, b in parts for kind in weighted]
        others = ([kernel.part_variable("precision", b) for b in kernel.branches] + [kernel.reg_strength]
                  + ([bias.part_variable("precision")] if bias is not None else []))
        return trainable + others

    def load_own_variables(self, store):
        count = len(store.keys())
        if not count:  # written by this version: the quantizers load their own entries
            return super().load_own_variables(store)
        variables = self.old_variables()
        if count != len(variables):
            raise ValueError(f"Invalid weights file for layer '{self.name}': it lists {count} variables on the "
                             f"layer itself, expected {len(variables)} (a BitQuantWrapper of this config).")
        for i, variable in enumerate(variables):
            variable.assign(np.reshape(np.asarray(store[f"{i}"]), tuple(variable.shape)))
        if self.bias_quantizer is not None:  # one regulariser strength per layer in the old file
            self.bias_quantizer.reg_strength.assign(self.kernel_quantizer.reg_strength)
        for quantizer in self.quantizers():
            quantizer.init_state = LOADED  # their own (absent) entries are skipped
