"""Convert checkpoints between PyTorch (QuadraLib's or bearpaw's / BSQ's layout) and Keras (.keras).

    # a QuadraLib / PyTorch checkpoint -> .keras (loads on every backend)
    quadkeras-convert --from_torch=qresnet14.pth --model=qresnet14 --out=qresnet14.keras
    # a model trained here -> a PyTorch state_dict for the same QuadraLib layout
    quadkeras-convert --model=runs/qresnet14/best.keras --to_torch=qresnet14.pth
    # BSQ's released float ResNet-20 (bearpaw's layout: module., downsample.{0,1}, fc) -> .keras
    quadkeras-convert --from_torch=../shared/data/bsq/resnet20_cifar10_fp.pth.tar \
        --model=resnet20 --out=resnet20_bsq_fp.keras
    # a BSQ model -> BSQ's bit form (pweight / nweight / scale + Nbit_dict), or its float form
    quadkeras-convert --model=runs/bsq/model_bin.keras --to_torch=bsq.pth --torch_format=bsq_bits

`--from_torch` accepts a raw state_dict, QuadraLib's `{"net": ..., "acc": ..., "epoch": ...}`
or bearpaw's / BSQ's `{"state_dict": ..., "acc", "best_acc", "epoch", "optimizer"}`, with or
without `module.` prefixes, in QuadraLib's or bearpaw's key names (detected from the keys;
`quadkeras.interop.layouts`; keys that fit neither: one line naming the closest layout and
the first differing keys), for the ResNet family (qresnet14, resnet20, resnet32) and
the VGG family (qvgg7, vgg13, qvgg13) or any model config of those families. The class count
and the quadratic convs' bias are read from the checkpoint. The file is checked first (the
zip CRCs, every tensor's dtype, NaN/inf: `quadkeras.interop.torch_checkpoint`). `--verify`
(needs torch) then compares the Keras and PyTorch forwards on random inputs against
`--verify_rtol` (`quadkeras.interop.verify`) and prints PASS / FAIL; a FAIL, a corrupt file
or missing, unexpected or mis-shaped keys end in one `error:` line, exit 1, nothing written.
`--to_torch` checks the written file before it replaces the target: read back bit-exact and,
for a model carrying its config, the same forward check (a BSQ model: its float weights with
ReLU activations, what a plain PyTorch ResNet computes). BSQ's bit form is imported by
`quadkeras-bsq --mode=convert --from_torch=<file>` (it needs `--abits`).
"""

import math
import os
import sys
import warnings

from absl import flags

from quadkeras.bsq import BSQActivation, bsq_layers, to_representation
from quadkeras.cli import common
from quadkeras.cli.flag_table import define  # noqa: E402
from quadkeras.export.loading import load_model
from quadkeras.interop import export_torch_checkpoint, import_torch_checkpoint, read_state_dict, state_dict_of
from quadkeras.interop.bsq_checkpoint import export_bsq_checkpoint, float_comparison
from quadkeras.interop.layouts import canonical_state
from quadkeras.interop.torch_checkpoint import CheckpointWarning, run_resume_fields
from quadkeras.interop.verify import check_logits, readback_differences
from quadkeras.models.model_config import config_of, save_model
from quadkeras.training.work_dir import Run

FLAGS = flags.FLAGS
define(["model", "input_shape"], model="qresnet14", notes={
    "model": "Here, with --from_torch: zoo name or model config (.yaml/.json) of the checkpoint's "
             "network; with --to_torch: a .keras file or training work_dir.",
    "input_shape": "Here: with --from_torch, if not the config's."})
flags.DEFINE_string("from_torch", None, "PyTorch checkpoint (.pth) to convert to --out (.keras).")
flags.DEFINE_string("to_torch", None, "PyTorch checkpoint (.pth) to write from --model (.keras).")
flags.DEFINE_string("out", None, "With --from_torch: the .keras file to write.")
flags.DEFINE_enum("torch_format", "state_dict", ["state_dict", "quadralib", "bearpaw", "bsq_bits"],
                  "With --to_torch: a raw state_dict (QuadraLib's names), QuadraLib's {'net': ..., "
                  "'acc', 'epoch'} (acc: the run's best validation accuracy in percent when --model is "
                  "a run's best.keras, else 0.0; epoch: int, 0-based index of the last finished epoch), "
                  "bearpaw's / BSQ's {'state_dict': {'module.' + key: ...}, 'epoch' (epochs done), 'acc', "
                  "'best_acc'} in its names (downsample.{0,1}, fc; a BSQ model adds BSQ's Nbit_dict: "
                  "its best_float.pth.tar), or bsq_bits: the same in BSQ's bit form (pweight / nweight "
                  "/ scale per bit layer; a BSQ model only).")
flags.DEFINE_bool("verify", True, "Compare the Keras and PyTorch forwards on random inputs; exit 1 "
                  "(nothing written) when the difference exceeds --verify_rtol or is not finite.")
flags.DEFINE_float("verify_rtol", None, "--verify tolerance, relative to max |logit|: max |logit(keras) "
                   "- logit(torch)| <= rtol * max |logit(torch)|. Default: 100 * depth * float32 eps, "
                   "depth = the network's conv/dense layers (a quadratic one counts 2); see "
                   "docs/pytorch.md.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output file.")


def _check_output(path, suffix, flag):
    if not path or not path.endswith(suffix):
        raise ValueError(f"Invalid --{flag}={path!r}: expected a path ending in {suffix}.")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ValueError(f"Invalid --{flag}={path!r}: exists and is not a regular file (a folder or "
                         "device); choose a file path.")
    if os.path.exists(path) and not FLAGS.overwrite:
        raise ValueError(f"Invalid --{flag}={path!r}: file exists; pass --overwrite to replace it.")


