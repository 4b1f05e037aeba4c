"""1 device vs 2 simulated devices (`distribute="data_parallel"`): correctness and overhead.

For each backend, the digits quickstart (configs/quickstart.cfg's recipe, a seeded subset)
is trained on one device and as 2 data-parallel replicas at the same GLOBAL batch, then the
2-replica run is repeated with a simulated kill after epoch 1 and `resume=True`. Printed
(and written to --json): per-epoch training loss of both runs, the largest weight
difference 2-replica vs 1-device and resumed vs straight (relative:
`max |a - b| / max(1, max |a|)` per weight), and the fit time ratio.

Simulated devices (CPU only): jax `XLA_FLAGS=--xla_force_host_platform_device_count=2`;
tensorflow two logical CPU devices; torch two gloo processes launched with torchrun. The two
"devices" share the same CPU cores, so the ratio is the distribution overhead, not a speedup.

    PYTHONPATH=$PWD python bench/distribute_overhead.py --backends=jax,tensorflow,torch \\
        --epochs=3 --max_train=512 --json=/tmp/dist.json
    PYTHONPATH=$PWD python bench/distribute_overhead.py --quant=lsq ...   # QAT (LSQ 8/8)

`tests/test_distribute.py` runs it small (one backend, 2 epochs) and checks the tolerances.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = ("single", "bad_batch", "dp", "dp_kill", "dp_resume")


def run_config(args, work_dir, distribute, resume=False):
    """The quickstart recipe on a seeded digits subset (configs/quickstart.cfg)."""
    return {"model": os.path.join(REPO, "configs/models/quickstart_qresnet.yaml"),
            "dataset": "digits", "epochs": args.epochs, "batch_size": args.batch_size,
            "max_train": args.max_train, "max_test": args.max_test, "lr": 0.1, "momentum": 0.9,
            "wd": 5e-4, "schedule": "cosine", "final_lr": 1e-4, "augment": "none",
            "grad_clip": 0.5, "seed": 0, "deterministic": True, "tensorboard": False,
            "verbose": 0, "work_dir": work_dir, "distribute": distribute, "resume": resume,
            "quant": args.quant, "wbits": 8, "abits": 8, "quant_first_last": bool(args.quant),
            "quant_shortcut": bool(args.quant)}


class _Kill(Exception):
    pass


def _kill_after(epochs):
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs:
                raise _Kill(f"simulated kill after epoch {epochs}")

    return Kill()


def _record(work_dir, summary, out_dir, name):
    """history.csv rows and last.keras weights of a finished run -> out_dir/name.{json,npz}."""
    import csv

    import keras
    import numpy as np

    with open(os.path.join(work_dir, "history.csv")) as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    model = keras.models.load_model(os.path.join(work_dir, "last.keras"), compile=False)
    np.savez(os.path.join(out_dir, name + ".npz"), *[np.asarray(w) for w in model.weights])
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump({"history": rows, "summary": summary}, f)


def child(args):
    """Run `args.runs` in this process (torchrun starts one per rank); rank 0 records."""
    if args.tf_cpus > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.tf_cpus)
    from quadkeras.training import train

    writer = int(os.environ.get("RANK", "0")) == 0
    for name in args.runs.split(","):
        if name == "bad_batch":  # a global batch the replicas cannot share: one-line error
            try:
                train(run_config(args, os.path.join(args.out_dir, "runs", name), "data_parallel"),
                      batch_size=args.batch_size - 1)
            except ValueError as err:
                if writer:
                    with open(os.path.join(args.out_dir, "bad_batch.txt"), "w") as f:
                        f.write(str(err))
                continue
            raise AssertionError("an odd global batch was accepted")
        work_dir = os.path.join(args.out_dir, "runs", name.replace("dp_resume", "dp_kill"))
        distribute = "" if name == "single" else "data_parallel"
        if name == "dp_kill":
            try:
                train(run_config(args, work_dir, distribute), callbacks=[_kill_after(1)])
            except _Kill:
                continue
            raise AssertionError("the simulated kill did not happen")
        summary = train(run_config(args, work_dir, distribute, resume=name == "dp_resume"))
        if writer:
            _record(work_dir, summary, args.out_dir, name)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(backend, args, out_dir, runs, devices):
    """Start the child for `runs` on `devices` simulated devices of `backend`."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    flags = [f"--role=child", f"--out_dir={out_dir}", f"--runs={runs}", f"--epochs={args.epochs}",
             f"--batch_size={args.batch_size}", f"--max_train={args.max_train}",
             f"--max_test={args.max_test}", f"--quant={args.quant}"]
    script = os.path.abspath(__file__)
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        cmd = [sys.executable, script, *flags]
    elif backend == "tensorflow":
        cmd = [sys.executable, script, *flags, f"--tf_cpus={devices}"]
    else:  # torch: one gloo process per simulated device, as on N GPUs; the 1-device run
        # under torchrun too, so both get torchrun's thread setting (OMP_NUM_THREADS=1)
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={devices}",
               f"--master_port={_free_port()}", script, *flags]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} child {runs} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _load(out_dir, name):
    import numpy as np

    with open(os.path.join(out_dir, name + ".json")) as f:
        result = json.load(f)
    with np.load(os.path.join(out_dir, name + ".npz")) as z:
        result["weights"] = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    return result


