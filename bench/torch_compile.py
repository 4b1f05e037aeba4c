"""Eager vs `torch.compile` train step of a zoo model on the torch backend, side by side.

Compiles the way `quadkeras.training.train` does for `jit_compile: true` (static shapes, see
`quadkeras.training.static_shape_torch_compile`); reports the median step time of
each mode, their ratio, and how long the first two (compiling) steps took.

    python bench/torch_compile.py --model=resnet20
    python bench/torch_compile.py --model=qresnet14 --batch=2 --image=8      # overhead-bound
    python bench/torch_compile.py --model=resnet20 --wbits=4 --abits=4 --batch=2 --image=8
"""

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--wbits", type=int, default=0, help="LSQ weight bits (0: float model)")
    p.add_argument("--abits", type=int, default=0, help="LSQ activation bits (0: float)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode (median)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "torch"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np
    import keras
    import torch

    from quadkeras.models import build_model
    from quadkeras.quantize import initialize_quantizers, scheme_from_flags
    from quadkeras.training import static_shape_torch_compile

    static_shape_torch_compile()
    scheme = scheme_from_flags("lsq", args.wbits, args.abits) if args.wbits or args.abits else None
    x = torch.rand(args.batch, args.image, args.image, 3)
    y = torch.randint(0, 10, (args.batch,))
    results = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model(args.model, num_classes=10, input_shape=(args.image, args.image, 3),
                            quantize=scheme)
        initialize_quantizers(model, x)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        results["compiled" if jit else "eager"] = (first, 1e3 * float(np.median(times)))
    print(f"model={args.model} wbits={args.wbits} abits={args.abits} batch={args.batch} "
          f"image={args.image} threads={torch.get_num_threads()}")
    for mode, (first, ms) in results.items():
        print(f"  {mode:>8}: {ms:8.1f} ms/step   first two steps {first:6.1f} s")
    print(f"  compiled speed / eager = {results['eager'][1] / results['compiled'][1]:.2f}x")
    return results


if __name__ == "__main__":
    main()
