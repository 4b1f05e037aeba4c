"""PyTorch modules in QuadraLib's layout, built from a quadkeras model config.

These are the networks a `.pth` written by `quadkeras.interop.export_torch_checkpoint`
loads into (`strict=True`), and the plain-PyTorch reference of `bench/reference_parity.py`:
three `nn.Conv2d` + `nn.BatchNorm2d` per quadratic layer (QuadraLib's `Quadraour`),
`padding=(k - 1) // 2` on every conv, PyTorch's default initialisation (ResNet family) or
QuadraLib's `_initialize_weights` (VGG family). Written from the architecture description
(QuadraLib paper, Xu et al. 2022: the `ours` neuron and the QResNet / QVGG networks), not
copied from QuadraLib. Needs `torch`.

State-dict keys (QuadraLib's names):

- ResNet: `conv1`, `bn1`, `layer{s}.{b}.conv{1,2}` (quadratic: `.conv{1,2,3}`,
  `.bn{1,2,3}`), `layer{s}.{b}.bn{1,2}`, `layer{s}.{b}.shortcut.{0,1}`, `linear`.
- VGG: `features.{i}` (conv, BN, ReLU per entry; MaxPool for "M"), `classifier`.

Example:

>>> import torch
>>> net = build_torch_model("qresnet14")
>>> sum(p.numel() for p in net.parameters())
518938
>>> net.eval()(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

import torch
from torch import nn
from torch.nn import functional as F

from quadkeras.models import load_config, validate_config
from quadkeras.models.blocks import check_conv_spec, layer_spec


class QuadraticConv2d(nn.Module):
    """`bn1(conv1 x) * bn2(conv2 x) + bn3(conv3 x)`: the `ours` neuron, three convs."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=False):
        super().__init__()
        pad = (kernel_size - 1) // 2
        for i in (1, 2, 3):
            setattr(self, f"conv{i}", nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad,
                                                bias=bias))
            setattr(self, f"bn{i}", nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return self.bn1(self.conv1(x)) * self.bn2(self.conv2(x)) + self.bn3(self.conv3(x))


class Normalize(nn.Module):
    """Per-channel `(x - mean) / std` with constants kept out of the state dict."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


def make_torch_conv(spec, in_channels, out_channels, kernel_size, stride, bias):
    """`nn.Conv2d` or `QuadraticConv2d` for a quadkeras conv spec (only `ours` is quadratic)."""
    bias = spec.get("use_bias", bias)
    if spec["type"] == "quad":
        if spec.get("neuron", "ours") != "ours":
            raise ValueError(f"Invalid neuron={spec['neuron']!r} for a PyTorch (QuadraLib layout) "
                             "model: expected 'ours'.")
        return QuadraticConv2d(in_channels, out_channels, kernel_size, stride, bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=bias)


class BasicBlock(nn.Module):
    def __init__(self, config, prefix, in_planes, planes, stride):
        super().__init__()
        use_bias = config.get("use_bias", False)
        self.conv1 = make_torch_conv(layer_spec(config, f"{prefix}_conv1"), in_planes, planes, 3, stride, use_bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = make_torch_conv(layer_spec(config, f"{prefix}_conv2"), planes, planes, 3, 1, use_bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            spec = check_conv_spec({**config.get("shortcut", {"type": "conv"}),
                                    **config.get("overrides", {}).get(f"{prefix}_shortcut", {})},
                                   f"{prefix}_shortcut")
            self.shortcut = nn.Sequential(make_torch_conv(spec, in_planes, planes, 1, stride, False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (QuadraLib's layout) for a quadkeras `family: resnet` config."""

    def __init__(self, config):
        super().__init__()
        self.normalize = _normalize(config)
        stem = config.get("stem_filters", 16)
        stem_spec = check_conv_spec({**config.get("stem", {"type": "conv"}),
                                     **config.get("overrides", {}).get("stem_conv", {})}, "stem_conv")
        self.conv1 = make_torch_conv(stem_spec, config["input_shape"][-1], stem, 3, 1, False)
        self.bn1 = nn.BatchNorm2d(stem)
        in_planes = stem
        for s, stage in enumerate(config["stages"], start=1):
            blocks = []
            for b in range(1, stage["blocks"] + 1):
                prefix = f"stage{s}_block{b}"
                stride = stage.get("stride", 1) if b == 1 else 1
                removed = config.get("overrides", {}).get(prefix, {}).get("type") == "remove"
                blocks.append(nn.Identity() if removed else
                              BasicBlock(config, prefix, in_planes, stage["filters"], stride))
                in_planes = stage["filters"]
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.num_stages = len(config["stages"])
        self.linear = nn.Linear(in_planes, config["num_classes"])

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for s in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{s}")(out)
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class VGG(nn.Module):
    """CIFAR VGG (QuadraLib's layout) for a quadkeras `family: vgg` config."""

    def __init__(self, config):
        super().__init__()
        self.normalize = _normalize(config)
        layers, channels = [], config["input_shape"][-1]
        height, width = config["input_shape"][:2]
        names = iter(range(1, len(config["cfg"]) + 1))
        for entry in config["cfg"]:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
                height, width = height // 2, width // 2
                continue
            name = f"conv{next(names)}"
            spec = layer_spec(config, name)
            filters = entry
            if isinstance(entry, dict):
                entry = dict(entry)
                filters = entry.pop("filters")
                spec = check_conv_spec({**spec, **entry}, name)
            if spec["type"] == "remove":
                continue
            layers += [make_torch_conv(spec, channels, int(filters), 3, 1, config.get("use_bias", True)),
                       nn.BatchNorm2d(int(filters)), nn.ReLU(inplace=True)]
            channels = int(filters)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * width, config["num_classes"])

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))


def _normalize(config):
    norm = config.get("normalize")
    return Normalize([float(m) for m in norm["mean"]], [float(s) for s in norm["std"]]) if norm else nn.Identity()


def init_like_reference(net, family):
    """Initialise as the reference code does: QuadraLib's VGG `_initialize_weights`; the
    ResNet family keeps PyTorch's defaults (already applied by the constructors)."""
    if family != "vgg":
        return net
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return net


def build_torch_model(source, **overrides):
    """A PyTorch module in QuadraLib's layout for a zoo name / config path / config dict."""
    config = load_config(source)
    config.update(overrides)
    validate_config(config)
    net = ResNet(config) if config["family"] == "resnet" else VGG(config)
    return init_like_reference(net, config["family"])
