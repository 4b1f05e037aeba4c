"""`QuantizerHost`: the one base of every layer that holds quantizers.

A host wraps a layer (`.layer`) and holds one quantizer per *slot* (`kernel_quantizer`,
`input_quantizer`, ...). A subclass declares its slots once, in `SLOTS` (the only slot
table: quantization schemes read it too), and how each slot's quantizer is built
(`build_slot`); the host owns the rest:

- construction: each `<slot>_quantizer` argument is copied (`quadkeras.quantizers.get`
  accepts it), named after its slot (variables at `<host>/<slot>/<variable>`, e.g.
  `conv1/kernel/step`) and given the slot's role when it has none;
- `quantizers()`, `quantization_bits()` and the config (`<slot>_quantizer` entries);
- variable order: quantizers are tracked before the wrapped layer, in `VARIABLE_ORDER`, so
  `trainable_variables` lists them first (an optimizer's saved slots are matched to
  variables by position, and files written before quantizers owned their variables listed
  them so);
- save and load of its own variables through an explicit spec (`variable_spec`, as Keras'
  `Dense` saves its kernel and bias): none for quantizer slots, whose quantizers save
  themselves under their attribute (`kernel_quantizer/vars`). Files written before
  quantizers owned their variables (`conv1/kernel_step`: tests/data/legacy_quantizers.keras)
  list the quantizers' variables under the host itself (`legacy_variables`: trainable
  ones first, then the others, each in `VARIABLE_ORDER`); those load too.

Hosts that hold a kernel return it from `quantized_kernel()` as a NumPy array (the kernel
the wrapped layer computes with at inference).

Example:

>>> import keras
>>> from quadkeras.quantize import QuantizeWrapper
>>> w = QuantizeWrapper(keras.layers.Dense(2), kernel_quantizer="lsq:4", input_quantizer="lsq:4")
>>> w.build((None, 3))
>>> [v.path for v in w.trainable_variables]
['dense/input/step', 'dense/kernel/step', 'dense/dense/kernel', 'dense/dense/bias']
>>> [s.name for s in QuantizeWrapper.SLOTS]
['kernel', 'input', 'output', 'branch', 'product', 'bias']
"""

import collections

import keras

from quadkeras.quantizers.base import LOADED
from quadkeras.quantizers.spec import clone, deserialize, serialize

Slot = collections.namedtuple("Slot", ["name", "role"])
Slot.__doc__ = "A quantizer slot of a host: its name and the role its quantizer gets by default."


