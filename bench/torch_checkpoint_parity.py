"""A PyTorch checkpoint imported into Keras: accuracy and agreement with PyTorch, real data.

Imports QuadraLib's released QResNet14 (`../shared/data/quadralib/qresnet14_cifar10.pth`)
with `quadkeras.interop.import_torch_checkpoint`, evaluates it on the CIFAR-10 test split
under the current Keras backend, and compares with the same checkpoint in the plain PyTorch
network (`quadkeras.interop.torch_nets`): accuracy of both, top-1 agreement, max |Δlogit|.
Any layout `import_torch_checkpoint` reads, e.g. BSQ's released float ResNet-20 (bearpaw's):

    KERAS_BACKEND=jax python bench/torch_checkpoint_parity.py [--limit=10000]
    python bench/torch_checkpoint_parity.py --model=resnet20 \
        --checkpoint=../shared/data/bsq/resnet20_cifar10_fp.pth.tar
"""

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DEFAULT = os.path.join(os.path.dirname(REPO), "shared", "data", "quadralib", "qresnet14_cifar10.pth")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=DEFAULT)
    p.add_argument("--model", default="qresnet14")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--limit", type=int, default=0, help="test images (0 = all)")
    args = p.parse_args(argv)

    import keras

    from quadkeras.data import load_data, seeded_subset
    from quadkeras.interop import import_torch_checkpoint, read_state_dict
    from quadkeras.interop.layouts import canonical_state
    from quadkeras.interop.verify import torch_logits

    data = load_data("cifar10", args.data_dir)
    x, y = seeded_subset(data.x_test, data.y_test, args.limit)
    images = ((x / 255.0 - np.asarray(data.mean)) / np.asarray(data.std)).astype("float32")
    model = import_torch_checkpoint(args.checkpoint, args.model)
    t0 = time.perf_counter()
    keras_logits = model.predict(images, batch_size=500, verbose=0)
    keras_s = time.perf_counter() - t0
    state = canonical_state(read_state_dict(args.checkpoint))  # QuadraLib's names (bearpaw's renamed)
    torch_out = np.concatenate([torch_logits(model.quadkeras_config, state, images[i:i + 500])
                                for i in range(0, len(images), 500)])
    print(f"backend={keras.backend.backend()} images={len(y)} checkpoint={os.path.basename(args.checkpoint)}")
    print(f"keras   acc {(keras_logits.argmax(1) == y).mean():.4f}  ({len(y) / keras_s:.0f} img/s predict)")
    print(f"pytorch acc {(torch_out.argmax(1) == y).mean():.4f}")
    print(f"top-1 agreement {(keras_logits.argmax(1) == torch_out.argmax(1)).mean():.4%}  "
          f"max |dlogit| {np.abs(keras_logits - torch_out).max():.3g}")


if __name__ == "__main__":
    main()
