"""`bench/peers/common.py`: its hand-written ResNet-20 (what TFMOT and HGQ2 get) is the zoo's.

Needs no peer package: the same builder runs here on Keras 3 layers. The peer benches
themselves need `bench/peers/.venv` and are not part of the test suite.
"""

import importlib.util
import os

import numpy as np

from quadkeras.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _common():
    spec = importlib.util.spec_from_file_location(
        "peers_common", os.path.join(REPO, "bench", "peers", "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_resnet20_is_the_zoo_resnet20():
    import keras

    common = _common()
    zoo = build_model("resnet20", num_classes=10, input_shape=(16, 16, 1))
    mirror = common.build_resnet20(keras.layers, keras.Model, (16, 16, 1), 10)
    assert mirror.count_params() == zoo.count_params() == 273_754
    shapes = {n: {k: v.shape for k, v in w.items()} for n, w in common.layer_weights(zoo).items()}
    assert shapes == {n: {k: v.shape for k, v in w.items()}
                      for n, w in common.layer_weights(mirror).items()}
    assert common.copy_weights(zoo, mirror) == sum(len(w) for w in shapes.values())
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(common.logits(mirror, x), common.logits(zoo, x), atol=1e-4)
