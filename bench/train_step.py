"""Train-step and inference img/s: quadkeras zoo models vs plain PyTorch, side by side.

For each model (default qresnet14, resnet20, resnet32) the quadkeras model (current Keras
backend, this process) and the plain PyTorch network in QuadraLib's layout
(`quadkeras.interop.torch_nets`, three `nn.Conv2d` + `nn.BatchNorm2d` per quadratic layer; a
child process driven over a pipe, so TF's spinning thread pools cannot starve it) are
trained on the same random CIFAR-shaped batch with the seed recipe's optimizer: SGD lr 0.1,
momentum 0.9, coupled weight decay 5e-4 (`CoupledDecaySGD` / `torch.optim.SGD`), global
grad-norm clip 0.5. After warm-up, timing rounds alternate between the two (machine load hits
both alike); each prints its median step img/s and the ratio quadkeras / PyTorch.

Inference: Keras `model.predict` (batches of `--batch`) vs PyTorch `eval()` under
`torch.inference_mode()`, same images, interleaved the same way.

Usage:
    KERAS_BACKEND=torch python bench/train_step.py
    KERAS_BACKEND=tensorflow python bench/train_step.py --models=qresnet14 --steps=8
    KERAS_BACKEND=torch python bench/train_step.py --no-infer --rounds=3
    KERAS_BACKEND=tensorflow python bench/train_step.py --threads=1   # loaded machine
    KERAS_BACKEND=torch python bench/train_step.py --batch=2 --image_size=8 --no-infer \
        --threads=1 --steps=20   # per-step framework overhead: compute is negligible here
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/plain_torch.py


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="qresnet14,resnet20,resnet32")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image_size", type=int, default=32, help="square input side (both sides); a "
                   "tiny one with a tiny batch measures the per-step overhead, not the math")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=2, help="train steps per round and side")
    p.add_argument("--infer_batches", type=int, default=4, help="predict batches per round")
    p.add_argument("--no-infer", dest="infer", action="store_false")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of torch (both sides) and tensorflow (0: their defaults); "
                        "on a loaded machine OpenMP barriers with >1 thread stall for whole slices")
    p.add_argument("--jit_compile", default="auto", choices=("auto", "true", "false"))
    return p.parse_args(argv)


def keras_side(name, batch, jit_compile, size=32, quantize=None, init_x=None, prepare=None):
    """(train step fn, predict fn) of the quadkeras zoo model, compiled like the trainer.

    `quantize`: a scheme (e.g. `scheme_from_flags("lsq", 4, 4)`); its quantizers are
    initialised from `init_x` (default: a random batch) with `initialize_quantizers` before
    compiling, as `quadkeras.training.train` does. `jit_compile="true"` on torch applies the
    trainer's static-shape `torch.compile` settings first. The train fn runs the step `fit`
    runs: `train_on_batch` on tensorflow; `train_function` on one batch on torch and jax (on
    jax with the state carried from step to step as `fit` does, not written back to the
    variables after every step as `train_on_batch` does; `predict` writes it back first).
    `prepare(model)` (optional) runs on the built, initialised model before it is compiled
    (`bench/lsq_breakdown.py` freezes variables there)."""
    import keras

    from quadkeras.models import build_model
    from quadkeras.quantize import initialize_quantizers
    from quadkeras.optimizers.sgd import CoupledDecaySGD

    backend = keras.backend.backend()
    model = build_model(name, num_classes=10, input_shape=(size, size, 3), quantize=quantize)
    if quantize is not None:
        initialize_quantizers(model, init_x if init_x is not None else _data(batch, size)[0])
    if prepare is not None:
        prepare(model)
    opt = CoupledDecaySGD(learning_rate=0.1, momentum=0.9, l2=5e-4, global_clipnorm=0.5)
    jit = {"auto": "auto", "true": True, "false": False}[jit_compile]
    if jit is True and backend == "torch":
        from quadkeras.training.trainer import static_shape_torch_compile

        static_shape_torch_compile()
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    from quadkeras.training import fast_torch_forward

    fast_torch_forward(model)  # torch, eager and compiled: as the trainer (no-op elsewhere)

    state = {}

    def train(x, y):
        if backend == "tensorflow":
            return float(model.train_on_batch(x, y))
        # torch: `train_on_batch` also redoes the symbolic-build bookkeeping on every call
        # (~4 ms a step here); jax: it also assigns every variable after every step
        if not state:
            # backend tensors, as `fit`'s data adapter gives them (numpy here would make a
            # compiled torch step trace and compile twice: once for arrays, once for tensors)
            state["data"] = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
            model.train_on_batch(*state["data"])  # builds model, optimizer and metrics
            model.make_train_function()
        if backend == "jax":
            if "jax" not in state:  # (again) after `predict` wrote the state back
                state["jax"] = model._get_jax_state(
                    trainable_variables=True, non_trainable_variables=True,
                    optimizer_variables=True, metrics_variables=True)
            logs, state["jax"] = model.train_function(state["jax"], iter([state["data"]]))
            model._jax_state = dict(zip(("trainable_variables", "non_trainable_variables",
                                         "optimizer_variables", "metrics_variables"), state["jax"]))
            model._jax_state_synced = False  # as `fit`: written back when something reads them
        else:
            logs = model.train_function([state["data"]])
        return float(keras.ops.convert_to_numpy(logs["loss"]))

    def predict(x):
        if backend == "jax":
            model.jax_state_sync()
            state.pop("jax", None)  # variables now hold it; the next step reads them again
        return model.predict(x, batch_size=batch, verbose=0)
    return train, predict


def torch_worker(conn, name, batch, infer_batches, threads, size=32):
    """Child process: the PyTorch reference, timed on request ("train" / "infer" -> seconds).

    Own process so that neither side's thread pools (TF's spin-waiting ones) starve the
    other; the parent is blocked on the pipe while the child computes."""
    import numpy as np
    import torch

    from plain_torch import torch_side

    if threads:
        torch.set_num_threads(threads)
    x, y = _data(batch, size)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y).long()
    xit = torch.cat([xt] * infer_batches)
    train, predict = torch_side(name, batch, init_x=xt)
    while True:
        cmd, repeat = conn.recv()
        if cmd == "stop":
            return
        conn.send(_time(train, xt, yt, repeat=repeat) if cmd == "train" else _time(predict, xit))


def _data(batch, size=32):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((batch, size, size, 3)).astype("float32"), rng.integers(0, 10, batch)


def _time(fn, *args, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    return (time.perf_counter() - start) / repeat


def bench_model(name, args):
    import multiprocessing

    import numpy as np

    x, y = _data(args.batch, args.image_size)
    conn, child_conn = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=torch_worker, args=(child_conn, name, args.batch, args.infer_batches, args.threads,
                                        args.image_size),
        daemon=True)
    child.start()

    def torch_time(cmd, repeat=1):
        conn.send((cmd, repeat))
        return conn.recv()

    k_train, k_pred = keras_side(name, args.batch, args.jit_compile, args.image_size)
    for _ in range(args.warmup):
        k_train(x, y)
        torch_time("train")
    times = {"keras": [], "torch": []}
    for _ in range(args.rounds):
        times["keras"].append(_time(k_train, x, y, repeat=args.steps))
        times["torch"].append(torch_time("train", args.steps))
    result = {"train": {k: args.batch / float(np.median(v)) for k, v in times.items()}}
    if args.infer:
        n = args.batch * args.infer_batches
        xi = np.concatenate([x] * args.infer_batches)
        k_pred(xi[: args.batch])
        torch_time("infer")
        inf = {"keras": [], "torch": []}
        for _ in range(args.rounds):
            inf["keras"].append(_time(k_pred, xi))
            inf["torch"].append(torch_time("infer"))
        result["infer"] = {k: n / float(np.median(v)) for k, v in inf.items()}
    conn.send(("stop", 0))
    child.join()
    return result


def main(argv=None):
    args = parse_args(argv)
    import keras
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"backend={keras.backend.backend()} batch={args.batch} image={args.image_size}px threads={args.threads or 'default'} "
          f"rounds={args.rounds}x{args.steps} steps (warm-up {args.warmup}) jit_compile={args.jit_compile}")
    results = {}
    for name in args.models.split(","):
        r = bench_model(name, args)
        results[name] = r
        tr = r["train"]
        print(f"  {name:10s} train img/s: quadkeras {tr['keras']:7.1f}  pytorch {tr['torch']:7.1f}  "
              f"ratio {tr['keras'] / tr['torch']:.2f}x", flush=True)
        if "infer" in r:
            inf = r["infer"]
            print(f"  {'':10s} infer img/s: keras predict {inf['keras']:7.1f}  "
                  f"pytorch eval {inf['torch']:7.1f}  ratio {inf['keras'] / inf['torch']:.2f}x", flush=True)
    return results


if __name__ == "__main__":
    main()
