"""Where the LSQ W4A4 / float train-step ratio of issue #26 goes (overhead-bound regime: batch 2,
8x8 px, one thread), for the Keras backend of this process.

Cells, built like `bench/step_overhead.py`'s (`train_step.keras_side`) and timed in
interleaved rounds (median; the machine's load hits all alike), each as a ratio to the float
ResNet-20:

- `lsq`: the zoo's ResNet-20 with LSQ W4A4 (36 quantizers: 18 kernels, 18 inputs);
- `lsq_frozen`: the same with every LSQ `step` non-trainable (no step gradient, no optimizer
  update of the 36 scalar variables): `lsq - lsq_frozen` is the cost of training the steps;
- `lsq_w` / `lsq_a`: weights only / activations only.

Diagnostic cells only: nothing here changes the library. With `--ops` it also prints the op
counts of the traced train step, float vs LSQ, and their difference per quantizer (jax: jaxpr
equations and the compiled HLO's top-level kernels; tensorflow: `tf.function` graph ops).

    KERAS_BACKEND=jax python bench/lsq_breakdown.py --ops
    KERAS_BACKEND=tensorflow python bench/lsq_breakdown.py --jit_compile=false --rounds=11
"""

import argparse
import collections
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CELLS = {"float": None, "lsq": (4, 4), "lsq_frozen": (4, 4), "lsq_w": (4, None), "lsq_a": (None, 4)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default=",".join(CELLS), help="any of " + ", ".join(CELLS))
    p.add_argument("--jit_compile", default="true", choices=("true", "false"),
                   help="true: XLA (jax jit, tf XLA); false: jax eager, tensorflow graph")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ops", action="store_true", help="also count the traced step's ops")
    args = p.parse_args(argv)
    args.cells = [c for c in args.cells.split(",") if c]
    for c in args.cells:
        if c not in CELLS:
            p.error(f"Invalid cell {c!r}: expected one of {', '.join(CELLS)}.")
    if "float" not in args.cells:
        args.cells.insert(0, "float")
    return args


def setup_one_thread():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)


def freeze_steps(model):
    """Make every LSQ `step` non-trainable (before compiling)."""
    from quadkeras.quantizers.lsq import LSQ

    for layer in model._flatten_layers():
        if isinstance(layer, LSQ):
            layer.step.trainable = False


def make_cell(name, jit_compile, x, y):
    import keras

    from quadkeras.quantize import scheme_from_flags
    from train_step import keras_side

    keras.utils.set_random_seed(0)
    bits = CELLS[name]
    holder = {}

    def prepare(model):
        holder["model"] = model
        if name == "lsq_frozen":
            freeze_steps(model)

    train, _ = keras_side("resnet20", 2, jit_compile, 8, init_x=x, prepare=prepare,
                          quantize=scheme_from_flags("lsq", *bits) if bits else None)
    if keras.backend.backend() == "tensorflow":
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    return (lambda: train(x, y)), holder


def count_ops(model, x, y):
    """Counter of op names in the traced train step (jax: jaxpr equations, sub-jaxprs walked,
    plus "hlo:<opcode>" of the compiled entry computation; tensorflow: graph ops)."""
    import keras

    counts = collections.Counter()
    data = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
    if keras.backend.backend() == "jax":
        import re

        import jax

        state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True)

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                counts[eqn.primitive.name] += 1
                for param in eqn.params.values():
                    for sub in param if isinstance(param, (list, tuple)) else [param]:
                        inner = getattr(sub, "jaxpr", sub)
                        if hasattr(inner, "eqns"):
                            walk(inner)

        walk(jax.make_jaxpr(model.train_step)(state, data).jaxpr)
        hlo = jax.jit(model.train_step).lower(state, data).compile().as_text()
        entry = hlo[hlo.index("\nENTRY "):]
        entry = entry[:entry.index("\n}")]
        for line in entry.splitlines():
            m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = .*? ([a-z][\w\-]*)\(", line)
            if m and m.group(1) not in ("parameter", "constant", "tuple", "get-tuple-element"):
                counts["hlo:" + m.group(1)] += 1
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(model.train_step).get_concrete_function(data).graph
        for op in graph.get_operations():
            counts[op.type] += 1
    return counts


def main(argv=None):
    args = parse_args(argv)
    setup_one_thread()
    import keras

    from train_step import _data

    x, y = _data(2, 8)
    cells, models = {}, {}
    for name in args.cells:
        cells[name], holder = make_cell(name, args.jit_compile, x, y)
        for _ in range(3):  # builds, compiles, warms up
            cells[name]()
        models[name] = holder["model"]
    seconds = {name: [] for name in cells}
    for _ in range(args.rounds):
        for name, step in cells.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(seconds["float"])
    print(f"{keras.backend.backend()} jit_compile={args.jit_compile}: ResNet-20, batch 2, 8x8 px, "
          f"1 thread, median of {args.rounds} rounds x {args.steps} steps")
    for name, times in seconds.items():
        t = statistics.median(times)
        print(f"  {name:11s} {t * 1e3:8.3f} ms/step   / float {t / base:.3f}")
    if args.ops and "lsq" in models and keras.backend.backend() in ("jax", "tensorflow"):
        quantizers = sum(1 for layer in models["lsq"]._flatten_layers() if type(layer).__name__ == "LSQ")
        f, q = count_ops(models["float"], x, y), count_ops(models["lsq"], x, y)
        for title, keep in (("traced ops", lambda k: not k.startswith("hlo:")),
                            ("compiled HLO kernels", lambda k: k.startswith("hlo:"))):
            keys = [k for k in set(f) | set(q) if keep(k)]
            if not keys:
                continue
            tf_, tq = sum(f[k] for k in keys), sum(q[k] for k in keys)
            print(f"{title}: float {tf_}, lsq {tq} (+{(tq - tf_) / quantizers:.1f} per quantizer, "
                  f"{quantizers} quantizers)")
            for k in sorted(keys, key=lambda k: (f[k] - q[k], k)):
                if q[k] != f[k]:
                    print(f"  {k:28s} {f[k]:6d} {q[k]:6d}  {(q[k] - f[k]) / quantizers:+6.2f}/q")


if __name__ == "__main__":
    main()
