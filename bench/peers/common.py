"""Shared pieces of the peer benches (`tfmot_vs_quadkeras.py`, `hgq2_vs_quadkeras.py`).

Run with the peers' own venv (`bench/peers/setup.sh`) and quadkeras from the checkout:

    PYTHONPATH=$PWD bench/peers/.venv/bin/python bench/peers/<bench>.py ...

* `load_arrays`: normalised float NHWC train/test arrays of a `quadkeras.data` set (seeded subsets).
* `build_resnet20`: the CIFAR ResNet-20 of `quadkeras.models.build_model("resnet20")` (same layer
  names, PyTorch-style padding, BN momentum 0.9 / eps 1e-5), written against any Keras-like
  `layers` namespace (`tf_keras.layers` for TFMOT) with a pluggable conv factory (HGQ2's
  `QConv2D`); `copy_weights` then gives it the quadkeras model's weights (same start point).
* `train`: seeded SGD epochs (same batch order for every framework); `logits`, `accuracy`.
* `step_times`: ms per training step of several compiled models, interleaved round by round
  on one fixed batch (the ratios are measured side by side in one run).
"""

import time

import numpy as np

STAGES = ((16, 1), (32, 2), (64, 2))  # (filters, first-block stride), 3 blocks each
BN = {"momentum": 0.9, "epsilon": 1e-5}


def load_arrays(name, n_train=0, n_test=0, seed=0):
    """(x_train, y_train, x_test, y_test, num_classes): float32 images normalised with the
    set's channel statistics, int labels; `n_*` > 0 draw a seeded subset (class mix kept)."""
    from quadkeras.data import load_data, seeded_subset

    d = load_data(name)
    mean = np.asarray(d.mean, "float32").reshape(1, 1, 1, -1)
    std = np.asarray(d.std, "float32").reshape(1, 1, 1, -1)

    def prep(x, y, n):
        x, y = seeded_subset(x, y, n, seed)
        return (x.astype("float32") / 255.0 - mean) / std, np.asarray(y).reshape(-1).astype("int32")

    return (*prep(d.x_train, d.y_train, n_train), *prep(d.x_test, d.y_test, n_test), d.num_classes)


def plain_conv(layers):
    """Conv factory for `build_resnet20`: a bias-free `layers.Conv2D`."""
    def conv(name, filters, size, stride, padding, role):
        return layers.Conv2D(filters, size, strides=stride, padding=padding, use_bias=False, name=name)
    return conv


def build_resnet20(layers, model_cls, input_shape, num_classes, conv=None, dense=None):
    """ResNet-20 with quadkeras' layer names. `conv(name, filters, size, stride, padding, role)`
    makes each conv (role: "stem", "block" or "shortcut"); `dense(name, units)` the head."""
    conv = conv or plain_conv(layers)
    dense = dense or (lambda name, units: layers.Dense(units, name=name))

    def conv_bn(x, filters, size, stride, name, role):
        if stride != 1 and size == 3:  # PyTorch padding=1 at stride 2: explicit symmetric pad
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same" if size == 3 else "valid"
        x = conv(name, filters, size, stride, padding, role)(x)
        return layers.BatchNormalization(name=f"{name}_bn", **BN)(x)

    inputs = layers.Input(input_shape, name="image")
    x = layers.ReLU(name="stem_conv_relu")(conv_bn(inputs, 16, 3, 1, "stem_conv", "stem"))
    in_filters = 16
    for s, (filters, first_stride) in enumerate(STAGES, start=1):
        for b in range(1, 4):
            p, stride = f"stage{s}_block{b}", first_stride if b == 1 else 1
            y = layers.ReLU(name=f"{p}_conv1_relu")(conv_bn(x, filters, 3, stride, f"{p}_conv1", "block"))
            y = conv_bn(y, filters, 3, 1, f"{p}_conv2", "block")
            short = x
            if stride != 1 or in_filters != filters:
                short = conv_bn(x, filters, 1, stride, f"{p}_shortcut", "shortcut")
            x = layers.ReLU(name=f"{p}_out")(layers.Add(name=f"{p}_add")([y, short]))
            in_filters = filters
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return model_cls(inputs, dense("logits", num_classes)(x), name="resnet20")


WEIGHT_NAMES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def _short(variable):
    """'stem_conv/kernel:0' (tf_keras) or 'kernel' (Keras 3) -> 'kernel'."""
    return variable.name.split("/")[-1].split(":")[0]


def layer_weights(model):
    """{layer name: {weight name: numpy}} of the conv/dense/BN weights (quantizer state left out)."""
    out = {}
    for layer in model.layers:
        found = {}
        for v in layer.weights:
            if _short(v) in WEIGHT_NAMES:
                found.setdefault(_short(v), np.asarray(v.numpy()))
        if found:
            out[layer.name] = found
    return out


def copy_weights(source, target):
    """Assign `source`'s conv/dense/BN weights to `target`'s layers of the same name (also
    inside quadkeras `QuantizeWrapper`s and HGQ2 layers); returns how many were copied."""
    src = layer_weights(source)
    copied = 0
    for layer in target.layers:
        if layer.name not in src:
            continue
        for v in layer.weights:
            name = _short(v)
            if name in src[layer.name] and tuple(v.shape) == src[layer.name][name].shape:
                v.assign(src[layer.name][name])
                copied += 1
    return copied


def count_params(model):
    """Trainable + non-trainable parameters of conv/dense/BN layers (no quantizer state)."""
    return sum(w.size for ws in layer_weights(model).values() for w in ws.values())


def compile_sgd(model, optimizers, losses, lr, **compile_kwargs):
    """SGD(momentum 0.9) + sparse CE from logits, for tf_keras or Keras 3 namespaces
    (`compile_kwargs`, e.g. jit_compile, go to `model.compile`)."""
    model.compile(optimizer=optimizers.SGD(lr, momentum=0.9),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
    return model


def train(model, x, y, epochs, batch_size, seed):
    """`epochs` of `fit` with the batch order drawn from `seed` (identical for every model);
    returns the wall seconds spent."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def logits(model, x):
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def accuracy(out, y):
    return float((np.asarray(out).argmax(-1) == y).mean())


def step_times(models, x, y, batch_size, rounds=5, steps=5, warmup=3):
    """{name: median ms/step} of `model.train_on_batch` on one fixed batch, for compiled
    `models` ({name: model}), measured round-robin so every model sees the same machine load."""
    xb, yb = x[:batch_size], y[:batch_size]
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(xb, yb)
    samples = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(xb, yb)
            samples[name].append((time.perf_counter() - start) / steps * 1e3)
    return {name: float(np.median(s)) for name, s in samples.items()}
