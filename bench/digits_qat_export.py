"""QAT int8 export parity on digits: the `tests/test_export.py` model, per QAT preset.

    KERAS_BACKEND=tensorflow python bench/digits_qat_export.py

Trains the test's tiny model (Conv2D+BN, QuadConv2D `ours`, Dense) 4 float epochs (seed 0),
fine-tunes it 2 epochs under each preset, exports `litert_qat` and prints top-1 agreement,
max |dlogit| and the op census on the 360 digits test images.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    import keras

    from quadkeras.export import export_model
    from quadkeras.quantize import quantize_model
    from tests.test_export import fit, tiny_model

    for preset in ("int8_qat", "int8_qat_fold_bn"):
        keras.utils.set_random_seed(0)
        qat = fit(quantize_model(fit(tiny_model(), epochs=4), preset), epochs=2)
        report = export_model(qat, tempfile.mkdtemp(), formats=("litert_qat",), eval_data="digits",
                              latency_runs=20, verbose=False)["formats"]["litert_qat"]
        c = report["census"]
        print(f"{preset:18s} agree {100 * report['top1_agreement']:.2f}%  max|dlogit| "
              f"{report['max_abs_diff']:.3f} (logits up to {report['max_abs_logit']:.1f})  "
              f"conv/dense int8 {c['weight_ops_int8']}/{c['weight_ops']}  ops {c['total_ops']}  "
              f"{report['size_bytes'] / 1024:.1f} KiB", flush=True)


if __name__ == "__main__":
    main()
