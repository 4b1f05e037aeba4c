"""Quantized models under `torch.compile` (Keras' `jit_compile=True` on the torch backend).

Every quantizer, wrapper and quadratic layer traces without a graph break of its own (no
Python branch on tensor values, no `.item()`, no class defined inside the step), so a
compiled quantized train step computes what the eager one does, with a batch size that
changes between steps (the last partial batch of an epoch) too.
"""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="torch.compile: the torch backend's jit")


def _tiny_quantized_model(method="lsq"):
    """Conv2D + QuadConv2D + Dense, as few layers as that takes: Keras breaks the dynamo graph
    at every layer call, so each layer is one more compiled frame (forward and backward)."""
    from quadkeras.layers import QuadConv2D
    from quadkeras.quantize import quantize_model, scheme_from_flags

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = QuadConv2D(6, 3, padding="same", strides=2, activation="relu")(h)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    if method is None:
        return model
    return quantize_model(model, scheme_from_flags(method, 4, 4, quantize_first_last=True))


def _train(jit_compile, batches, method="lsq", fast=False):
    from quadkeras.quantize import initialize_quantizers
    from quadkeras.training import fast_torch_forward

    model = _tiny_quantized_model(method)
    initialize_quantizers(model, batches[0][0])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    assert fast_torch_forward(model, fast) == fast
    losses = [float(model.train_on_batch(x, y)) for x, y in batches]
    return losses, [keras.ops.convert_to_numpy(v) for v in model.weights]


@pytest.mark.parametrize("fast", [False, True], ids=["keras_forward", "fast_forward"])
def test_compiled_quantized_step_matches_eager(fast):
    """LSQ W4A4 on a conv + quadratic conv + dense net: four steps, the third with another
    batch size; losses and every weight (quantizer steps included) as eager (Keras' own
    forward), to 1e-5, with the compiled step tracing Keras' forward or the fast forward
    (what `quadkeras.training.train` compiles)."""
    import torch

    torch._dynamo.reset()
    rng = np.random.default_rng(0)
    batches = [(rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 10, (n,)))
               for n in (4, 4, 3, 4)]
    eager_losses, eager_weights = _train(False, batches)
    compiled_losses, compiled_weights = _train(True, batches, fast=fast)
    np.testing.assert_allclose(compiled_losses, eager_losses, atol=1e-5)
    assert len(compiled_weights) == len(eager_weights)
    for compiled, eager in zip(compiled_weights, eager_weights):
        np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert eager_losses[0] != eager_losses[1]  # the steps trained


def test_quantizers_trace_without_graph_breaks_of_their_own():
    """The quantized model's forward has as many dynamo graphs as the float one: our layers add
    no break (Keras' own layer call accounts for the float model's)."""
    import torch

    from quadkeras.quantize import initialize_quantizers

    x = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    counts = {}
    for name, model in (("float", _tiny_quantized_model(None)), ("lsq", _tiny_quantized_model())):
        if name == "lsq":
            initialize_quantizers(model, x)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(lambda t, m=model: m(t, training=True))(torch.as_tensor(x))
        counts[name] = explained.graph_count
    assert counts["lsq"] == counts["float"], counts


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_lsq_fused_op_compiles_forward_and_backward_as_one_graph(monkeypatch, per_channel):
    """LSQ's fused op (`native_scaled_round`, the torch `ScaledRound` Function with the step
    floor) traces forward and backward in one dynamo graph (`fullgraph=True` raises on a break)
    with its threshold cache empty, and its gradients match eager. A cache written inside
    the Function's backward broke the graph at every quantizer of a compiled step (ResNet-20
    LSQ W4A4 overhead-bound 1.47x -> 0.89x plain PyTorch eager) while an earlier eager
    backward in the same process hid it from this suite."""
    import torch

    from quadkeras.layers import fused_ops

    monkeypatch.setattr(fused_ops, "_BOUNDS", {})  # nothing cached from earlier tests
    torch._dynamo.reset()

    def loss(x, s):
        y = fused_ops.native_scaled_round(x, s, -8.0, 7.0, step_scale=0.1, floor=1e-8)
        return (y * torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape)).sum()

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((2, 4, 4, 3)), dtype=torch.float32)
    step = [0.1, 1e-9, 0.3] if per_channel else [0.1]  # 1e-9: below the floor, no gradient
    grads = []  # compiled first: an eager backward must not warm anything up for it
    for fn in (torch.compile(loss, backend="eager", fullgraph=True), loss):
        xs = x.clone().requires_grad_()
        s = torch.tensor(step, requires_grad=True)
        fn(xs, s).backward()
        grads.append((xs.grad.numpy(), s.grad.numpy()))
    for compiled, eager in zip(*grads):
        np.testing.assert_allclose(compiled, eager, atol=1e-6)
    if per_channel:
        assert grads[1][1][1] == 0.0 and grads[1][1][0] != 0.0


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_lsq_compiled_backward_sums_over_the_tensor_axes(per_channel):
    """Under torch.compile LSQ's step gradient is a sum over the tensor's own axes, not a dot
    product of `reshape(-1)` views: for a kernel, whose gradient comes from the convolution in
    another memory layout, inductor made the flattened reduction a scalar loop with index
    arithmetic (ResNet-20 LSQ W4A4 compiled at batch 2: 2.1 of ~11 ms a step; as sums 0.9 ms).
    The gradients still match eager."""
    import torch
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    from quadkeras.layers import fused_ops

    torch._dynamo.reset()
    recorder = AotEagerAndRecordGraphs()

    def loss(x, s):
        y = fused_ops.native_scaled_round(x, s, -8.0, 7.0, step_scale=0.1, floor=1e-8)
        return (y * torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape)).sum()

    rng = np.random.default_rng(0)
    # an HWIO kernel seen through the conv layout's permutation: a non-contiguous tensor
    x = torch.as_tensor(rng.standard_normal((5, 4, 3, 3)), dtype=torch.float32).permute(2, 3, 1, 0)
    step = [0.1, 0.2, 0.3, 0.4, 0.5] if per_channel else [0.1]
    grads = []
    for fn in (torch.compile(loss, backend=recorder, fullgraph=True), loss):
        xs = x.detach().clone().requires_grad_()
        s = torch.tensor(step, requires_grad=True)
        fn(xs, s).backward()
        grads.append((xs.grad.numpy(), s.grad.numpy()))
    for compiled, eager in zip(*grads):
        np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
    (backward,) = recorder.bw_graphs
    ops = [str(n.target) for n in backward.graph.nodes if n.op == "call_function"]
    assert not [op for op in ops if "dot" in op], ops
    assert sum("aten.sum" in op for op in ops) == 2, ops


