"""Logits of BSQ's released ResNet-20 converted to 8-bit planes / 4-bit activations (BSQ's
`convert.py --Nbits 8 --act 4`, FC bias in bits), on the CIFAR-10 test set, saved as .npy.

Run it on two commits to show a refactor keeps BSQ's function on a real trained network
(docs/bsq.md, "Bit planes as a quantizer"):

    python bench/bsq_convert_logits.py --out=/tmp/logits_new.npy
    (cd <old worktree> && PYTHONPATH=. python bench/bsq_convert_logits.py --out=/tmp/logits_old.npy)
    python -c "import numpy as np; print(abs(np.load('/tmp/logits_new.npy') - np.load('/tmp/logits_old.npy')).max())"
"""

import argparse
import os

import numpy as np
import keras

import quadkeras  # noqa: F401 (registers the layers)
from quadkeras.bsq import bsq_report, to_bsq
from quadkeras.data import dataset_arrays
from quadkeras.interop.torch_checkpoint import import_torch_checkpoint

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=os.path.join(SHARED, "bsq", "resnet20_cifar10_fp.pth.tar"))
    p.add_argument("--data_dir", default=os.path.join(SHARED, "cifar10-jpeg.tar.gz"))
    p.add_argument("--cache", default="/tmp/cifar10_test_arrays.npz", help="decoded test set (reused)")
    p.add_argument("--out", required=True, help=".npy file for the logits")
    p.add_argument("--batch", type=int, default=100, help="BSQ's per-batch activation scale: batch 100")
    args = p.parse_args()
    fp = import_torch_checkpoint(args.checkpoint, "resnet20")
    if not os.path.exists(args.cache):
        x, y = dataset_arrays("cifar10", "test", model=fp, data_dir=args.data_dir)
        np.savez(args.cache, x=x, y=y)
    data = np.load(args.cache)
    x, y = data["x"], data["y"]
    bsq = to_bsq(fp, bits=8, abits=4, quantize_bias=True)
    logits = np.concatenate([keras.ops.convert_to_numpy(bsq(x[i:i + args.batch], training=False))
                             for i in range(0, len(x), args.batch)])
    np.save(args.out, logits)
    print(f"accuracy {100 * (logits.argmax(1) == y).mean():.2f} % on {len(y)} images, "
          f"average bits {bsq_report(bsq)['average_bits']:.2f}")


if __name__ == "__main__":
    main()
