"""Convert checkpoints between PyTorch (QuadraLib's layout) and Keras (.keras).

    # a QuadraLib / PyTorch checkpoint -> .keras (loads on every backend)
    python apps/convert.py --from_torch=qresnet14.pth --model=qresnet14 --out=qresnet14.keras
    # a model trained here -> a PyTorch state_dict for the same QuadraLib layout
    python apps/convert.py --model=runs/qresnet14/best.keras --to_torch=qresnet14.pth

`--from_torch` accepts a raw state_dict or QuadraLib's `{"net": ..., "acc": ..., "epoch": ...}`,
with or without `module.` prefixes, for the ResNet family (qresnet14, resnet20, resnet32) and
the VGG family (qvgg7, vgg13, qvgg13) or any model config of those families. The class count
and the quadratic convs' bias are read from the checkpoint. After the conversion the Keras
and PyTorch forwards are compared on random inputs (`--verify`, needs torch). Missing,
unexpected or mis-shaped keys end in one `error:` line and nothing is written.
"""

from absl import flags

import _common  # noqa: E402
from flag_table import define  # noqa: E402

FLAGS = flags.FLAGS
define(["model", "input_shape"], model="qresnet14", notes={
    "model": "Here, with --from_torch: zoo name or model config (.yaml/.json) of the checkpoint's "
             "network; with --to_torch: a .keras file or training work_dir.",
    "input_shape": "Here: with --from_torch, if not the config's."})
flags.DEFINE_string("from_torch", None, "PyTorch checkpoint (.pth) to convert to --out (.keras).")
flags.DEFINE_string("to_torch", None, "PyTorch checkpoint (.pth) to write from --model (.keras).")
flags.DEFINE_string("out", None, "With --from_torch: the .keras file to write.")
flags.DEFINE_enum("torch_format", "state_dict", ["state_dict", "quadralib"],
                  "With --to_torch: a raw state_dict, or QuadraLib's {'net': ..., 'acc', 'epoch'}.")
flags.DEFINE_bool("verify", True, "Compare the Keras and PyTorch forwards on random inputs.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output file.")


def _check_output(path, suffix, flag):
    import os

    if not path or not path.endswith(suffix):
        raise ValueError(f"Invalid --{flag}={path!r}: expected a path ending in {suffix}.")
    if os.path.exists(path) and not FLAGS.overwrite:
        raise ValueError(f"Invalid --{flag}={path!r}: file exists; pass --overwrite to replace it.")


def _from_torch():
    import os

    from quadkeras.interop import import_torch_checkpoint, read_state_dict
    from quadkeras.interop.verify import torch_logit_difference
    from quadkeras.models.model_config import save_model

    _check_output(FLAGS.out, ".keras", "out")
    overrides = {"input_shape": [int(v) for v in FLAGS.input_shape]} if FLAGS.input_shape else {}
    model = import_torch_checkpoint(FLAGS.from_torch, FLAGS.model, **overrides)
    print(f"imported {FLAGS.from_torch} as {FLAGS.model}: {model.count_params():,} parameters "
          f"({len(model.layers)} Keras layers)")
    if FLAGS.verify:
        diff = torch_logit_difference(model, read_state_dict(FLAGS.from_torch))
        print(f"verify: max |logit(keras) - logit(torch)| = {diff:.3g} on random inputs")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    save_model(model, FLAGS.out)
    print(f"wrote {FLAGS.out}")


def _to_torch():
    from quadkeras.export.loading import load_model
    from quadkeras.interop import export_torch_checkpoint, read_state_dict, state_dict_of

    _check_output(FLAGS.to_torch, ".pth", "to_torch")
    model = load_model(FLAGS.model)
    export_torch_checkpoint(model, FLAGS.to_torch, wrap=FLAGS.torch_format == "quadralib")
    if FLAGS.verify:  # what torch reads back is exactly what the Keras model holds
        written, expected = read_state_dict(FLAGS.to_torch), state_dict_of(model)
        worst = max(float(abs(written[k] - expected[k]).max()) for k in expected if expected[k].size)
        print(f"verify: {len(written)} tensors read back, max |difference| = {worst:.3g}")
    print(f"wrote {FLAGS.to_torch} ({FLAGS.torch_format})")


def main(argv):
    del argv
    print(_common.backend_line())
    if bool(FLAGS.from_torch) == bool(FLAGS.to_torch):
        raise ValueError("Invalid flags: pass exactly one of --from_torch=<file.pth> (with --out) or "
                         "--to_torch=<file.pth> (with --model=<file.keras>).")
    return _from_torch() if FLAGS.from_torch else _to_torch()


if __name__ == "__main__":
    _common.run(main)
