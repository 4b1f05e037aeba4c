"""bench/results_plots.py: the figures of docs/results.md come from data tables whose every
number is recorded, with its command, in the log or doc the row names (never typed in only
here). Backend-independent, so run once, in the TensorFlow process."""

import importlib.util
import os

import keras
import pytest

from tests.backend_utils import assert_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="no Keras in it: one process is enough")
VALUES = {"accuracy_vs_bits": ("accuracy_pct",), "size_vs_latency": ("size_kib", "latency_ms"),
          "quadratize_accuracy": ("accuracy_pct",)}
MIN_ROWS = {"quadratize_accuracy": 3}


def _bench():
    spec = importlib.util.spec_from_file_location(
        "results_plots", os.path.join(REPO, "bench", "results_plots.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source_text(source):
    """'2026-11-26.md QAT ...' -> bench/results/2026-11-26.md; 'docs/bsq.md ...' -> docs/bsq.md."""
    name = source.split()[0]
    path = os.path.join(REPO, name) if "/" in name else os.path.join(REPO, "bench", "results", name)
    with open(path) as f:
        return f.read()


@TF_ONLY
def test_every_plotted_number_is_recorded_in_its_source():
    bench = _bench()
    for table, columns in VALUES.items():
        rows = bench.read_table(os.path.join(bench.RESULTS, f"{table}.csv"))
        assert len(rows) >= MIN_ROWS.get(table, 5), table
        for row in rows:
            text = _source_text(row["source"])
            for column in columns:
                assert row[column] in text, (table, row[column], row["source"])


@TF_ONLY
def test_plots_are_drawn_from_the_tables(tmp_path):
    pytest.importorskip("matplotlib")
    written = _bench().main([f"--out_dir={tmp_path}"])
    assert sorted(os.path.basename(p) for p in written) == ["accuracy_vs_bits.png",
                                                            "quadratize_accuracy.png",
                                                            "size_vs_latency.png"]
    for path in written:
        assert_png(path, min_bytes=10000)
