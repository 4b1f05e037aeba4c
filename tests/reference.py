"""Independent NumPy (float64) references of the quadratic neurons (QuadraLib paper, Xu et al. 2022).

Written from the formulas, not from the layer code: the only shared knowledge is the
documented fused-kernel layout (last axis = groups x branches x units/groups).
"""

import numpy as np


def conv2d(x, w, stride=(1, 1), padding="valid", dilation=(1, 1), groups=1):
    """Direct NHWC convolution; w is (kh, kw, cin/groups, cout)."""
    n, h, wd, c = x.shape
    kh, kw, cg, cout = w.shape
    eff_h, eff_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    if not isinstance(padding, str):  # explicit ((top, bottom), (left, right)), as torch pads
        x = np.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
        n, h, wd, c = x.shape
        padding = "valid"
    if padding == "same":
        out_h, out_w = -(-h // stride[0]), -(-wd // stride[1])
        pad_h = max((out_h - 1) * stride[0] + eff_h - h, 0)
        pad_w = max((out_w - 1) * stride[1] + eff_w - wd, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h = (h - eff_h) // stride[0] + 1
        out_w = (wd - eff_w) // stride[1] + 1
    out = np.zeros((n, out_h, out_w, cout))
    per_group_out = cout // groups
    for g in range(groups):
        xs = x[..., g * cg:(g + 1) * cg]
        ws = w[..., g * per_group_out:(g + 1) * per_group_out]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i * dilation[0]: i * dilation[0] + stride[0] * (out_h - 1) + 1: stride[0],
                           j * dilation[1]: j * dilation[1] + stride[1] * (out_w - 1) + 1: stride[1], :]
                out[..., g * per_group_out:(g + 1) * per_group_out] += patch @ ws[i, j]
    return out


def depthwise(x, w, stride=(1, 1), padding="valid"):
    """Depthwise conv; w is (kh, kw, C, M) -> output channel c*M + m."""
    c, m = w.shape[2], w.shape[3]
    outs = [conv2d(x[..., ci:ci + 1], w[:, :, ci:ci + 1, :], stride, padding) for ci in range(c)]
    return np.concatenate(outs, axis=-1).reshape(outs[0].shape[:-1] + (c * m,))


def split_fused(a, groups, branches):
    """Split the fused last axis (groups, branches, units/groups) into branch arrays."""
    units = a.shape[-1] // branches
    shaped = a.reshape(a.shape[:-1] + (groups, branches, units // groups))
    return [shaped[..., i, :].reshape(a.shape[:-1] + (units,)) for i in range(branches)]


def split_kernel(kernel, groups, branches):
    return split_fused(kernel, groups, branches)


def batch_norm(z, gamma, beta, mean, var, eps):
    return (z - mean) / np.sqrt(var + eps) * gamma + beta


def quad_reference(neuron, x, weights, linear, groups=1, training=False, eps=1e-5):
    """Output of a quadratic layer from its weights dict (names as in the layer).

    `linear(x, kernel)` is the branch op (conv/matmul/depthwise) with the layer's settings,
    `groups` the layout groups of the fused kernel's last axis.
    """
    k = weights["kernel"]
    bias = weights.get("bias")
    if neuron == "t1":
        p = weights["patches"](x)
        y = np.einsum("...i,ijo,...j->...o", p, k, p)
        if "linear_kernel" in weights:
            y = y + linear(x, weights["linear_kernel"])
        return y if bias is None else y + bias
    nb = {"ours": 3, "t2": 1, "t3": 1, "t4": 2, "t2_4": 3}[neuron]
    kernels = split_kernel(k, groups, nb)
    out_groups = weights.get("out_groups", groups)
    biases = split_fused(bias, out_groups, nb) if bias is not None else [0.0] * nb
    sources = {"t2": [x * x], "t2_4": [x, x, x * x]}.get(neuron, [x] * nb)
    z = [linear(src, kb) + bb for src, kb, bb in zip(sources, kernels, biases)]
    if neuron == "ours":
        params = [split_fused(weights[n], out_groups, 3) for n in
                  ("branch_gamma", "branch_beta", "branch_moving_mean", "branch_moving_variance")]
        normed = []
        for i, zi in enumerate(z):
            axes = tuple(range(zi.ndim - 1))
            mean, var = (zi.mean(axes), zi.var(axes)) if training else (params[2][i], params[3][i])
            normed.append(batch_norm(zi, params[0][i], params[1][i], mean, var, eps))
        return normed[0] * normed[1] + normed[2]
    if neuron == "t2":
        return z[0]
    if neuron == "t3":
        return z[0] ** 2
    if neuron == "t4":
        return z[0] * z[1]
    return z[0] * z[1] + z[2]
