"""Train-step img/s where the step is overhead-bound vs compute-bound: plain PyTorch and
quadkeras on each Keras backend, eager and compiled, in ONE table measured in one run (issue #26).

Models: `qresnet14` (float), `resnet20` (float) and `resnet20_lsq` (the zoo's ResNet-20 with
`quantize=scheme_from_flags("lsq", 4, 4)`, quantizers initialised with
`initialize_quantizers` before compiling). Rows, per model:

- plain PyTorch eager (the reference of the ratios) and under `torch.compile` of the network
  (`bench/plain_torch.py`: `quadkeras.interop.torch_nets`, LSQ written there from the paper);
- quadkeras on tensorflow, torch and jax, each `model.compile(..., jit_compile=False)`
  ("eager"; on tensorflow that is still a `tf.function` graph) and `jit_compile=True`
  ("compiled": XLA on tensorflow / jax; `torch.compile` on torch, with the trainer's
  `static_shape_torch_compile()` settings applied first, as `quadkeras.training.train` does).
  Optimizer: `CoupledDecaySGD(lr 0.1, momentum 0.9, l2 5e-4, global_clipnorm 0.5)`; the timed
  call is the step `fit` runs (`bench/train_step.py`'s `keras_side`).

Columns: the regimes, `overhead` (batch 2, 8x8 px, 1 thread: the per-step Python and
dispatch work dominates) and `compute` (batch 128, 32x32 px, the default thread count); each
cell is the median img/s over the rounds and its ratio to plain PyTorch eager of the same model
and regime; compiled rows also show their first step's seconds (compilation; not in the
timings). Then the LSQ W4A4 / float step-time ratio of ResNet-20 per row and regime (issue
target <= 1.3).

Each side runs in its own process per regime (KERAS_BACKEND and thread pools are per
process), driven over a pipe: one process works at a time; after each cell's warm-up the
timing rounds alternate over all cells (machine load hits all alike), in reverse order every
other round.

Usage:
    python bench/step_overhead.py                       # the full table (an hour or more on 2 cores)
    python bench/step_overhead.py --regimes=overhead --rounds=7 --steps=20
    python bench/step_overhead.py --rounds=5 --steps=20 --compute_steps=3   # both regimes
    python bench/step_overhead.py --models=resnet20,resnet20_lsq --backends=torch --modes=compiled
    python bench/step_overhead.py --models=resnet20_lsq --regimes=overhead --rounds=1 \\
        --steps=1 --warmup=1 --modes=eager               # smoke run
    python bench/step_overhead.py --models=resnet20_lsq --regimes=overhead --backends=torch \\
        --modes=compiled --rounds=1 --steps=2 --warmup=2  # one compiled torch row (compiles for minutes)
"""

import argparse
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))
sys.path.insert(0, BENCH)  # train_step.py, plain_torch.py (imported in the workers: keras,
# torch and jax may be imported only after `setup_process` chose the backend and threads)

# model key -> (zoo name, `scheme_from_flags` arguments or None); plain_torch.py builds the
# same keys (tests/test_step_overhead_bench.py checks its LSQ net against this scheme's plan)
MODELS = {"qresnet14": ("qresnet14", None), "resnet20": ("resnet20", None),
          "resnet20_lsq": ("resnet20", ("lsq", 4, 4))}
REGIMES = {
    "overhead": {"batch": 2, "size": 8, "threads": 1, "label": "overhead: batch 2, 8x8 px, 1 thread"},
    "compute": {"batch": 128, "size": 32, "threads": 0, "label": "compute: batch 128, 32x32 px, default threads"},
}
BACKENDS = ("tensorflow", "torch", "jax")
MODES = ("eager", "compiled")
PLAIN = "pytorch"  # the side that is not a Keras backend
LSQ_TARGET = 1.3


def _list_flag(p, name, value, allowed):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed] or ([] if items else [value])
    if bad:
        p.exit(1, f"error: Invalid --{name}={value!r}: expected a comma-separated list of "
                  f"{', '.join(allowed)}.\n")
    return list(dict.fromkeys(items))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"any of {', '.join(MODELS)}")
    p.add_argument("--regimes", default=",".join(REGIMES), help=f"any of {', '.join(REGIMES)}")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="Keras backends of the quadkeras rows (plain PyTorch always runs)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="eager (jit_compile=False) and/or compiled (jit_compile=True, torch.compile); "
                        "plain PyTorch eager always runs (the ratios' reference)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median)")
    p.add_argument("--steps", type=int, default=10, help="train steps per cell and round")
    p.add_argument("--compute_steps", type=int, default=None,
                   help="train steps per cell and round in the compute regime (default: --steps); "
                        "its steps are ~20x longer, so a full table can time fewer of them")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per cell, the first "
                   "(compiling) one included; compiled cells take at least 2")
    args = p.parse_args(argv)
    args.models = _list_flag(p, "models", args.models, tuple(MODELS))
    args.regimes = _list_flag(p, "regimes", args.regimes, tuple(REGIMES))
    args.backends = _list_flag(p, "backends", args.backends, BACKENDS)
    args.modes = _list_flag(p, "modes", args.modes, MODES)
    if args.compute_steps is None:
        args.compute_steps = args.steps
    for name in ("rounds", "steps", "compute_steps", "warmup"):
        if getattr(args, name) < 1:
            p.exit(1, f"error: Invalid --{name}={getattr(args, name)}: expected an integer >= 1.\n")
    return args


