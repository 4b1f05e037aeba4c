"""Tiny configs and training runs shared by the auto-builder and summary tests."""

RESNET_TINY = {
    "name": "tiny_resnet", "family": "resnet", "input_shape": [8, 8, 1], "num_classes": 3,
    "stem_filters": 4,
    "stages": [{"filters": 4, "blocks": 2, "stride": 1}, {"filters": 8, "blocks": 2, "stride": 2}],
    "conv": {"type": "quad", "neuron": "ours", "use_bias": False}, "use_bias": False,
}
VGG_TINY = {
    "name": "tiny_vgg", "family": "vgg", "input_shape": [8, 8, 1], "num_classes": 3,
    "cfg": [4, 4, "M", 8, "M"], "conv": {"type": "quad", "neuron": "ours"},
}


def train_runs(root, epochs=1):
    """Two tiny digits training work_dirs under `root` (`tiny_config` of test_training):
    "val" holds out val_fraction=0.25 (seed 3), "noval" fits the whole training split.

    >>> runs = train_runs(tmp_path)  # doctest: +SKIP
    >>> sorted(runs)  # doctest: +SKIP
    ['noval', 'val']
    """
    from quadkeras.training import train
    from tests.test_training import tiny_config

    runs = {"val": root / "val", "noval": root / "noval"}
    train(tiny_config(runs["val"], epochs=epochs, val_fraction=0.25, seed=3))
    train(tiny_config(runs["noval"], epochs=epochs))
    return runs
