"""Per-layer model summary: type, neuron, output shape, params, MACs, bits, memory, BOPs.

    quadkeras-summary --model=qresnet14
    quadkeras-summary --model=qvgg7 --quant=lsq --wbits=4 --abits=4 \
        --json=/tmp/qvgg7_summary.json --plot=/tmp/qvgg7_layers.png

(`--quantize` / `--weight_bits` / `--activation_bits`: deprecated spellings of the quantizer
flags.)
"""

from absl import flags

from quadkeras.autobuilder.source import load_model_and_config
from quadkeras.cli import common
from quadkeras.cli.flag_table import define, define_aliases

from quadkeras.quantize.model import quant_scheme, quantize_model
from quadkeras.report import plot_layers, try_plot
from quadkeras.summary import print_summary

FLAGS = flags.FLAGS
define(["model", "quant", "wbits", "abits", "input_shape", "plot"], wbits=8, abits=8,
       notes={"plot": "Here: params, MACs and weight bits per layer."})
define_aliases("quantize", "weight_bits", "activation_bits")
flags.DEFINE_integer("num_classes", None, "Replace the config's number of classes.")
flags.DEFINE_string("json", None, "Also write the summary as JSON to this path.")


def app_main(argv):
    del argv
    shape = tuple(int(d) for d in FLAGS.input_shape) if FLAGS.input_shape else None
    model, _ = load_model_and_config(FLAGS.model, num_classes=FLAGS.num_classes, input_shape=shape)
    if FLAGS.quant:
        model = quantize_model(model, quant_scheme(FLAGS.quant, FLAGS.wbits, FLAGS.abits))
    summary = print_summary(model)
    if FLAGS.json:
        summary.to_json(FLAGS.json)
        print(f"wrote {FLAGS.json}")
    if FLAGS.plot:
        try_plot(plot_layers, summary, FLAGS.plot)


def main(argv=None):
    """The console script `quadkeras-summary` (argv: default sys.argv)."""
    common.run(app_main, argv)


if __name__ == "__main__":
    main()
