"""Does quadkeras train like the PyTorch original? Accuracy and speed, side by side, one run.

A plain PyTorch QResNet14 (QuadraLib's layout from `quadkeras.interop.torch_nets`: three
`nn.Conv2d` + `nn.BatchNorm2d` per quadratic layer, PyTorch's default init, `padding=1`),
trained as QuadraLib's `train.py` does — `torch.optim.SGD(lr, momentum=0.9,
weight_decay=wd)`, `clip_grad_norm_(0.5)`, `CosineAnnealingLR(T_max=epochs, eta_min)`
stepped per epoch, pad-4 random crop + horizontal flip per image, the last partial batch
kept — against quadkeras' QResNet14 through the real training engine
(`quadkeras.training.train`, one subprocess per Keras backend), on the same seeded
CIFAR-10 subset. Prints test accuracy and train img/s per epoch, then the mean over seeds.

    python bench/reference_parity.py --max_train=5000 --max_test=1000 --epochs=8 \
        --batch_size=128 --seeds=0,1 --backends=torch,tensorflow

`--hybrid` adds a third runner that splits the question in two: quadkeras' Keras QResNet14
(torch backend, `build_model`) trained by the plain-PyTorch loop above (same optimizer, clip,
schedule, batches and augmentation). A gap between it and the PyTorch network is in the model
(forward, backward, BatchNorm statistics, init); a gap between it and quadkeras is in the
training engine (optimizer, data pipeline, schedule). Needs `KERAS_BACKEND=torch`.
`--hybrid_init=torch` starts it from the PyTorch network's own initial weights (same seed,
copied with `quadkeras.interop`): then only the model's training dynamics can differ, not
its initialisation.

Train img/s counts the optimisation steps only (data augmentation included, evaluation and
checkpoint writing excluded); epoch 1 includes tracing/compilation. For quadkeras it also
reports the share of test images with non-finite logits in inference mode (an early quadratic
net can overflow there) and the accuracy on the others.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

KERAS_RUN = r"""
import json, sys, time, keras
import numpy as np
from quadkeras.data import load_data, seeded_subset
from quadkeras.training import train

class EpochLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []
    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.train_s = time.perf_counter(), None
    def on_test_begin(self, logs=None):
        if self.train_s is None:
            self.train_s = time.perf_counter() - self.t0
    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(images, batch_size=500, verbose=0)
        finite = np.isfinite(logits).all(1)
        self.rows.append({"epoch": epoch + 1, "test_acc": float(logs["val_acc"]), "train_s": self.train_s,
                          "nonfinite": float(1 - finite.mean()),
                          "acc_on_finite": float((logits[finite].argmax(1) == labels[finite]).mean())})

config = json.loads(sys.argv[1])
data = load_data("cifar10", config["data_dir"])
x, labels = seeded_subset(data.x_test, data.y_test, config["max_test"])
images = ((x / 255.0 - np.asarray(data.mean)) / np.asarray(data.std)).astype("float32")
log = EpochLog()
train(config, callbacks=[log])
print("RESULT " + json.dumps(log.rows), flush=True)
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qresnet14")
    p.add_argument("--data_dir", default=None, help="CIFAR-10 source (default: the shared JPEG copy)")
    p.add_argument("--max_train", type=int, default=5000)
    p.add_argument("--max_test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--final_lr", type=float, default=1e-4)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--grad_clip", type=float, default=0.5)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--backends", default="torch,tensorflow", help="Keras backends to run quadkeras on")
    p.add_argument("--skip_reference", action="store_true")
    p.add_argument("--hybrid", action="store_true", help="also train quadkeras' Keras model with the "
                   "plain-PyTorch loop (KERAS_BACKEND=torch)")
    p.add_argument("--hybrid_init", default="keras", choices=("keras", "torch"),
                   help="hybrid runner's initial weights: its own (keras) or the PyTorch net's")
    p.add_argument("--device", default="auto", help="PyTorch reference's device: auto (cuda if "
                   "available), cpu, cuda; quadkeras uses its backend's default device")
    p.add_argument("--data_pipeline", default="auto", help="quadkeras input pipeline: auto, tf, numpy")
    p.add_argument("--jit_compile", default="auto", help="quadkeras train step: auto, true (torch: "
                   "torch.compile), false")
    p.add_argument("--json", default=None, help="also write all rows to this JSON file")
    return p.parse_args(argv)


def load_subset(args):
    """The training engine's own subset: `training_split` / `seeded_subset` on the same data."""
    from quadkeras.data import load_data, seeded_subset, training_split

    data = load_data("cifar10", args.data_dir)
    x_train, y_train, _, _ = training_split(data.x_train, data.y_train, args.max_train, 0.0, 0)
    x_test, y_test = seeded_subset(data.x_test, data.y_test, args.max_test)
    return x_train, y_train, x_test, y_test, np.asarray(data.mean, "float32"), np.asarray(data.std, "float32")


