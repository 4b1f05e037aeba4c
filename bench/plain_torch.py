"""Plain-PyTorch reference side of the train-step benches (`bench/train_step.py`,
`bench/step_overhead.py`): the networks, LSQ written from the paper, and the train step.

- `build_plain_net(key)`: a zoo name (`quadkeras.interop.torch_nets`, QuadraLib's layout), or
  `<resnet name>_lsq` (e.g. `resnet20_lsq`): that ResNet with LSQ W4A4 on the inputs and
  kernels of the layers the zoo quantizes for `scheme_from_flags("lsq", 4, 4)`.
- `torch_side(key, batch, compiled=False)`: (train step, predict) with the seed recipe's
  optimizer (`torch.optim.SGD` lr 0.1, momentum 0.9, weight decay 5e-4, grad-norm clip 0.5);
  `compiled=True` runs the network under `torch.compile` (default settings; the optimizer
  and the clip stay eager, as in PyTorch's usual recipe).

LSQ (Esser et al., ICLR 2020; /work/shared/SPEC.md section 4), written as the paper's
pseudo-code, in autodiff through element-wise ops, as a PyTorch user would:
v_hat = round_pass(clip(v / s', -Q_N, Q_P)) * s', s' = grad_scale(s, 1 / sqrt(N * Q_P)),
with Q_N = 2^(b-1), Q_P = 2^(b-1) - 1 for signed weights and Q_N = 0, Q_P = 2^b - 1 for
unsigned (post-ReLU) activations; N = elements of the weight tensor, or features per sample
of the activation; s initialised to 2 * mean|v| / sqrt(Q_P) (weights at construction,
activations from one batch: `initialize_lsq`). One step per tensor, as the zoo's `lsq:4`.
The zoo's plan for `scheme_from_flags("lsq", 4, 4)` (quadkeras/quantize/scheme.py): the
first and last quantizable layers (the stem conv, the classifier) and the 1x1 shortcut convs
stay float; every residual block's two 3x3 convs are quantized (kernel and input).
`tests/test_step_overhead_bench.py` checks this net against the zoo model.

>>> net = build_plain_net("resnet20_lsq")
>>> lsq_layer_names(net)[:2]
['layer1.0.conv1', 'layer1.0.conv2']
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from quadkeras.interop.torch_nets import BasicBlock, build_torch_model

LSQ_SUFFIX = "_lsq"
LSQ_BITS = (4, 4)  # (weight, activation) bits of a `<name>_lsq` net


def grad_scale(x, g):
    """Forward `x`, backward `g * dL/dx`."""
    y = x * g
    return (x - y).detach() + y


def round_pass(x):
    """Forward `round(x)` (half to even), backward identity (STE)."""
    return (x.round() - x).detach() + x


class LSQ(nn.Module):
    """One learned step per tensor; `per_sample`: N counts features per sample (activations)."""

    def __init__(self, bits, signed, per_sample):
        super().__init__()
        self.bits, self.signed, self.per_sample = bits, signed, per_sample
        self.qn, self.qp = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        self.step = nn.Parameter(torch.ones(()))
        self.calibrating = False  # True: the next forward sets the step from its input

    @torch.no_grad()
    def init_step(self, v):
        self.step.copy_(torch.clamp(2.0 * v.abs().mean() / math.sqrt(self.qp), min=1e-8))

    def forward(self, v):
        if self.calibrating:
            self.init_step(v)
        n = v[0].numel() if self.per_sample else v.numel()
        s = grad_scale(self.step, 1.0 / math.sqrt(n * self.qp))
        return round_pass(torch.clamp(v / s, -self.qn, self.qp)) * s


class LSQConv2d(nn.Module):
    """`conv` run on its LSQ-quantized input (unsigned) with its LSQ-quantized kernel (signed)."""

    def __init__(self, conv, weight_bits, activation_bits):
        super().__init__()
        self.conv = conv
        self.weight_quantizer = LSQ(weight_bits, signed=True, per_sample=False)
        self.input_quantizer = LSQ(activation_bits, signed=False, per_sample=True)
        self.weight_quantizer.init_step(conv.weight)

    def forward(self, x):
        c = self.conv
        return F.conv2d(self.input_quantizer(x), self.weight_quantizer(c.weight), c.bias,
                        c.stride, c.padding, c.dilation, c.groups)


def lsq_resnet(net, weight_bits, activation_bits):
    """Quantize `net`'s (a `torch_nets.ResNet`) residual-block convs in place; returns it."""
    for s in range(1, net.num_stages + 1):
        for block in getattr(net, f"layer{s}"):
            if not isinstance(block, BasicBlock):
                continue
            for name in ("conv1", "conv2"):
                conv = getattr(block, name)
                if type(conv) is not nn.Conv2d:
                    raise ValueError(f"Invalid model for plain-PyTorch LSQ: {type(conv).__name__} "
                                     "block convs; expected first-order nn.Conv2d (a ResNet zoo model).")
                setattr(block, name, LSQConv2d(conv, weight_bits, activation_bits))
    return net


def lsq_layer_names(net):
    """Module names of the `LSQConv2d` layers, in order (e.g. `layer1.0.conv1`)."""
    return [name for name, m in net.named_modules() if isinstance(m, LSQConv2d)]


@torch.no_grad()
def initialize_lsq(net, x):
    """Set every activation step from one training-mode batch `x` (NCHW), the paper's init;
    BatchNorm running statistics are restored afterwards. Returns the quantizers set."""
    quantizers = [m.input_quantizer for m in net.modules() if isinstance(m, LSQConv2d)]
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    for q in quantizers:
        q.calibrating = True
    try:
        net.train()(x)
    finally:
        for q in quantizers:
            q.calibrating = False
    for k, v in net.named_buffers():
        v.copy_(buffers[k])
    return len(quantizers)


def build_plain_net(key):
    """The plain-PyTorch network of a bench model key (a zoo name, or `<resnet>_lsq`)."""
    if key.endswith(LSQ_SUFFIX):
        return lsq_resnet(build_torch_model(key[: -len(LSQ_SUFFIX)]), *LSQ_BITS)
    return build_torch_model(key)


def plain_device():
    """Where the plain PyTorch side runs: the CUDA device when there is one (as Keras' torch
    backend places its variables), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_side(key, batch, compiled=False, init_x=None):
    """(train step fn, predict fn) of the plain PyTorch network of `key` (NCHW input, moved
    to `plain_device()` by the caller).

    An LSQ net's activation steps are initialised from `init_x` (NCHW; default: a random
    batch) before anything is compiled."""
    torch.manual_seed(0)
    device = plain_device()
    net = build_plain_net(key).to(device)
    if lsq_layer_names(net):
        x0 = init_x if init_x is not None else torch.rand(batch, 3, 32, 32)
        initialize_lsq(net, x0.to(device))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    run = torch.compile(net) if compiled else net

    def train(x, y):
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(run(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        return float(loss.detach())

    def predict(x):
        net.eval()
        with torch.inference_mode():
            return [run(chunk) for chunk in torch.split(x, batch)]
    return train, predict
