"""Train-step time of ResNet-20 FP32 vs the same model with LSQ W4A4, side by side in one run.

Both models are built and compiled in the same process; after warm-up, timing rounds
alternate between them (so machine load hits both alike) and the median step time of each
is reported with the ratio quantized / float (target <= 1.3x).

Usage:
    python bench/quant_step.py --backend=tensorflow --batch=64 --rounds=5 --steps=5
    python bench/quant_step.py --backend=torch --method=lsq --wbits=4 --abits=4
    python bench/quant_step.py --backend=tensorflow --jit_compile=true   # XLA fuses the STE ops
    python bench/quant_step.py --backend=tensorflow --compare_in_step_init  # + data init inside the step

The quantized model's data-dependent parameters are initialised before the timed steps with
`initialize_quantizers` (what `quadkeras.training.train` does), so its train step carries no
data-init branch; `--compare_in_step_init` adds a third model that initialises inside its
first `fit` step instead and keeps that branch in its compiled step (the user `model.fit`
path without the call).
"""

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="tensorflow", choices=("tensorflow", "torch", "jax"))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--method", default="lsq")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="train steps per timing round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jit_compile", default="auto", choices=("auto", "true", "false"),
                   help="Keras compile(jit_compile=...) for both models (XLA on TF/JAX)")
    p.add_argument("--compare_in_step_init", action="store_true",
                   help="also time a quantized model whose data init stays in the train step")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np
    import keras

    from quadkeras.models import build_model
    from quadkeras.quantize import initialize_quantizers, scheme_from_flags

    keras.utils.set_random_seed(0)
    shape = (args.image, args.image, 3)
    scheme = scheme_from_flags(args.method, args.wbits, args.abits)
    quantized = f"{args.method}_w{args.wbits}a{args.abits}"
    models = {
        "fp32": build_model(args.model, num_classes=10, input_shape=shape),
        quantized: build_model(args.model, num_classes=10, input_shape=shape, quantize=scheme),
    }
    if args.compare_in_step_init:
        models[quantized + "_in_step_init"] = build_model(args.model, num_classes=10,
                                                          input_shape=shape, quantize=scheme)
    x = np.random.default_rng(0).random((args.batch,) + shape).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, args.batch)
    initialize_quantizers(models[quantized], x)
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)  # no per-step conversion
    for model in models.values():
        jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = model.train_on_batch(x, y)
            float(np.asarray(loss if np.isscalar(loss) else loss[0]))  # sync
            times[name].append((time.perf_counter() - start) / args.steps)
    medians = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    fp = medians["fp32"]
    print(f"backend={args.backend} model={args.model} batch={args.batch} image={args.image} "
          f"rounds={args.rounds}x{args.steps} steps jit_compile={args.jit_compile}")
    for name, ms in medians.items():
        print(f"  {name:>12}: {ms:8.1f} ms/step  ({args.batch / ms * 1e3:7.1f} img/s)")
    for name in list(medians)[1:]:
        print(f"  ratio {name} / fp32 = {medians[name] / fp:.2f}x")
    return medians


if __name__ == "__main__":
    main()