def _augment(images, rng, pad=4):
    """torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip, per image (uint8 NHWC)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def torch_reference(args, seed, subset, keras_model=False):
    """QuadraLib's training loop on the plain PyTorch network (or, `keras_model=True`, on
    quadkeras' Keras network under the torch backend); per-epoch rows."""
    import torch

    from quadkeras.interop.torch_nets import build_torch_model

    x_train, y_train, x_test, y_test, mean, std = subset
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if keras_model:
        net = _keras_network(args, seed)
        if args.hybrid_init == "torch":
            from quadkeras.interop.torch_checkpoint import load_state_dict_into

            torch.manual_seed(seed)  # the reference's initial weights, drawn as it draws them
            ref = build_torch_model(args.model, num_classes=10, input_shape=[32, 32, 3])
            load_state_dict_into(net, {k: v.detach().cpu().numpy() for k, v in ref.state_dict().items()})
        params = [p for p in net.parameters() if p.requires_grad]
        forward = lambda inputs, training: net(inputs, training=training)  # noqa: E731
    else:
        net = build_torch_model(args.model, num_classes=10, input_shape=[32, 32, 3]).to(device)
        params = list(net.parameters())

        def forward(inputs, training):
            net.train(training)
            return net(inputs)
    name = "hybrid" if keras_model else "torch-ref"
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs, eta_min=args.final_lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def tensor(images):
        x = (images.astype("float32") / 255.0 - mean) / std
        x = x if keras_model else x.transpose(0, 3, 1, 2)  # Keras: NHWC
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    x_eval = tensor(x_test)
    rows = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        t0 = time.perf_counter()
        for start in range(0, len(order), args.batch_size):  # DataLoader keeps the last batch
            idx = order[start:start + args.batch_size]
            inputs, targets = tensor(_augment(x_train[idx], rng)), torch.from_numpy(y_train[idx].astype("int64")).to(device)
            opt.zero_grad()
            loss = loss_fn(forward(inputs, True), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        sched.step()
        with torch.no_grad():
            pred = torch.cat([forward(x_eval[i:i + 500], False).argmax(1) for i in range(0, len(x_eval), 500)])
        rows.append({"epoch": epoch + 1, "test_acc": float((pred.cpu().numpy() == y_test).mean()),
                     "train_s": train_s})
        print(f"  {name} seed={seed} epoch {epoch + 1}: acc={rows[-1]['test_acc']:.4f} "
              f"img/s={len(x_train) / train_s:.1f}", flush=True)
    return rows


def _keras_network(args, seed):
    """quadkeras' network as the training engine builds it (same seed), for the hybrid runner."""
    import keras

    from quadkeras.models import build_model

    if keras.backend.backend() != "torch":
        raise SystemExit("Invalid KERAS_BACKEND for --hybrid: expected torch (the PyTorch loop "
                         f"trains the Keras model), got {keras.backend.backend()!r}.")
    keras.utils.set_random_seed(seed)
    return build_model(args.model, num_classes=10, input_shape=(32, 32, 3))


def quadkeras_run(args, seed, backend):
    """The training engine under `backend` (subprocess); per-epoch rows."""
    with tempfile.TemporaryDirectory() as work_dir:
        config = {"model": args.model, "dataset": "cifar10", "data_dir": args.data_dir,
                  "max_train": args.max_train, "max_test": args.max_test, "epochs": args.epochs,
                  "batch_size": args.batch_size, "lr": args.lr, "final_lr": args.final_lr,
                  "wd": args.wd, "grad_clip": args.grad_clip, "schedule": "cosine",
                  "augment": "crop_flip", "seed": seed, "data_pipeline": args.data_pipeline, "jit_compile": args.jit_compile, "work_dir": work_dir, "tensorboard": False,
                  "verbose": 0}
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-c", KERAS_RUN, json.dumps(config)], env=env,
                              capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"quadkeras run ({backend}, seed {seed}) failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(lines[-1][len("RESULT "):])
    for row in rows:
        print(f"  quadkeras-{backend} seed={seed} epoch {row['epoch']}: acc={row['test_acc']:.4f} "
              f"img/s={args.max_train / row['train_s']:.1f} non-finite logits {row['nonfinite']:.1%} "
              f"(acc on the finite ones {row['acc_on_finite']:.4f})", flush=True)
    return rows


def summarise(results, args, n_train):
    """Per-epoch table (mean over seeds) and final accuracy / median img/s per runner."""
    names = list(results)
    print("\nepoch | " + " | ".join(f"{n} acc" for n in names) + " | " + " | ".join(f"{n} img/s" for n in names))
    for e in range(args.epochs):
        accs = [np.mean([rows[e]["test_acc"] for rows in results[n].values()]) for n in names]
        speeds = [np.mean([n_train / rows[e]["train_s"] for rows in results[n].values()]) for n in names]
        print(f"{e + 1:5d} | " + " | ".join(f"{a:.4f}" for a in accs) + " | "
              + " | ".join(f"{s:.1f}" for s in speeds))
    print()
    final = {}
    for n in names:
        finals = [rows[-1]["test_acc"] for rows in results[n].values()]
        speed = np.median([n_train / r["train_s"] for rows in results[n].values() for r in rows[1:]] or [0])
        final[n] = (float(np.mean(finals)), float(speed))
        print(f"{n:>20}: final test acc {np.mean(finals):.4f} (seeds {', '.join(f'{f:.4f}' for f in finals)}), "
              f"median train img/s (epochs >= 2) {speed:.1f}")
    if "torch-ref" in final:
        ref_acc, ref_speed = final["torch-ref"]
        for n in names:
            if n != "torch-ref":
                print(f"{n:>20}: accuracy {100 * (final[n][0] - ref_acc):+.2f} points vs torch-ref, "
                      f"speed {final[n][1] / ref_speed:.2f}x torch-ref")
    return final


def main(argv=None):
    args = parse_args(argv)
    subset = load_subset(args)
    n_train = len(subset[0])
    print(f"{args.model}: {n_train} train / {len(subset[2])} test images, {args.epochs} epochs, "
          f"batch {args.batch_size}, seeds {args.seeds}", flush=True)
    results = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        if not args.skip_reference:
            results.setdefault("torch-ref", {})[seed] = torch_reference(args, seed, subset)
        if args.hybrid:
            results.setdefault("hybrid", {})[seed] = torch_reference(args, seed, subset, keras_model=True)
        for backend in [b for b in args.backends.split(",") if b]:
            results.setdefault(f"quadkeras-{backend}", {})[seed] = quadkeras_run(args, seed, backend)
    summarise(results, args, n_train)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
