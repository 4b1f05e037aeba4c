"""Rewrites of exported ONNX graphs: uint8 activations and weights (U8U8), packed int4 weights.

- `unsigned_activations`: tf2onnx writes the LiteRT int8 file as a QDQ graph with *signed*
  int8 activations (S8S8). On x86, onnxruntime (1.32, default options) leaves such a graph
  mostly unfused (float ops between Q/DQ pairs) or, with `session.qdqisint8allowed`, runs
  QLinearConv's slow S8S8 path (2.3-2.4x slower than the uint8 graph here; docs/export.md). Shifting every activation zero point by +128 and
  storing activations as uint8 is exact (`q_u8 = q_s8 + 128`, same scale, same clamp), so the
  file keeps the LiteRT file's int8 levels and onnxruntime fuses it into QLinearConv / QGemm /
  QLinearAdd / QLinearMul with its default options.
- `unsigned_weights`: the conv/dense weights as uint8 too (zero point 128, exact): U8S8 lost
  accuracy on an x86 CPU without VNNI (see there), U8U8 did not.
- `pack_int4_weights`: Conv / MatMul / Gemm weight initializers whose values lie on a signed
  4-bit grid per output channel (a <= 4-bit model) are stored as INT4 with a per-channel
  DequantizeLinear (opset 21; two weights per byte in the file).

Example:

>>> import numpy as np, onnx
>>> from onnx import helper, numpy_helper, TensorProto
>>> w = np.array([[1., -2.], [3., 0.5]], "float32")   # column 0: step 1, column 1: step 0.5
>>> graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
...     [numpy_helper.from_array(w, "w")])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> pack_int4_weights(model)
1
>>> sorted(n.op_type for n in model.graph.node)
['DequantizeLinear', 'MatMul']
"""

import numpy as np

INT4_OPSET = 21  # DequantizeLinear with INT4 data
INT4_RANGE = (-8, 7)
# ops an int8 activation passes through unchanged (a uint8 one as well)
_LAYOUT_OPS = ("Transpose", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity",
               "MaxPool", "Split", "Pad", "Concat", "DepthToSpace", "SpaceToDepth")
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": -1, "Gemm": -1}


def _initializers(graph):
    return {t.name: t for t in graph.initializer}


def _consumers(graph):
    found = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def unsigned_activations(model):
    """Store every int8 activation of a QDQ graph as uint8 (zero point + 128), in place.

    Activations are the outputs of QuantizeLinear with an int8 zero point and what layout ops
    (Transpose, Slice, Pad, ...) make of them before a DequantizeLinear; weights and biases
    (DequantizeLinear of an initializer) stay int8 / int32. Returns how many activation
    tensors changed type. Raises ValueError if an int8 activation feeds another op (the
    rewrite would then be wrong), leaving `model` unchanged.
    """
    from onnx import TensorProto  # noqa: PLC0415

    graph = model.graph
    inits, consumers = _initializers(graph), _consumers(graph)

    def is_int8(name):
        return name in inits and inits[name].data_type == TensorProto.INT8

    stack = [n.output[0] for n in graph.node
             if n.op_type == "QuantizeLinear" and len(n.input) > 2 and is_int8(n.input[2])]
    activations, rewrite = set(), []
    while stack:
        name = stack.pop()
        if name in activations:
            continue
        activations.add(name)
        for node in consumers.get(name, []):
            if node.op_type in _LAYOUT_OPS and node.input[0] == name or node.op_type == "Concat":
                stack.extend(node.output)
            elif node.op_type != "DequantizeLinear" or node.input[0] != name:
                raise ValueError(f"Invalid QDQ graph: the int8 activation {name!r} feeds "
                                 f"{node.op_type} {node.name!r}, not a DequantizeLinear.")
            rewrite.append(node)
    shift = _uint8_copies(graph, inits)
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.output[0] in activations:
            node.input[2] = shift(node.input[2])
    for node in rewrite:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2 and is_int8(node.input[2]):
            node.input[2] = shift(node.input[2])
        elif node.op_type == "Pad" and len(node.input) > 2 and is_int8(node.input[2]):
            node.input[2] = shift(node.input[2])  # padding with the old zero point
    stale = [v for v in graph.value_info if v.name in activations]
    for info in stale:  # tf2onnx's recorded int8 types; onnxruntime infers them again
        graph.value_info.remove(info)
    _drop_unused_initializers(graph)
    return len(activations)


def unsigned_weights(model):
    """Store the int8 weights of Conv / MatMul / Gemm as uint8 (zero point 128), in place.

    Exact (`w_u8 = w_s8 + 128`). With uint8 activations this is onnxruntime's U8U8 form. Its
    U8S8 form lost accuracy on an AVX2 CPU without VNNI (94.6 % top-1 agreement with the
    LiteRT file, max |dlogit| 11: int16 saturation, as VPMADDUBSW's pair sums would give),
    U8U8 matched it (99.9 %; docs/export.md). Returns how many weights changed.
    """
    from onnx import TensorProto  # noqa: PLC0415

    graph = model.graph
    inits, consumers = _initializers(graph), _consumers(graph)
    shift, count = _uint8_copies(graph, inits), 0
    for node in graph.node:
        if (node.op_type != "DequantizeLinear" or len(node.input) < 3
                or node.input[0] not in inits or inits[node.input[0]].data_type != TensorProto.INT8):
            continue
        users = consumers.get(node.output[0], [])
        if users and all(u.op_type in _WEIGHT_INPUT and list(u.input).index(node.output[0])
                         == _WEIGHT_INPUT[u.op_type] for u in users):
            node.input[0], node.input[2] = shift(node.input[0]), shift(node.input[2])
            count += 1
    _drop_unused_initializers(graph)
    return count


