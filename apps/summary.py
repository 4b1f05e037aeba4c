"""Per-layer model summary: type, neuron, output shape, params, MACs, bits, memory, BOPs.

    python apps/summary.py --model=qresnet14
    python apps/summary.py --model=qvgg7 --quantize=lsq --weight_bits=4 --activation_bits=4 \
        --json=/tmp/qvgg7_summary.json --plot=/tmp/qvgg7_layers.png
"""

from absl import flags

import _common

from quadkeras.autobuilder.source import load_model_and_config
from quadkeras.summary import print_summary

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "qresnet14", "Zoo name, .yaml/.json config, or a .keras model.")
flags.DEFINE_integer("num_classes", None, "Replace the config's number of classes.")
flags.DEFINE_list("input_shape", None, "Replace the config's input shape, e.g. 16,16,1.")
flags.DEFINE_string("quantize", None, "Quantization method for scheme_from_flags (e.g. lsq).")
flags.DEFINE_integer("weight_bits", 8, "Weight bits with --quantize.")
flags.DEFINE_integer("activation_bits", 8, "Activation bits with --quantize.")
flags.DEFINE_string("json", None, "Also write the summary as JSON to this path.")
flags.DEFINE_string("plot", None, "Also draw params, MACs and weight bits per layer into this PNG.")


def main(argv):
    del argv
    shape = tuple(int(d) for d in FLAGS.input_shape) if FLAGS.input_shape else None
    model, _ = load_model_and_config(FLAGS.model, num_classes=FLAGS.num_classes, input_shape=shape)
    if FLAGS.quantize:
        from quadkeras.quantize import quantize_model, scheme_from_flags  # noqa: PLC0415

        model = quantize_model(model, scheme_from_flags(FLAGS.quantize, FLAGS.weight_bits,
                                                        FLAGS.activation_bits))
    summary = print_summary(model)
    if FLAGS.json:
        summary.to_json(FLAGS.json)
        print(f"wrote {FLAGS.json}")
    if FLAGS.plot:
        from quadkeras.report import plot_layers, try_plot  # noqa: PLC0415

        try_plot(plot_layers, summary, FLAGS.plot)


if __name__ == "__main__":
    _common.run(main)
