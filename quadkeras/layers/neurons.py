"""Quadratic neuron types (QuadraLib naming) and how their linear branches combine.

X is the input patch (conv) or vector (dense); products are element-wise.

| neuron | formula                                   | fused linear branches |
|--------|-------------------------------------------|-----------------------|
| `ours` | BN_a(W_a X) * BN_b(W_b X) + BN_c(W_c X)   | 3 (one conv on X)     |
| `t1`   | X^T A X (+ W_b X)                         | bilinear form         |
| `t2`   | W_a X^2                                   | 1 (conv on X^2)       |
| `t3`   | (W_a X)^2                                 | 1                     |
| `t4`   | (W_a X)(W_b X)                            | 2                     |
| `t2_4` | (W_a X)(W_b X) + W_c X^2                  | 2 on X + 1 on X^2     |

Example:

>>> num_branches("ours"), num_branches("t4")
(3, 2)
"""

from keras import ops

from quadkeras.utils.validation import check_choice

NEURONS = ("ours", "t1", "t2", "t3", "t4", "t2_4")

BRANCH_NEURONS = ("ours", "t2", "t3", "t4")  # one fused linear op whose output can be quantized
PRODUCT_NEURONS = ("ours", "t3", "t4", "t2_4")  # a branch product that can be quantized
_NUM_BRANCHES = {"ours": 3, "t1": 0, "t2": 1, "t3": 1, "t4": 2, "t2_4": 3}


def check_neuron(neuron):
    """Validate a neuron name (one-line ValueError listing the choices)."""
    return check_choice("neuron", neuron, NEURONS)


def num_branches(neuron):
    """Number of fused linear branches a neuron type computes (0 for the bilinear `t1`)."""
    return _NUM_BRANCHES[check_neuron(neuron)]


def combine_branches(neuron, branches, product=None):
    """Combine the (already normalised) branch outputs into the neuron's output.

    `product` (optional) is applied to the branch product (`a * b`, or the square of `t3`)
    before the linear term is added: quantize wrappers put a fake-quant there.
    """
    product = product or (lambda p: p)
    if neuron in ("ours", "t2_4"):
        a, b, c = branches
        return product(a * b) + c
    if neuron == "t2":
        return branches[0]
    if neuron == "t3":
        return product(ops.square(branches[0]))
    if neuron == "t4":
        a, b = branches
        return product(a * b)
    raise ValueError(f"Invalid neuron={neuron!r}: no linear branches to combine.")


def products_per_output(neuron):
    """Element-wise multiplies per output element beyond the linear MACs (for MAC counts)."""
    return {"ours": 1, "t1": 0, "t2": 0, "t3": 1, "t4": 1, "t2_4": 1}[neuron]