def _uint8_copies(graph, inits):
    """A function: int8 initializer name -> the name of its uint8 copy (+ 128), made once."""
    from onnx import numpy_helper  # noqa: PLC0415

    made = {}

    def shift(name):
        if name not in made:
            values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            tensor = numpy_helper.from_array(values.astype(np.uint8), f"{name}__u8")
            graph.initializer.append(tensor)
            made[name] = tensor.name
        return made[name]

    return shift


def _drop_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def int4_grid(weight, axis, bits=4):
    """(integer levels, per-channel steps) if `weight` lies on a signed `bits`-bit grid per
    slice along `axis` (up to float32 rounding), else None.

    >>> q, s = int4_grid(np.array([[0.5, -1.0], [0.25, 0.75]], "float32"), axis=0)
    >>> q.tolist(), s.tolist()
    ([[4, -8], [2, 6]], [0.125, 0.125])
    """
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    w = np.moveaxis(np.asarray(weight, np.float64), axis, 0).reshape(weight.shape[axis], -1)
    levels, steps = np.zeros(w.shape, np.int64), np.ones(len(w), np.float64)
    for c, row in enumerate(w):
        top = np.abs(row).max()
        if top == 0:
            continue
        for k in range(-lo, 0, -1):  # the step is top / k for some level k in 1..-lo
            q = np.round(row * k / top)
            if q.min() >= lo and q.max() <= hi and np.allclose(q * top / k, row, rtol=1e-5,
                                                               atol=1e-7 * top):
                levels[c], steps[c] = q, top / k
                break
        else:
            return None
    shape = np.moveaxis(np.empty(weight.shape), axis, 0).shape
    return np.moveaxis(levels.reshape(shape), 0, axis), steps.astype(np.float32)


def pack_int4_weights(model, bits=4):
    """Store weights on a <= `bits`-bit grid as INT4 + DequantizeLinear (opset 21), in place.

    Every Conv / ConvTranspose / MatMul / Gemm weight initializer (2-D or more) that
    `int4_grid` finds on a signed 4-bit grid per output channel becomes an INT4 initializer
    (packed two per byte) with float32 per-channel scales and a DequantizeLinear; the model's
    default opset is raised to 21 (`onnx.version_converter`) first. Returns how many weights
    were packed (0 leaves the model as it was).
    """
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    graph = model.graph
    inits, consumers = _initializers(graph), _consumers(graph)
    packed = []
    for node in graph.node:
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in inits:
            continue
        name = node.input[index]
        weight = numpy_helper.to_array(inits[name])
        if weight.ndim < 2 or weight.dtype != np.float32 or len(consumers[name]) != 1:
            continue
        axis = _WEIGHT_AXIS[node.op_type]
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            axis = 0
        axis %= weight.ndim
        grid = int4_grid(weight, axis, bits)
        if grid is not None:
            packed.append((node, index, name, weight, axis, grid))
    if not packed:
        return 0
    _raise_opset(model, INT4_OPSET)
    graph = model.graph
    for node, index, name, weight, axis, (levels, steps) in packed:
        q_name, s_name, out = f"{name}__int4", f"{name}__scale", f"{name}__dequant"
        graph.initializer.append(helper.make_tensor(q_name, TensorProto.INT4, weight.shape,
                                                    pack_nibbles(levels), raw=True))
        graph.initializer.append(numpy_helper.from_array(steps, s_name))
        graph.node.insert(0, helper.make_node("DequantizeLinear", [q_name, s_name], [out],
                                              name=f"{name}__DequantizeLinear", axis=axis))
        for consumer in graph.node:
            for i, inp in enumerate(consumer.input):
                if inp == name and consumer.op_type != "DequantizeLinear":
                    consumer.input[i] = out
    _drop_unused_initializers(graph)
    return len(packed)


def pack_nibbles(levels):
    """Bytes of signed 4-bit `levels`, two per byte, the first in the low nibble (ONNX's INT4
    raw layout; an odd count ends with a zero nibble).

    >>> pack_nibbles(np.array([-8, 7, 1])).hex()
    '7801'
    """
    flat = np.asarray(levels, np.int64).reshape(-1) & 0xF
    if len(flat) % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def _raise_opset(model, opset):
    """Raise the default-domain opset of `model` (in place) with onnx's version converter."""
    from onnx import version_converter  # noqa: PLC0415

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return
    converted = version_converter.convert_version(model, opset)
    model.CopyFrom(converted)
