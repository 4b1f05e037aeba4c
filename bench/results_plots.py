"""Draw the figures of docs/results.md from the data tables in bench/results/ (no hand-drawn plots).

    python bench/results_plots.py   # -> docs/img/accuracy_vs_bits.png, size_vs_latency.png, quadratize_accuracy.png
    python bench/results_plots.py --out_dir=/tmp/figs

`bench/results/accuracy_vs_bits.csv` (series, bits, accuracy_pct, source) and
`bench/results/size_vs_latency.csv` (model, format, size_kib, latency_ms, source) and
`bench/results/quadratize_accuracy.csv` (run, seed, added_params, accuracy_pct, source) hold
figures copied from the dated logs and topic docs, each row naming where it is recorded.
Lines starting with `#` are comments. Needs matplotlib (the `plot` extra).

Example:

>>> rows = read_table(os.path.join(RESULTS, "size_vs_latency.csv"))
>>> sorted(rows[0])
['format', 'latency_ms', 'model', 'size_kib', 'source']
"""

import argparse
import csv
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
IMG = os.path.join(REPO, "docs", "img")


def read_table(path):
    """The CSV's rows as dicts (comment lines skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _groups(rows, key):
    out = {}
    for row in rows:
        out.setdefault(row[key], []).append(row)
    return out


def plot_accuracy_vs_bits(rows, path):
    """One line per series: test accuracy against (average) weight bits, float drawn at 32."""
    fig, ax = _axes()
    for name, group in _groups(rows, "series").items():
        pts = sorted((float(r["bits"]), float(r["accuracy_pct"])) for r in group)
        ax.plot([b for b, _ in pts], [a for _, a in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks([2, 4, 8, 16, 32], labels=["2", "4", "8", "16", "32 (float)"])
    ax.set_xlabel("weight bits (BSQ: average over layers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs bits (each series its own data set and budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def plot_size_vs_latency(rows, path):
    """One marker per file: size (KiB) against batch-1 latency (ms), one colour per model run."""
    fig, ax = _axes()
    for name, group in _groups(rows, "model").items():
        sizes = [float(r["size_kib"]) for r in group]
        lat = [float(r["latency_ms"]) for r in group]
        ax.scatter(lat, sizes, label=name)
        for r, x, y in zip(group, lat, sizes):
            ax.annotate(r["format"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("latency, batch 1, 1 thread (ms, log scale)")
    ax.set_ylabel("file size (KiB)")
    ax.set_title("Deployment files: size vs latency (compare within one model run)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_quadratize_accuracy(rows, path):
    """Test accuracy against the parameters a quadratize run added: one marker per seed, a bar
    from the lowest to the highest seed, one colour per run (the control adds 0)."""
    fig, ax = _axes()
    for name, group in _groups(rows, "run").items():
        added = float(group[0]["added_params"]) / 1000.0
        accs = [float(r["accuracy_pct"]) for r in group]
        ax.scatter([added] * len(accs), accs, label=f"{name} ({len(accs)} seed(s))")
        ax.vlines(added, min(accs), max(accs), alpha=0.4)
    ax.set_xlabel("parameters added by quadratize (thousands)")
    ax.set_ylabel("test accuracy, 10,000 images (%)")
    ax.set_title("Quadratized BSQ ResNet-20 vs the float control, same fine-tune")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center")
    fig.tight_layout()
    _save(fig, path)


def _axes():
    """A figure and its axes, drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.5))


def _save(fig, path):
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)  # atomic: a reader never sees half a PNG


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=RESULTS, help="folder of the CSV data tables")
    parser.add_argument("--out_dir", default=IMG, help="where the PNGs go")
    args = parser.parse_args(argv)
    done = []
    for name, plot in (("accuracy_vs_bits", plot_accuracy_vs_bits),
                       ("size_vs_latency", plot_size_vs_latency),
                       ("quadratize_accuracy", plot_quadratize_accuracy)):
        out = os.path.join(args.out_dir, f"{name}.png")
        plot(read_table(os.path.join(args.results, f"{name}.csv")), out)
        done.append(out)
    print("\n".join(f"wrote {p}" for p in done))
    return done


if __name__ == "__main__":
    main()
