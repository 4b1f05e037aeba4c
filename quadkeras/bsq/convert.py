"""Model-level BSQ conversions (functional / Sequential models, via `clone_model`).

* `to_bsq(model, bits=8, scheme=None, layers=None, abits=0, quantize_shortcuts=False)`:
  full-precision model -> bit representation (every Conv2D / DepthwiseConv2D / Dense /
  quadratic layer by default, except the 1x1 shortcut convs, which stay float as in BSQ);
  `scheme` (a {layer: bits} dict or another BSQ model, BSQ's `--dict`) sets per-layer bits
  (`name[a]` keys: one branch kernel of a quadratic layer; a plain name sets all its branches);
  `abits` > 0 replaces the block ReLUs (every ReLU but the first, the stem's) by
  `BSQActivation(abits)` (ReLU6 / PACT + per-batch max-abs STE quantizer).
* `to_representation(model, "float" | "bits")`: same scheme, other representation
  (finetune with the scheme fixed, then back to bits), exactly.
* `to_float(model)`: plain Keras model whose kernels are the represented (quantized)
  kernels ("float weights").
* `scheme_of(model)`, `bsq_layers(model)`, `set_bsq_decay(model, alpha)`,
  `requantize_model(model, adjust=True, increase=True)`.
* `fix_activation_scales(model, images)`: copy whose `BSQActivation` grids have a fixed top
  (the max over calibration images) instead of each batch's max: one output per image,
  whatever else is in its batch (what export uses); `activation_scales(model)`.

Example:

>>> import keras
>>> fp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
>>> bsq = to_bsq(fp, bits=4)
>>> scheme_of(bsq)
{'fc': 4}
>>> type(to_float(bsq).get_layer("fc")).__name__
'Dense'
"""

import keras
import numpy as np

from quadkeras.bsq.activation import BSQActivation
from quadkeras.bsq.quantizer import BitPlanes
from quadkeras.layers.kernel_call import FIRST_ORDER_LAYERS, supports_kernel_call
from quadkeras.models.model_config import carry
from quadkeras.quantize.wrapper import QuantizeWrapper
from quadkeras.utils.validation import check_int_range


def is_bsq_layer(layer):
    """True for a layer whose kernel is held in BSQ form (a `QuantizeWrapper` with `BitPlanes`)."""
    return isinstance(layer, QuantizeWrapper) and isinstance(layer.kernel_quantizer, BitPlanes)


def bsq_layers(model):
    """The BSQ layers of a model (`is_bsq_layer`), in order."""
    return [layer for layer in model.layers if is_bsq_layer(layer)]


def bsq_quantizers(layer):
    """The `BitPlanes` of a BSQ layer: its kernel's, then its bias' (when held in bits)."""
    return [q for q in (layer.kernel_quantizer, layer.bias_quantizer) if q is not None]


def bsq_layer(layer, bits=8, representation="bits", quantize_bias=False, per_branch=True, name=None):
    """`layer` with its kernel (and, `quantize_bias`, its bias) in BSQ form, `bits` planes."""
    spec = BitPlanes(bits, representation=representation, per_branch=per_branch)
    return QuantizeWrapper(layer, kernel_quantizer=spec, bias_quantizer=spec if quantize_bias else None,
                           name=name or layer.name)


def part_key(layer_name, branch=None):
    """Scheme / report key of a kernel part: the layer name, `name[a]` for branch a."""
    return layer_name if branch is None else f"{layer_name}[{branch}]"


def split_key(key):
    """(layer name, branch or None) of a scheme key (`part_key`'s inverse)."""
    if key.endswith("]") and "[" in key:
        name, branch = key[:-1].rsplit("[", 1)
        return name, branch
    return key, None


def precisions(layer):
    """{scheme key: bits} of a BSQ layer's kernel parts (`name`, or `name[a]`, ... per branch)."""
    q = layer.kernel_quantizer
    return {part_key(layer.name, b): q.current_precision(b) for b in q.branches}


def scheme_of(model):
    """{layer name: current weight precision} of a BSQ model; a quadratic layer with per-branch
    bits gives one key per branch kernel (`name[a]`, `name[b]`, `name[c]`)."""
    return {key: bits for layer in bsq_layers(model) for key, bits in precisions(layer).items()}


def sync_inner_weights(layer):
    """Write the represented kernel (and bias) into the frozen weights of the wrapped layer
    (inspection, float export)."""
    for quantizer, variable in ((layer.kernel_quantizer, layer.layer.kernel),
                                (layer.bias_quantizer, getattr(layer.layer, "bias", None))):
        if quantizer is not None:
            variable.assign(quantizer.dequantized().astype(variable.dtype))