def _weight_gap(a, b):
    """Largest weight difference relative to the weight's scale: max over weights of
    max |a - b| / max(1, max |a|) (BN moving variances reach ~50 here)."""
    import numpy as np

    return max(float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(x)))))
               for x, y in zip(a, b) if x.size)


def compare(backend, args):
    """All runs of one backend -> dict of curves, gaps and times."""
    out_dir = tempfile.mkdtemp(prefix=f"dist-{backend}-")
    t0 = time.perf_counter()
    if backend == "torch":
        _launch(backend, args, out_dir, "single", 1)
        _launch(backend, args, out_dir, ",".join(RUNS[1:]), 2)
    else:
        _launch(backend, args, out_dir, ",".join(RUNS), 2)
    single, dp, resumed = (_load(out_dir, n) for n in ("single", "dp", "dp_resume"))
    with open(os.path.join(out_dir, "bad_batch.txt")) as f:
        bad_batch = f.read()
    shutil.rmtree(out_dir, ignore_errors=True)
    loss = [[r["loss"] for r in run["history"]] for run in (single, dp, resumed)]
    gap = _weight_gap(single["weights"], dp["weights"])
    resume_gap = _weight_gap(dp["weights"], resumed["weights"])
    t1, t2 = single["summary"]["train_time_s"], dp["summary"]["train_time_s"]
    return {"backend": backend, "loss_single": loss[0], "loss_dp": loss[1], "loss_resumed": loss[2],
            "max_loss_gap": max(abs(a - b) for a, b in zip(loss[0], loss[1])),
            "max_weight_gap": gap, "max_resume_weight_gap": resume_gap,
            "max_resume_loss_gap": max(abs(a - b) for a, b in zip(loss[1], loss[2])),
            "test_acc_single": single["summary"]["test_acc"], "test_acc_dp": dp["summary"]["test_acc"],
            "fit_s_single": t1, "fit_s_dp": t2, "overhead_ratio": round(t2 / t1, 3),
            "img_per_s_single": single["summary"]["img_per_s"],
            "img_per_s_dp": dp["summary"]["img_per_s"], "bad_batch_error": bad_batch,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="compare", choices=["compare", "child"])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_train", type=int, default=512)
    parser.add_argument("--max_test", type=int, default=128)
    parser.add_argument("--quant", default="", help="QAT method (8/8 bits, first/last and "
                        "shortcut quantized), e.g. lsq: quantizer first-batch init under replicas")
    parser.add_argument("--json", default=None)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out_dir", default=None)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--tf_cpus", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "child":
        return child(args)
    results = [compare(b, args) for b in args.backends.split(",")]
    for r in results:
        print(f"{r['backend']:10s} loss 1dev {['%.5f' % v for v in r['loss_single']]} "
              f"2rep {['%.5f' % v for v in r['loss_dp']]} | weight gap {r['max_weight_gap']:.2e} "
              f"| resume gap {r['max_resume_weight_gap']:.2e} | "
              f"fit {r['fit_s_single']:.2f}s vs {r['fit_s_dp']:.2f}s (x{r['overhead_ratio']})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
