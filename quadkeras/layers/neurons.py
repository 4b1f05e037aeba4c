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

Each neuron is one `Neuron` spec (`NEURON_SPECS[name]`, or `neuron_spec(name)`): how many
fused linear branches it has, whether they get a per-branch BN, how many of them run on X^2,
how they combine, and which quantizer hooks (branch output, product) it offers. Layers keep
the name (`layer.neuron`, serialized) and read everything else from `layer.neuron_spec`;
`NEURONS`, `num_branches`, `combine_branches`, `products_per_output`, `BRANCH_NEURONS` and
`PRODUCT_NEURONS` are derived from the specs.

Example:

>>> num_branches("ours"), num_branches("t4")
(3, 2)
>>> spec = neuron_spec("t2_4")
>>> spec.squared_branches, spec.branch_quantizable, spec.product_quantizable
(1, False, True)
"""

import dataclasses

from keras import ops

from quadkeras.utils.validation import check_choice


def _identity(p):
    return p


def _sum_of_product(branches, product):  # a * b + c
    a, b, c = branches
    return product(a * b) + c


def _linear(branches, product):
    return branches[0]


def _square(branches, product):
    return product(ops.square(branches[0]))


def _product(branches, product):
    a, b = branches
    return product(a * b)


@dataclasses.dataclass(frozen=True)
class Neuron:
    """What a quadratic neuron type computes (see the module table).

    Attributes:
        name: QuadraLib's name (what layers serialize).
        branches: fused linear branches (0: the bilinear `t1`).
        branch_bn: a per-branch BatchNorm on the fused output (`ours`).
        squared_branches: how many trailing branches run on X^2 (`t2`: its one, `t2_4`: W_c).
        products: element-wise multiplies per output beyond the linear MACs.
        combine: `combine(branch_outputs, product_hook)` -> neuron output (None for `t1`).
    """

    name: str
    branches: int
    branch_bn: bool = False
    squared_branches: int = 0
    products: int = 0
    combine: object = None

    @property
    def bilinear(self):
        return self.branches == 0

    @property
    def branch_quantizable(self):
        """One fused linear op over X whose output a branch quantizer can round."""
        return self.branches > 0 and self.squared_branches in (0, self.branches)

    @property
    def product_quantizable(self):
        """A branch product a product quantizer can round."""
        return self.products > 0 and not self.bilinear


NEURON_SPECS = {spec.name: spec for spec in (
    Neuron("ours", 3, branch_bn=True, products=1, combine=_sum_of_product),
    Neuron("t1", 0),
    Neuron("t2", 1, squared_branches=1, combine=_linear),
    Neuron("t3", 1, products=1, combine=_square),
    Neuron("t4", 2, products=1, combine=_product),
    Neuron("t2_4", 3, squared_branches=1, products=1, combine=_sum_of_product),
)}
NEURONS = tuple(NEURON_SPECS)
BRANCH_NEURONS = tuple(n for n, spec in NEURON_SPECS.items() if spec.branch_quantizable)
PRODUCT_NEURONS = tuple(n for n, spec in NEURON_SPECS.items() if spec.product_quantizable)


def check_neuron(neuron):
    """Validate a neuron name (one-line ValueError listing the choices)."""
    return check_choice("neuron", neuron, NEURONS)


def neuron_spec(neuron):
    """The `Neuron` spec of a name (one-line ValueError listing the choices)."""
    return NEURON_SPECS[check_neuron(neuron)]


def num_branches(neuron):
    """Number of fused linear branches a neuron type computes (0 for the bilinear `t1`)."""
    return neuron_spec(neuron).branches


def combine_branches(neuron, branches, product=None):
    """Combine the (already normalised) branch outputs into the neuron's output.

    `product` (optional) is applied to the branch product (`a * b`, or the square of `t3`)
    before the linear term is added: quantize wrappers put a fake-quant there.
    """
    spec = neuron_spec(neuron)
    if spec.combine is None:
        raise ValueError(f"Invalid neuron={neuron!r}: no linear branches to combine.")
    return spec.combine(branches, product or _identity)


def products_per_output(neuron):
    """Element-wise multiplies per output element beyond the linear MACs (for MAC counts)."""
    return neuron_spec(neuron).products