def _part_bits(scheme, name, branch, default):
    """Bits of a part of layer `name`: its `name[x]` key, else the layer's key, else `default`."""
    if scheme is None:
        return default
    key = part_key(name, branch)
    if key in scheme:
        return scheme[key]
    if name in scheme:
        return scheme[name]
    part = "kernel" if branch is None else f"kernel_{branch}"
    raise ValueError(f"Invalid scheme for layer {name!r}: no bits for its {part} (expected a key "
                     f"{key!r} or {name!r}).")


def _scheme_dict(scheme):
    if scheme is None or isinstance(scheme, dict):
        return scheme
    if isinstance(scheme, keras.Model):
        if not bsq_layers(scheme):  # its scheme would be {}: a model with nothing quantized
            raise ValueError(f"Invalid scheme=<model {scheme.name!r}>: it holds no BSQ layers "
                             "(QuantizeWrapper with BitPlanes); expected a BSQ model (to_bsq's output) or a "
                             "{layer: bits} dict.")
        return scheme_of(scheme)
    raise ValueError(f"Invalid scheme={scheme!r}: expected None, a {{layer: bits}} dict or a BSQ model.")


def _clone_layer(layer):
    return layer.__class__.from_config(layer.get_config())


def _copy_weights_by_name(src, dst):
    values = {w.name: w for w in src.weights}
    for w in dst.weights:
        if w.name in values:  # through NumPy: never share (JAX-donated) buffers between models
            w.assign(keras.ops.convert_to_numpy(values[w.name]))


def _clone(model, clone_function):
    return carry(model, keras.models.clone_model(model, clone_function=clone_function))


def block_activations(model):
    """Names of the ReLU layers after the first one (the stem's output stays float in BSQ)."""
    relus = [layer.name for layer in model.layers
             if isinstance(layer, keras.layers.ReLU)
             or (isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] == "relu")]
    return relus[1:]


def shortcut_convs(model):
    """Names of the 1x1 projection-shortcut convs ("shortcut" / "downsample" in the name)."""
    return [layer.name for layer in model.layers
            if tuple(getattr(layer, "kernel_size", ())) == (1, 1)
            and ("shortcut" in layer.name or "downsample" in layer.name)]


def to_bsq(model, bits=8, scheme=None, layers=None, abits=0, quantize_shortcuts=False, quantize_bias=False):
    """Full-precision model -> BSQ bit representation (BSQ's `convert.py`).

    `abits` (0 = float activations): quantize the block activations as the paper's
    ResNet-20 runs (`BSQActivation`, see `block_activations`). `quantize_shortcuts`: also
    wrap the 1x1 shortcut convs (`shortcut_convs`; float and not counted in BSQ). An explicit
    `scheme` / `layers` selects exactly those layers. `quantize_bias`: biases of the wrapped
    first-order layers (ResNet-20: the FC) in bit form too, at the kernel's bits (BSQ's `--bin`).
    """
    abits = check_int_range("abits", int(abits), 0, 8)
    act_names = set(block_activations(model)) if abits else set()
    scheme = _scheme_dict(scheme)
    wanted = set(scheme) if scheme is not None else (set(layers) if layers is not None else None)
    if wanted is not None:
        wanted = {split_key(key)[0] for key in wanted}
        missing = sorted(wanted - {layer.name for layer in model.layers})
        if missing:
            raise ValueError(f"Invalid layer name {missing[0]!r} in scheme/layers: not in model {model.name!r}.")

    float_convs = set() if quantize_shortcuts or wanted is not None else set(shortcut_convs(model))

    def selected(layer):
        return (supports_kernel_call(layer) and (wanted is None or layer.name in wanted)
                and layer.name not in float_convs)

    def clone(layer):
        if selected(layer):
            with_bias = quantize_bias and isinstance(layer, FIRST_ORDER_LAYERS) and layer.use_bias
            return bsq_layer(_clone_layer(layer), bits=bits, quantize_bias=with_bias)
        if layer.name in act_names:
            return BSQActivation(abits, name=layer.name)
        return _clone_layer(layer)

    new = _clone(model, clone)
    for old, layer in zip(model.layers, new.layers):
        if is_bsq_layer(layer):
            _copy_weights_by_name(old, layer.layer)
            kernel = layer.kernel_quantizer
            kernel_bits = {b: int(_part_bits(scheme, old.name, b, bits)) for b in kernel.branches}
            kernel.set_value(keras.ops.convert_to_numpy(old.kernel),
                             kernel_bits if kernel.branches != [None] else kernel_bits[None])
            if layer.bias_quantizer is not None:  # first-order layers: the bias at the kernel's bits
                layer.bias_quantizer.set_value(keras.ops.convert_to_numpy(old.bias), kernel_bits[None])
            sync_inner_weights(layer)
        elif old.weights:
            layer.set_weights(old.get_weights())
    return new