def regime_steps(args, regime):
    """Timed steps per cell and round in `regime` (`--compute_steps` in the compute one)."""
    return args.compute_steps if regime == "compute" else args.steps


def table_rows(backends, modes):
    """(side, mode) rows in table order: plain PyTorch first (its eager row always)."""
    rows = [(PLAIN, "eager")] + ([(PLAIN, "compiled")] if "compiled" in modes else [])
    return rows + [(b, m) for b in backends for m in MODES if m in modes]


def row_label(side, mode):
    if side == PLAIN:
        return "plain PyTorch " + ("eager" if mode == "eager" else "torch.compile")
    return f"quadkeras {side} jit_compile={mode == 'compiled'}"


# ------------------------------------------------------------------- worker side
def setup_process(side, threads):
    """Backend and thread settings of a worker; before keras / torch / jax are imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # plain PyTorch imports keras too (`torch_nets` reads zoo configs): torch, not tensorflow
    os.environ["KERAS_BACKEND"] = "torch" if side == PLAIN else side
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if side == "jax" and threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false").strip()
    if side in (PLAIN, "torch") and threads:
        import torch

        torch.set_num_threads(threads)
    if side == "tensorflow" and threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def make_cell(side, model, mode, regime):
    """A zero-argument train step of one cell (its model built, data made, nothing run)."""
    import numpy as np

    from train_step import _data, keras_side

    x, y = _data(regime["batch"], regime["size"])
    if side == PLAIN:
        import torch

        from plain_torch import plain_device, torch_side

        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(plain_device())
        yt = torch.from_numpy(y).long().to(plain_device())
        train, _ = torch_side(model, regime["batch"], compiled=mode == "compiled", init_x=xt)
        return lambda: train(xt, yt)
    import keras

    from quadkeras.quantize import scheme_from_flags

    if keras.backend.backend() != side:
        raise ValueError(f"Invalid side {side!r} for this process: its Keras backend is "
                         f"{keras.backend.backend()!r}.")
    keras.utils.set_random_seed(0)
    zoo_name, flags = MODELS[model]
    train, _ = keras_side(zoo_name, regime["batch"], "true" if mode == "compiled" else "false",
                          regime["size"], quantize=scheme_from_flags(*flags) if flags else None,
                          init_x=x)
    if side == "tensorflow":  # converted once, not on every step
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    return lambda: train(x, y)


def _seconds(step, repeat):
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - start) / repeat


def _one_line(err):
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"


def worker(conn, side, regime_name, warmup):
    """Child process of one side and regime: ("start", model, mode) builds a cell and runs its
    warm-up (-> first step seconds); ("time", model, mode, steps) -> seconds per step."""
    regime = REGIMES[regime_name]
    cells = {}
    try:
        setup_process(side, regime["threads"])
    except Exception as err:  # noqa: BLE001 (reported in the table, the run goes on)
        setup_error = _one_line(err)
    else:
        setup_error = None
    while True:
        cmd, *args = conn.recv()
        if cmd == "stop":
            return
        try:
            if setup_error:
                raise RuntimeError(setup_error)
            if cmd == "start":
                model, mode = args
                cells[model, mode] = step = make_cell(side, model, mode, regime)
                first = _seconds(step, 1)
                # compiled: at least two warm-up steps (torch.compile's second step may
                # compile again: the first one built the optimizer and metric variables)
                for _ in range(max(warmup, 2 if mode == "compiled" else 1) - 1):
                    step()
                conn.send(("ok", first))
            else:
                model, mode, steps = args
                conn.send(("ok", _seconds(cells[model, mode], steps)))
        except Exception as err:  # noqa: BLE001
            conn.send(("error", _one_line(err)))


# ------------------------------------------------------------------- parent side
class Side:
    """A worker process of one side in one regime."""

    def __init__(self, side, regime_name, warmup):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker, args=(child, side, regime_name, warmup), daemon=True)
        self.process.start()

    def ask(self, *request):
        """("ok", value) or ("error", one line); a dead worker is an error too."""
        try:
            self.conn.send(request)
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.process.join(5)
            return "error", f"worker process ended (exit code {self.process.exitcode})"

    def stop(self):
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)


def measure(args, log=print):
    """{(regime, model, side, mode): {"steps": [s/step per round], "first": s, "error": line}}."""
    rows = table_rows(args.backends, args.modes)
    results = {}
    for regime_name in args.regimes:
        sides = {side: Side(side, regime_name, args.warmup) for side in dict.fromkeys(s for s, _ in rows)}
        try:
            cells = [(model, side, mode) for model in args.models for side, mode in rows]
            for model, side, mode in cells:
                status, value = sides[side].ask("start", model, mode)
                cell = results[regime_name, model, side, mode] = {"steps": [], "first": None, "error": None}
                cell["first" if status == "ok" else "error"] = value
                log(f"  [{regime_name}] {model:13s} {row_label(side, mode):38s} "
                    + (f"first step {value:7.2f} s" if status == "ok" else f"failed: {value}"))
            for r in range(args.rounds):
                for model, side, mode in (cells if r % 2 == 0 else cells[::-1]):
                    cell = results[regime_name, model, side, mode]
                    if cell["error"]:
                        continue
                    status, value = sides[side].ask("time", model, mode, regime_steps(args, regime_name))
                    cell["steps" if status == "ok" else "error"] = (
                        cell["steps"] + [value] if status == "ok" else value)
        finally:
            for s in sides.values():
                s.stop()
    return results


def format_table(results, models, regimes, rows):
    """The table's lines: per model, per row, per regime median img/s, ratio to plain
    PyTorch eager (same model and regime) and, compiled rows, the first step's seconds."""
    cell_w = 29  # _cell_text: three 9-wide fields
    head = f"{'model':13s} {'row':38s}" + "".join(f" | {r:^{cell_w}s}" for r in regimes)
    sub = f"{'':13s} {'':38s}" + "".join(f" | {'img/s':>9s} {'vs eager':>9s} {'1st s':>9s}"
                                         for _ in regimes)
    lines = [head, sub, "-" * len(head)]
    for model in models:
        for i, (side, mode) in enumerate(rows):
            line = f"{model if i == 0 else '':13s} {row_label(side, mode):38s}"
            for regime in regimes:
                line += " | " + _cell_text(results, regime, model, side, mode, cell_w)
            lines.append(line)
    return lines


