"""PNG plots (matplotlib, Agg backend, headless): training curves, per-layer cost, BSQ bits and
sweep, auto-builder RI, accuracy vs added parameters (quadratize). Every function writes `path`
(atomically: temp + rename) and returns it.

matplotlib is optional (the `plot` extra); `try_plot` runs a plot function and prints a one-line
note instead of failing when it is missing.

Example:

>>> import os, tempfile
>>> path = plot_history({"epoch": [0, 1], "loss": [2.0, 1.0], "acc": [0.3, 0.6],
...                      "lr": [0.1, 0.05]}, os.path.join(tempfile.mkdtemp(), "curves.png"))
>>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

import csv
import os

from quadkeras.utils.safe_io import write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pyplot():
    import matplotlib  # noqa: PLC0415 (optional dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig, path):
    """Write `fig` to `path` atomically (a temp file beside it, then a rename: a reader, a
    kill or a full disk never sees a partial PNG) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format=fmt))
    finally:
        _pyplot().close(fig)
    return path


def _bars(ax, names, values, ylabel, log=False, labels=True):
    ax.bar(range(len(values)), values)
    ax.set_ylabel(ylabel)
    if log and any(v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names if labels else [""] * len(names), rotation=90, fontsize=7)


def read_history(path):
    """{column: [float, ...]} of a Keras `CSVLogger` file (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = rows[0].keys() if rows else []
    return {c: [float(r[c]) if r[c] not in ("", None) else float("nan") for r in rows] for c in columns}


def plot_history(history, path):
    """Loss, accuracy and learning-rate curves per epoch from a `history.csv` path or a dict
    of lists (`keras.callbacks.History.history`)."""
    history = read_history(history) if isinstance(history, (str, os.PathLike)) else dict(history)
    epochs = history.pop("epoch", None)
    panels = [("loss", [k for k in history if "loss" in k]),
              ("accuracy", [k for k in history if "acc" in k]),
              ("learning rate", [k for k in history if k in ("lr", "learning_rate")])]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        raise ValueError(f"Invalid history: no loss/acc/lr columns in {sorted(history)}.")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            x = [e + 1 for e in epochs] if epochs else range(1, len(history[key]) + 1)
            ax.plot(list(x), history[key], marker="o" if len(history[key]) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_layers(summary, path):
    """Params, MACs and weight bits per layer of a `quadkeras.summary` summary (or its dict)."""
    rows = summary["rows"] if isinstance(summary, dict) else summary.rows
    rows = [r for r in rows if r["params"] or r["macs"]]
    names = [r["name"] for r in rows]
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.3 * len(names)), 7.5), sharex=True)
    _bars(axes[0], names, [r["params"] for r in rows], "params", log=True, labels=False)
    _bars(axes[1], names, [r["macs"] for r in rows], "MACs", log=True, labels=False)
    _bars(axes[2], names, [r["weight_bits"] or 0 for r in rows], "weight bits")
    name = summary["name"] if isinstance(summary, dict) else summary.name
    axes[0].set_title(f"{name}: per-layer cost")
    return _save(fig, path)


def plot_bits_per_layer(report, path):
    """Precision per layer of a BSQ report (`quadkeras.bsq.bsq_report`)."""
    names = [layer["name"] for layer in report["layers"]]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    _bars(ax, names, [layer["precision"] for layer in report["layers"]], "weight bits")
    title = f"BSQ scheme: {report['average_bits']:.2f} avg bits, {report['compression_rate']:.1f}x"
    if "accuracy" in report:
        title += f", acc {report['accuracy']:.2f}%"
    ax.set_title(title)
    return _save(fig, path)


def plot_sweep(rows, path, accuracy_key="acc_after_finetune"):
    """Accuracy vs compression rate (32 / average bits), one point per row, labelled by alpha."""
    rows = [r for r in rows if r.get("average_bits")]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [32.0 / r["average_bits"] for r in rows]
    ys = [r[accuracy_key] for r in rows]
    ax.plot(xs, ys, "o-")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(str(r.get("alpha", "")), (x, y), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("compression rate vs 32-bit (x)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs compression")
    return _save(fig, path)


def plot_ri(scores, path, baseline=None):
    """RI per candidate layer (auto-builder `LayerScore`s or dicts), in ranked order."""
    get = lambda s, k: s[k] if isinstance(s, dict) else getattr(s, k)  # noqa: E731
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(scores)), 4))
    _bars(ax, [get(s, "name") for s in scores], [get(s, "ri") for s in scores], "RI", log=True)
    ax.set_title("RI per layer (P_M * P_W / dA)" + (f", A0={baseline:.4f}" if baseline is not None else ""))
    return _save(fig, path)


def plot_accuracy_vs_params(rows, path, baseline=None):
    """Accuracy (%) vs parameters ADDED to a base model, one labelled point per row
    ({"label", "added_params", "accuracy"}); `baseline` (an accuracy) as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(rows):  # labels alternate above / below: close points stay readable
        ax.plot(r["added_params"], r["accuracy"], "o")
        ax.annotate(r["label"], (r["added_params"], r["accuracy"]), fontsize=8,
                    xytext=(4, 4 if i % 2 == 0 else -12), textcoords="offset points")
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("parameters added to the base model")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs added parameters")
    return _save(fig, path)


def try_plot(plot_fn, *args, **kwargs):
    """`plot_fn(*args, **kwargs)`, or None with a one-line note when matplotlib is missing."""
    try:
        path = plot_fn(*args, **kwargs)
    except ImportError as err:
        print(f"note: no plot ({err.name} is not installed; pip install -e .[plot])")
        return None
    print(f"wrote {path}")
    return path
