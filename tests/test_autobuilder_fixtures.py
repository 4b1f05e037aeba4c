"""Tiny configs shared by the auto-builder and summary tests."""

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