def img_per_s(results, regime, model, side, mode):
    """Median img/s of a cell, or None (failed or not measured)."""
    cell = results.get((regime, model, side, mode))
    if not cell or cell["error"] or not cell["steps"]:
        return None
    return REGIMES[regime]["batch"] / statistics.median(cell["steps"])


def _cell_text(results, regime, model, side, mode, width):
    cell = results.get((regime, model, side, mode))
    if cell and cell["error"]:
        return f"{'failed (see below)':>{width}s}"
    ips = img_per_s(results, regime, model, side, mode)
    if ips is None:
        return f"{'-':>{width}s}"
    ref = img_per_s(results, regime, model, PLAIN, "eager")
    ratio = f"{ips / ref:8.2f}x" if ref else f"{'-':>9s}"
    first = f"{cell['first']:9.1f}" if mode == "compiled" and cell["first"] is not None else f"{'-':>9s}"
    return f"{ips:9.1f} {ratio} {first}"


def lsq_ratio_lines(results, regimes, rows):
    """ResNet-20 LSQ W4A4 / float step-time ratios per row and regime (target <= 1.3)."""
    lines = [f"ResNet-20 LSQ W4A4 / float step time (issue target <= {LSQ_TARGET}):",
             f"  {'row':38s}" + "".join(f" | {r:>9s}" for r in regimes)]
    for side, mode in rows:
        line = f"  {row_label(side, mode):38s}"
        for regime in regimes:
            q = img_per_s(results, regime, "resnet20_lsq", side, mode)
            f = img_per_s(results, regime, "resnet20", side, mode)
            line += f" | {f / q:8.2f}x" if q and f else f" | {'-':>9s}"
        lines.append(line)
    return lines


def error_lines(results):
    return [f"  {model} / {row_label(side, mode)} / {regime}: {cell['error']}"
            for (regime, model, side, mode), cell in results.items() if cell["error"]]


def report(results, args):
    """All the lines the bench prints after measuring."""
    rows = table_rows(args.backends, args.modes)
    steps = " / ".join(f"{regime_steps(args, r)} ({r})" for r in args.regimes)
    lines = [f"train-step img/s, median of {args.rounds} rounds x {steps} steps after "
             f"{args.warmup} warm-up steps per cell; 'vs eager' = / plain PyTorch eager, same "
             "model and regime; '1st s' = first (compiling) step, compiled rows"]
    lines += [f"  {REGIMES[r]['label']}" for r in args.regimes]
    lines += format_table(results, args.models, args.regimes, rows)
    if {"resnet20", "resnet20_lsq"} <= set(args.models):
        lines += [""] + lsq_ratio_lines(results, args.regimes, rows)
    errors = error_lines(results)
    if errors:
        lines += ["", "failed cells:"] + errors
    return lines


def main(argv=None):
    args = parse_args(argv)
    print(f"measuring {len(args.models)} models x {len(table_rows(args.backends, args.modes))} rows "
          f"x {len(args.regimes)} regimes (one process per side and regime)", flush=True)
    results = measure(args, log=lambda line: print(line, flush=True))
    print("\n".join(report(results, args)))
    return results


if __name__ == "__main__":
    main()