def _check_rtol():
    rtol = FLAGS.verify_rtol
    if rtol is not None and not (math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"Invalid --verify_rtol={rtol!r}: expected a finite number > 0 (or leave it "
                         "unset for the default derived from the network's depth).")


def _verify_logits(model, state, source):
    """Print the forward check's verdict; a FAIL is a one-line ValueError (exit 1)."""
    result = check_logits(model, state, rtol=FLAGS.verify_rtol)
    print(f"verify: {result.line()}")
    if result.passed:
        return
    why = (f"exceeds --verify_rtol={result.rtol:.3g} x max |logit| {result.scale:.3g} = "
           f"{result.limit:.3g} (is --model the checkpoint's network? --verify_rtol raises the "
           "tolerance)" if result.finite else
           "is not finite: a forward overflows float32 (NaN/inf) on random inputs, so they cannot "
           "be compared")
    raise ValueError(f"verify failed for {source}: max |logit(keras) - logit(torch)| = "
                     f"{result.difference:.3g} {why}; nothing was written (--noverify skips the check).")


def _from_torch():

    _check_output(FLAGS.out, ".keras", "out")
    overrides = {"input_shape": [int(v) for v in FLAGS.input_shape]} if FLAGS.input_shape else {}
    model = import_torch_checkpoint(FLAGS.from_torch, FLAGS.model, **overrides)
    print(f"imported {FLAGS.from_torch} as {FLAGS.model}: {model.count_params():,} parameters "
          f"({len(model.layers)} Keras layers)")
    if FLAGS.verify:
        _verify_logits(model, canonical_state(read_state_dict(FLAGS.from_torch)),
                       f"--from_torch={FLAGS.from_torch!r}")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    save_model(model, FLAGS.out)
    print(f"wrote {FLAGS.out}")


# --torch_format -> (key layout, form of BSQ layers, wrapped in the framework's checkpoint dict)
FORMATS = {"state_dict": ("quadralib", "float", False), "quadralib": ("quadralib", "float", True),
           "bearpaw": ("bearpaw", "float", True), "bsq_bits": ("bearpaw", "bits", True)}


def _to_torch():
    _check_output(FLAGS.to_torch, ".pth", "to_torch")
    model = load_model(FLAGS.model)
    layout, form, wrap = FORMATS[FLAGS.torch_format]
    bsq = bool(bsq_layers(model))
    if form == "bits" and not bsq:
        raise ValueError(f"Invalid --torch_format=bsq_bits for --model={FLAGS.model!r}: it holds no BSQ "
                         "layers; use --torch_format=bearpaw (float) or convert it with quadkeras-bsq first.")
    if form == "bits" and any(w.kernel_quantizer.representation != "bits" for w in bsq_layers(model)):
        model = to_representation(model, "bits")  # a finetune (float-representation) model: its codes
    acc, epoch = run_resume_fields(FLAGS.model) if wrap else (None, None)
    if layout == "bearpaw" and Run.of(FLAGS.model) is not None:
        epoch += 1  # bearpaw's / BSQ's `epoch` counts the epochs done (QuadraLib's is their index)

    def check(tmp):  # runs on the complete temp file, before it replaces --to_torch
        written, expected = read_state_dict(tmp), state_dict_of(model, layout, form)
        differing, worst = readback_differences(written, expected)
        print(f"verify: {len(written)} tensors read back, {len(differing)} differ, max |difference| = "
              f"{worst:.3g}: {'FAIL' if differing else 'PASS'}")
        if differing:
            raise ValueError(f"verify failed for --to_torch={FLAGS.to_torch!r}: {len(differing)} tensors "
                             f"read back differ from the model ({', '.join(differing[:3])}); nothing "
                             "was written.")
        if config_of(model) is not None:
            _verify_logits(*float_comparison(model, written), f"--to_torch={FLAGS.to_torch!r}")

    kwargs = {"acc": acc, "epoch": epoch, "check": check if FLAGS.verify else None, "source": FLAGS.model}
    if bsq and wrap and layout == "bearpaw":  # BSQ's checkpoint dict, with its Nbit_dict
        export_bsq_checkpoint(model, FLAGS.to_torch, form=form, layout=layout, **kwargs)
    else:
        export_torch_checkpoint(model, FLAGS.to_torch, wrap=wrap, layout=layout, form=form, **kwargs)
    extra = f", acc={acc}, epoch={epoch}" if wrap else ""
    print(f"wrote {FLAGS.to_torch} ({FLAGS.torch_format}{extra})")
    acts = {layer.bits for layer in model.layers if isinstance(layer, BSQActivation)}
    if acts:
        print(f"note: the {'/'.join(map(str, sorted(acts)))}-bit block activations (BSQActivation) are not "
              "in a state dict: BSQ's ResNet applies them from its --act flag; a plain ResNet runs ReLU.")


def _show_checkpoint_warnings():
    """Checkpoint warnings (a legacy file's unverifiable integrity) as one `warning:` line."""
    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs):
        if issubclass(category, CheckpointWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)
    warnings.showwarning = one_line


def app_main(argv):
    del argv
    print(common.backend_line())
    if bool(FLAGS.from_torch) == bool(FLAGS.to_torch):
        raise ValueError("Invalid flags: pass exactly one of --from_torch=<file.pth> (with --out) or "
                         "--to_torch=<file.pth> (with --model=<file.keras>).")
    _check_rtol()
    _show_checkpoint_warnings()
    return _from_torch() if FLAGS.from_torch else _to_torch()


def main(argv=None):
    """The console script `quadkeras-convert` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
