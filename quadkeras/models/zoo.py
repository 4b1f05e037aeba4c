"""The model zoo as plain config dicts (QuadraLib's QResNet / QVGG and the CIFAR ResNet / VGG
baselines), mirrored by `configs/models/*.yaml`.

Trainable parameters for 10 classes (tested exactly): QResNet14 518,938; ResNet-32
466,906; ResNet-20 272,474; QVGG-7 12,304,330; VGG-13 (cfg D) 14,728,266; QVGG-13
44,182,986.

Example:

>>> sorted(ZOO)[:3]
['qresnet14', 'qvgg13', 'qvgg7']
"""

import copy

CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
CFG_QVGG7 = [64, 64, "M", 128, 128, "M", 256, "M", 512, "M", 512, "M"]
QUAD_OURS_BIAS = {"type": "quad", "neuron": "ours", "use_bias": True}
QUAD_OURS_NOBIAS = {"type": "quad", "neuron": "ours", "use_bias": False}
CIFAR = {"input_shape": [32, 32, 3], "num_classes": 10}


def _resnet(name, blocks, conv):
    return {
        "name": name, "family": "resnet", **CIFAR, "stem_filters": 16,
        "stages": [
            {"filters": 16, "blocks": blocks, "stride": 1},
            {"filters": 32, "blocks": blocks, "stride": 2},
            {"filters": 64, "blocks": blocks, "stride": 2},
        ],
        "conv": conv, "use_bias": False,
    }


def _vgg(name, cfg, conv):
    return {"name": name, "family": "vgg", **CIFAR, "cfg": list(cfg), "conv": conv, "use_bias": True}


ZOO = {
    "qresnet14": _resnet("qresnet14", 2, QUAD_OURS_NOBIAS),
    "resnet20": _resnet("resnet20", 3, {"type": "conv"}),
    "resnet32": _resnet("resnet32", 5, {"type": "conv"}),
    "qvgg7": _vgg("qvgg7", CFG_QVGG7, QUAD_OURS_BIAS),
    "vgg13": _vgg("vgg13", CFG_D, {"type": "conv"}),
    "qvgg13": _vgg("qvgg13", CFG_D, QUAD_OURS_BIAS),
}


def zoo_config(name):
    """A deep copy of the zoo config `name` (one-line error listing the zoo otherwise)."""
    if name not in ZOO:
        raise ValueError(f"Invalid model={name!r}: expected one of {', '.join(sorted(ZOO))} "
                         "or a path to a .yaml/.json model config.")
    return copy.deepcopy(ZOO[name])
