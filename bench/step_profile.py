"""Where a torch train step's time goes: the top ops of `torch.profiler` over a few steps of a
zoo model on the torch backend, eager or compiled, with inductor's kernels named one by one.

The step is `bench/train_step.py`'s `keras_side` (the step `fit` runs, the trainer's compile
settings and fast forward). Compiled (`--jit_compile=true`), inductor's generated C++ kernels
get a profiler record each (`torch._inductor.config.cpp.enable_kernel_profile`), so a slow
fused kernel shows by name instead of inside one `CompiledFxGraph` call; the dynamo counters
(frames, graph breaks) print first. This is how issue #26's compiled LSQ backward was found:
one fused kernel that read a kernel's gradient element by element, 2.1 ms of a ~11 ms step
(docs/speed_log.md, "2026-12-06, later").

    python bench/step_profile.py --model=resnet20 --lsq --jit_compile=true
    python bench/step_profile.py --model=qresnet14 --jit_compile=false --batch=2 --size=8
"""

import argparse
import os
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))
sys.path.insert(0, BENCH)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20", help="a zoo model name")
    p.add_argument("--lsq", action="store_true", help="LSQ W4A4 (scheme_from_flags('lsq', 4, 4))")
    p.add_argument("--jit_compile", default="true", choices=("true", "false"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=8, help="image side, px")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps")
    p.add_argument("--rows", type=int, default=30, help="ops printed, by self CPU time")
    args = p.parse_args(argv)
    for name in ("batch", "size", "steps", "rows"):
        if getattr(args, name) < 1:
            p.error(f"Invalid --{name}={getattr(args, name)}: expected an integer >= 1.")
    os.environ["KERAS_BACKEND"] = "torch"  # before keras is first imported, here by the zoo
    from quadkeras.models.zoo import ZOO

    if args.model not in ZOO:
        p.error(f"Invalid --model={args.model!r}: expected one of {', '.join(sorted(ZOO))}.")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "torch"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters
    from torch.profiler import ProfilerActivity, profile

    import keras
    from quadkeras.quantize import scheme_from_flags
    from train_step import _data, keras_side

    inductor_config.cpp.enable_kernel_profile = True
    keras.utils.set_random_seed(0)
    x, y = _data(args.batch, args.size)
    scheme = scheme_from_flags("lsq", 4, 4) if args.lsq else None
    train, _ = keras_side(args.model, args.batch, args.jit_compile, args.size, quantize=scheme, init_x=x)
    start = time.perf_counter()
    train(x, y)
    print(f"first step {time.perf_counter() - start:.1f} s")
    for _ in range(3):
        train(x, y)
    if args.jit_compile == "true":
        print("dynamo:", {k: sum(v.values()) for k, v in counters.items() if k in ("frames", "graph_break", "stats")})
    start = time.perf_counter()
    for _ in range(args.steps):
        train(x, y)
    print(f"{(time.perf_counter() - start) / args.steps * 1e3:.2f} ms a step (unprofiled)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            train(x, y)
    print(f"{args.steps} profiled steps:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