@pytest.mark.parametrize("fast", [False, True], ids=["keras_forward", "fast_forward"])
def test_compiled_fit_does_not_recompile_per_step(monkeypatch, fast):
    """After the first epoch, a compiled `fit` adds no dynamo graph: nothing the step reads
    changes from step to step. Before `static_shape_torch_compile` traced Keras' op-naming
    counter as a constant, `ZeroPadding2D` (its `ops.pad` builds a new auto-named op per
    call) recompiled a frame on every step (the zoo's ResNet-20: ~5 s a step instead of
    0.2). Nor with the fast forward traced instead of Keras' (its plan is made on the first
    call). dynamo's "eager" backend: the guards and graphs are dynamo's, no inductor time."""
    import functools

    import torch
    from torch._dynamo.utils import counters

    from quadkeras.quantize import initialize_quantizers, quantize_model, scheme_from_flags
    from quadkeras.training import static_shape_torch_compile

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    static_shape_torch_compile()
    torch._dynamo.reset()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, strides=2)(keras.layers.ZeroPadding2D(1)(inputs))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    model = quantize_model(keras.Model(inputs, outputs),
                           scheme_from_flags("lsq", 4, 4, quantize_first_last=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 6, 6, 3), dtype=np.float32), rng.integers(0, 10, (6,))
    initialize_quantizers(model, x[:2])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", jit_compile=True)
    from quadkeras.training import fast_torch_forward

    assert fast_torch_forward(model, fast) == fast
    graphs = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: graphs.append(counters["stats"]["unique_graphs"]))
    model.fit(x, y, batch_size=2, epochs=3, validation_data=(x, y), callbacks=[record],
              verbose=0, shuffle=False)
    assert graphs[0] > 0 and graphs[1:] == graphs[:1] * 2, graphs


def test_jit_compile_auto_picks_torch_compile_on_cuda_only(monkeypatch):
    """`jit_compile: auto` on torch: torch.compile where CUDA is present, eager on a CPU;
    `true` / `false` as given."""
    import torch

    from quadkeras.training.trainer import resolve_jit_compile

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_jit_compile("auto") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_jit_compile("auto") is True
    assert (resolve_jit_compile("true"), resolve_jit_compile("FALSE")) == (True, False)


def test_first_step_seconds_are_taken_once():
    """`FirstStepTimer` times the run's first step (the compile, with jit) and not again in
    later `fit` calls (the trainer runs one per epoch)."""
    from quadkeras.training.trainer import FirstStepTimer

    model = _tiny_quantized_model(None)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    y = np.zeros((4,), "int32")
    timer = FirstStepTimer(verbose=0)
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[timer], verbose=0)
    first = timer.seconds
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[timer], verbose=0)
    assert first is not None and first > 0 and timer.seconds == first