def to_representation(model, representation):
    """Same layers and scheme with every BSQ layer in `representation` ("bits" / "float")."""
    def clone(layer):
        if is_bsq_layer(layer):
            q = layer.kernel_quantizer
            return bsq_layer(_clone_layer(layer.layer), bits=q.bits, representation=representation,
                             quantize_bias=layer.bias_quantizer is not None, per_branch=q.per_branch)
        return _clone_layer(layer)

    new = _clone(model, clone)
    for old, layer in zip(model.layers, new.layers):
        if is_bsq_layer(layer):
            _copy_weights_by_name(old.layer, layer.layer)
            for source, target in zip(bsq_quantizers(old), bsq_quantizers(layer)):
                for branch in source.branches:
                    target.set_codes(*source.get_codes(branch), branch=branch)
            sync_inner_weights(layer)
        elif old.weights:
            layer.set_weights(old.get_weights())
    return new


def to_float(model):
    """Plain Keras model with the represented (quantized) kernels as float weights."""
    def clone(layer):
        return _clone_layer(layer.layer if is_bsq_layer(layer) else layer)

    new = keras.models.clone_model(model, clone_function=clone)
    for old, layer in zip(model.layers, new.layers):
        if is_bsq_layer(old):
            sync_inner_weights(old)
            _copy_weights_by_name(old.layer, layer)
            layer.kernel.trainable = True
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = True
        elif old.weights:
            layer.set_weights(old.get_weights())
    return new


def set_bsq_decay(model, alpha):
    """Regulariser strength: each layer adds alpha * #params_l * n_l / #params * lasso_l.

    #params counts the bit-quantized biases too (BSQ's `total_param`)."""
    quantizers = [q for layer in bsq_layers(model) for q in bsq_quantizers(layer)]
    total = sum(q.num_params for q in quantizers)
    for q in quantizers:
        q.reg_strength.assign(float(alpha) / max(total, 1))
    return total


def requantize_model(model, adjust=True, increase=True):
    """Re-quantize every BSQ layer (growing on overflow if `increase`, then adjusting); new scheme."""
    for layer in bsq_layers(model):
        for q in bsq_quantizers(layer):
            q.requantize(adjust=adjust, increase=increase)
        sync_inner_weights(layer)
    return scheme_of(model)


def batch_scaled_activations(model):
    """The `BSQActivation` layers whose grid top is each batch's max (no fixed scale)."""
    return [layer for layer in model.layers if isinstance(layer, BSQActivation) and layer.scale is None]


def activation_scales(model):
    """{layer name: fixed grid top S, or None (per batch)} of the model's `BSQActivation`s."""
    return {layer.name: layer.scale for layer in model.layers if isinstance(layer, BSQActivation)}


def fix_activation_scales(model, images, batch_size=256):
    """A copy of `model` in which every per-batch `BSQActivation` has a fixed grid top S.

    BSQ (as the reference) quantizes a block activation on the grid S·k/(2^a−1) with S the
    max of the current batch, so an image's output depends on the other images of its batch.
    An exported model needs one output per image: here each layer's S becomes the max of what
    it quantizes over the calibration `images` (float model inputs), taken layer by layer in
    graph order with the earlier layers already fixed, so S does not depend on how `images`
    are split into batches of `batch_size`. On the calibration set nothing is clipped, and
    evaluated on `images` as one batch the copy gives the reference model's outputs (to float
    rounding). Non-finite activations are ignored. `model` itself is left unchanged.
    """
    images = np.asarray(images, "float32")
    if images.ndim < 2 or not len(images):
        raise ValueError(f"Invalid images of shape {images.shape} for fix_activation_scales: expected "
                         "at least one calibration image (e.g. 200 training images).")
    new = carry(model, keras.models.clone_model(model, clone_function=_clone_layer))
    new.set_weights(model.get_weights())
    acts = batch_scaled_activations(new)
    if not acts:
        return new
    probe = keras.Model(new.input, [layer.output for layer in acts])
    chunks = [images[i:i + batch_size] for i in range(0, len(images), int(batch_size))]

    def tops():  # per layer: max |output| over all chunks (its batch S, as the max maps to S)
        found = np.zeros(len(acts))
        for chunk in chunks:
            outputs = probe(chunk, training=False)
            for i, out in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
                value = np.abs(keras.ops.convert_to_numpy(out))
                found[i] = max(found[i], float(np.max(value[np.isfinite(value)], initial=0.0)))
        return found

    if len(chunks) == 1:  # one batch: every layer's batch S is already its calibration max
        for layer, top in zip(acts, tops()):
            layer.quantizer.scale = float(np.float32(top))
    else:
        for i, layer in enumerate(acts):  # graph order: the layers before it are fixed
            layer.quantizer.scale = float(np.float32(tops()[i]))
    return new