class QuantizerHost(keras.layers.Wrapper):
    """Base of the layers that hold quantizers; see the module docstring.

    Subclasses set `SLOTS` (a tuple of `Slot`, in the order `quantizers()` and the config list
    them), optionally `VARIABLE_ORDER` (slot names in the order the quantizers are tracked and
    built; default: `SLOTS`' order), and override `build_slot(slot, quantizer, input_shape)`.

    Args:
        layer: the wrapped layer.
        *quantizers, <slot>_quantizer: for each slot (positionally in `SLOTS`' order, or by
            keyword), anything `quadkeras.quantizers.get` accepts, or None.
        **kwargs: Keras layer arguments.
    """

    SLOTS = ()
    VARIABLE_ORDER = None

    def __init__(self, layer, *quantizers, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"Invalid layer {layer!r} for {type(self).__name__}: expected a Keras layer.")
        given = self._slot_arguments(quantizers, kwargs)
        self.check_slots(layer, given)
        # Keras' Layer init, then the quantizers, then the wrapped layer (what `Wrapper.__init__`
        # would set first): Keras tracks sublayers in assignment order, so the quantizers'
        # variables come first in `weights` and `trainable_variables`
        keras.layers.Layer.__init__(self, **kwargs)
        roles = {slot.name: slot.role for slot in self.SLOTS}
        for slot in self.variable_order():
            quantizer = clone(deserialize(given[slot]), name=slot)
            if quantizer is not None and quantizer.role is None:
                quantizer.role = roles[slot]
            setattr(self, f"{slot}_quantizer", quantizer)
        self.layer = layer

    @classmethod
    def _slot_arguments(cls, positional, kwargs):
        """{slot: spec} of the `<slot>_quantizer` arguments (positional ones in `SLOTS`' order);
        they are taken out of `kwargs`."""
        names = cls.slot_names()
        if len(positional) > len(names):
            raise TypeError(f"{cls.__name__}() takes the layer and at most {len(names)} quantizers "
                            f"({', '.join(names)}), {len(positional)} were given.")
        given = dict(zip(names, positional))
        for slot in names:
            key = f"{slot}_quantizer"
            if key in kwargs:
                if slot in given:
                    raise TypeError(f"{cls.__name__}() got multiple values for argument '{key}'.")
                given[slot] = kwargs.pop(key)
        return {slot: given.get(slot) for slot in names}

    def check_slots(self, layer, given):
        """Subclasses: refuse a `layer` or a {slot: spec} combination they cannot hold
        (one-line ValueError); called before anything is built."""

    # ------------------------------------------------------------------- slots
    @classmethod
    def slot_names(cls):
        """The slot names, in `SLOTS`' order."""
        return tuple(slot.name for slot in cls.SLOTS)

    @classmethod
    def variable_order(cls):
        """Slot names in the order the quantizers are tracked, built and (in old files) saved."""
        order = cls.slot_names() if cls.VARIABLE_ORDER is None else tuple(cls.VARIABLE_ORDER)
        if sorted(order) != sorted(cls.slot_names()):
            raise TypeError(f"{cls.__name__}.VARIABLE_ORDER {order} is not an order of its SLOTS "
                            f"{cls.slot_names()}.")
        return order

    def quantizer(self, slot):
        """The quantizer in `slot` (None when that slot is empty)."""
        return getattr(self, f"{slot}_quantizer")

    def quantizers(self):
        """The quantizers that are set, in `SLOTS`' order."""
        return [q for q in (self.quantizer(slot) for slot in self.slot_names()) if q is not None]

    def quantization_bits(self):
        """{"weight": bits of the kernel quantizer, "activation": bits of the input quantizer};
        None where that slot is empty or the host has none (`QuantizeOutput`: both None, its
        layer's input is not quantized by it)."""
        held = {slot: self.quantizer(slot) for slot in self.slot_names()}
        return {role: None if held.get(slot) is None else held[slot].current_bits()
                for role, slot in (("weight", "kernel"), ("activation", "input"))}

    # ------------------------------------------------------------------- build
    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        for slot in self.variable_order():
            quantizer = self.quantizer(slot)
            if quantizer is not None:
                self.build_slot(slot, quantizer, input_shape)
        self.built = True

    def build_slot(self, slot, quantizer, input_shape):
        """Build `quantizer` (held in `slot`) for inputs of `input_shape`; default: the
        wrapped layer's output shape."""
        quantizer.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ---------------------------------------------------------- save and load
    def variable_spec(self):
        """The variables this host saves under its own name, in file order (quantizers save
        their own; a host with variables of its own lists them here)."""
        return []

    def save_own_variables(self, store):
        for i, variable in enumerate(self.variable_spec()):
            store[f"{i}"] = variable

    def load_own_variables(self, store):
        load_own_entries(self, store, self.variable_spec(), self.quantizers_in_variable_order())

    def quantizers_in_variable_order(self):
        """The quantizers that are set, in `VARIABLE_ORDER`."""
        return [q for q in (self.quantizer(slot) for slot in self.variable_order()) if q is not None]

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update({f"{slot}_quantizer": serialize(self.quantizer(slot)) for slot in self.slot_names()})
        return config


def legacy_variables(quantizers):
    """The variables of `quantizers` as files written before quantizers owned their variables
    list them under the host: trainable ones first, then the others, each in the given order."""
    return ([v for q in quantizers for v in q.trainable_weights]
            + [v for q in quantizers for v in q.non_trainable_weights])


def load_own_entries(layer, store, spec, quantizers=()):
    """Assign the entries a weights store lists under `layer` itself to the variables `spec`
    (in file order) or, in an older file, to the `quantizers`' variables (`legacy_variables`;
    the quantizers then expect no entries of their own). One-line error for another count."""
    keys = len(store.keys())
    legacy = legacy_variables(quantizers) if quantizers else None
    if keys == len(spec):
        variables = spec
    elif legacy is not None and keys == len(legacy):
        variables = legacy
        for quantizer in quantizers:
            quantizer.init_state = LOADED
    else:
        expected = f"{len(spec)}" + ("" if legacy is None else f" or {len(legacy)} (its quantizers' "
                                     "variables, as older versions saved them)")
        raise ValueError(f"Invalid weights file for layer '{layer.name}': it lists {keys} variables "
                         f"on the layer itself, expected {expected}.")
    for i, variable in enumerate(variables):
        variable.assign(store[f"{i}"])


def load_host_variables(host, store, quantizers):
    """`load_own_entries` for a layer that holds `quantizers` (in build order) and has no
    variables of its own, without being a `QuantizerHost` (`quadkeras.bsq.BSQActivation`)."""
    load_own_entries(host, store, [], quantizers)
