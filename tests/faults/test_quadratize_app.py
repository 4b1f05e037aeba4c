"""apps/quadratize.py end to end: one upgrade that keeps the function, and one-line errors
(exit 1, nothing written) for each kind of bad selection. Subprocesses, tensorflow only."""

import os

from quadkeras.models.model_config import saved_config
from tests.faults.test_app_faults import TF_ONLY, _run_all


@TF_ONLY
def test_quadratize_app(tmp_path):
    out = str(tmp_path / "q.keras")
    base = ["--model=resnet20", "--max_examples=4"]
    cases = {
        "ok": ("quadratize.py", *base, "--layers=stage3_block3_conv2", f"--out={out}",
               f"--output_config={tmp_path / 'q.yaml'}"),
        "unknown": ("quadratize.py", *base, "--layers=nope", f"--out={tmp_path}/1.keras"),
        "dense": ("quadratize.py", *base, "--layers=logits", f"--out={tmp_path}/2.keras"),
        "regex": ("quadratize.py", *base, "--layer_regex=stage9.*", f"--out={tmp_path}/3.keras"),
        "top_k": ("quadratize.py", *base, "--top_k=99", "--criterion=last", f"--out={tmp_path}/4.keras"),
        "no_data": ("quadratize.py", *base, "--top_k=1", f"--out={tmp_path}/5.keras"),
        "out": ("quadratize.py", *base, "--layers=stem_conv", f"--out={tmp_path}/6.h5"),
    }
    results = _run_all(cases)
    code, _, err = results.pop("ok")
    assert code == 0, err
    assert os.path.exists(out) and os.path.exists(tmp_path / "q.yaml")
    assert saved_config(out)["overrides"] == {
        "stage3_block3_conv2": {"type": "quad", "neuron": "ours", "use_bias": False}}
    expected = {"unknown": "--layers", "dense": "--layers", "regex": "--layer_regex",
                "top_k": "--top_k", "no_data": "--criterion", "out": "--out"}
    for name, (code, last, err) in results.items():
        flag = expected[name][2:]
        assert code == 1 and last.startswith(f"error: Invalid {flag}="), (name, err)
        assert "Traceback" not in err, (name, err)
    assert sorted(os.listdir(tmp_path)) == ["q.keras", "q.yaml"]
