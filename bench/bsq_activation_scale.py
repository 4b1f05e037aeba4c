"""BSQ's per-batch activation scale vs the fixed scale export uses, on digits.

A ResNet-20 trained briefly in float on digits is converted with `to_bsq(bits=8, abits=4)`
(ReLU6 + max-abs 4-bit block activations, no search). Its test accuracy is measured with the
reference's per-batch scale at several eval batch sizes, and with the scales fixed at their
max over training images (`fix_activation_scales`, what export does).

    KERAS_BACKEND=jax python bench/bsq_activation_scale.py --epochs=3
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--calibration_images", type=int, default=200)
    p.add_argument("--batch_sizes", default="1,8,32,128,360")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    from quadkeras.bsq import activation_scales, fix_activation_scales, to_bsq
    from quadkeras.data import dataset_arrays
    from quadkeras.models import build_model

    keras.utils.set_random_seed(0)
    x_train, y_train = dataset_arrays("digits", "train")
    x_test, y_test = dataset_arrays("digits", "test")
    model = build_model("resnet20", num_classes=10, input_shape=x_train.shape[1:])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)

    def accuracy(m, batch):
        out = np.concatenate([keras.ops.convert_to_numpy(m(x_test[i:i + batch], training=False))
                              for i in range(0, len(x_test), batch)])
        return 100.0 * float(np.mean(out.argmax(-1) == y_test))

    bsq = to_bsq(model, bits=8, abits=4)
    print(f"float model: {accuracy(model, 128):.2f} %")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        print(f"BSQ, per-batch scale (reference), eval batch {batch}: {accuracy(bsq, batch):.2f} %")
    fixed = fix_activation_scales(bsq, x_train[:args.calibration_images])
    print(f"BSQ, fixed scale (max over {args.calibration_images} train images): "
          f"{accuracy(fixed, 1):.2f} % (batch 1), {accuracy(fixed, 128):.2f} % (batch 128)")
    scales = np.array(list(activation_scales(fixed).values()))
    capped = np.isclose(scales, 6.0, atol=1e-4)  # the ReLU6 cap (to float rounding)
    print(f"fixed scales: {int(capped.sum())} of {len(scales)} at the ReLU6 cap 6.0, the others "
          f"{scales[~capped].min():.2f}-{scales[~capped].max():.2f}")


if __name__ == "__main__":
    main()
