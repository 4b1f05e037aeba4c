"""Interoperability with PyTorch: QuadraLib-layout checkpoints in and out.

`import_torch_checkpoint` / `export_torch_checkpoint` need `torch` only when called;
`quadkeras.interop.torch_nets` (PyTorch modules in QuadraLib's layout) imports torch.

Example:

>>> from quadkeras.interop import import_torch_checkpoint  # doctest: +SKIP
>>> model = import_torch_checkpoint("qresnet14_cifar10.pth", "qresnet14")  # doctest: +SKIP
"""

from quadkeras.interop.torch_checkpoint import (
    export_torch_checkpoint,
    import_torch_checkpoint,
    load_state_dict_into,
    read_state_dict,
    state_dict_of,
)
from quadkeras.interop.torch_layout import model_family, torch_entries

__all__ = ["export_torch_checkpoint", "import_torch_checkpoint", "load_state_dict_into", "model_family",
           "read_state_dict", "state_dict_of", "torch_entries"]
