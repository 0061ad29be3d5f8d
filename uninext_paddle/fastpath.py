"""A faster CPU formulation of UniNeXt's small-map depthwise convs, chosen by device in one place
(``use_fastpath``), and conv biases added channels-last.

Paddle's CPU ``depthwise_conv2d`` (im2col + one tiny GEMM per image and channel) has a large fixed cost per
call and per channel, which dominates on small maps; every block runs three such convs (LePE, HdC, PC), and at
32x32 input the stages run on 8x8, 4x4, 2x2 and 1x1 maps. ``depthwise3x3`` runs a 3x3/stride-1/pad-1 depthwise
conv on such a small map (``matmul_form``) as one batched matmul with a per-channel [tokens, tokens] matrix
built from the 3x3 weights, in the token layout (so the token<->image transposes disappear too): the same
products, summed in another order at most (float rounding; tests/test_fastpath.py). On other devices (GPU:
cuDNN) and on larger maps Paddle's conv is used unchanged. Measurements: BENCHMARKS.md, "Why the fast paths
exist".
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["FASTPATHS", "use_fastpath", "disabled", "depthwise3x3", "conv_channels_last", "watched", "matmul_form",
           "SMALL_MAP_TOKENS", "MEDIUM_MAP_TOKENS", "MEDIUM_MAP_MIN_BATCH"]

# The fast paths by name; ``disabled`` switches them off (the benchmark measures each one's gain this way).
FASTPATHS: dict[str, bool] = {"small_map_dwconv": True}

# Which maps ``depthwise3x3`` runs as a matmul: up to SMALL_MAP_TOKENS tokens always, up to MEDIUM_MAP_TOKENS
# from a batch of MEDIUM_MAP_MIN_BATCH. The [C, N, N] @ [C, N, batch] product does N times the conv's
# multiplications (zeros included), so it pays off only where Paddle's per-image, per-channel kernel calls
# dominate: small maps, large batches (measured on 2 CPU cores, may change with Paddle or the CPU).
SMALL_MAP_TOKENS = 16
MEDIUM_MAP_TOKENS = 64
MEDIUM_MAP_MIN_BATCH = 64


def use_fastpath(name: str, x: paddle.Tensor) -> bool:
    """The one place that decides: fast path ``name`` is used for ``x`` only on CPU and when enabled.

    In dynamic mode the tensor's own place decides; while tracing (``paddle.jit.to_static``) a tensor has
    no place yet, so the current device does.
    """
    if not FASTPATHS[name]:
        return False
    if paddle.in_dynamic_mode():
        return x.place.is_cpu_place()
    return paddle.device.get_device() == "cpu"


@contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Switch off the named fast paths (all when none are named) inside the ``with`` block."""
    names = names or tuple(FASTPATHS)
    saved = {n: FASTPATHS[n] for n in names}
    try:
        for n in names:
            FASTPATHS[n] = False
        yield
    finally:
        FASTPATHS.update(saved)


@functools.lru_cache(maxsize=None)
def _mixing_plan(H: int, W: int) -> np.ndarray:
    """[H*W * H*W] tap numbers: entry (n, m) is the 3x3 tap (0-8, row-major) through which output token n
    reads input token m, or 9 where it does not read it (the conv's padding and non-neighbours)."""
    N = H * W
    plan = np.full((N, N), 9, np.int64)
    for n in range(N):
        i, j = divmod(n, W)
        for k in range(9):
            di, dj = k // 3 - 1, k % 3 - 1
            if 0 <= i + di < H and 0 <= j + dj < W:
                plan[n, (i + di) * W + j + dj] = k
    return plan.reshape(-1)


def watched(layer: nn.Layer) -> bool:
    """Whether forward hooks watch ``layer`` (``paddle.summary`` and ``paddle.flops`` count layers this way, and so
    may users): then the formulations here, which use its weights without calling it, step aside."""
    return bool(layer._forward_pre_hooks or layer._forward_post_hooks)


def matmul_form(H: int, W: int, batch: int) -> bool:
    """Whether ``depthwise3x3`` computes an H x W map of ``batch`` images (-1: unknown, while tracing) as a
    matmul on the CPU (see the thresholds above)."""
    return H * W <= SMALL_MAP_TOKENS or (H * W <= MEDIUM_MAP_TOKENS and batch >= MEDIUM_MAP_MIN_BATCH)


def depthwise3x3(conv: nn.Conv2D, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
    """``conv`` (3x3, stride 1, padding 1, groups = channels) applied to tokens: [B, H*W, C] -> [B, H*W, C].

    Small maps on CPU: per channel c, an [N, N] matrix M_c whose row n holds the weights of the taps through
    which output token n reads each input token (zeros elsewhere), so out_c = M_c @ x_c + b_c: one batched
    matmul over the channels instead of Paddle's per-channel depthwise kernel, whose fixed cost dominates
    on small maps. The same products as the conv, plus exact zeros; on 1x1 and 2x2 maps the output is
    bitwise the kernel's, elsewhere and in the gradients the sums may differ in order (float rounding;
    tests/test_fastpath.py). Otherwise: Paddle's conv in NCHW.
    """
    C = x.shape[-1]
    if matmul_form(H, W, x.shape[0]) and use_fastpath("small_map_dwconv", x) and not watched(conv):
        N = H * W
        weights = paddle.concat([conv.weight.reshape([C, 9]), paddle.zeros([C, 1], conv.weight.dtype)], axis=1)
        plan = paddle.to_tensor(_mixing_plan(H, W), place=x.place)
        mixing = paddle.index_select(weights, plan, axis=1).reshape([C, N, N])
        out = paddle.matmul(mixing, x.transpose([2, 1, 0])).transpose([2, 1, 0])  # [C, N, B] -> [B, N, C]
        return out if conv.bias is None else out + conv.bias
    image = x.transpose([0, 2, 1]).reshape([-1, C, H, W])
    return conv_channels_last(conv, image).reshape([-1, H * W, C])


def conv_channels_last(conv: nn.Conv2D, image: paddle.Tensor) -> paddle.Tensor:
    """``conv`` (NCHW, zero padding) on ``image``, returned channels-last [B, H', W', C'] with the bias added in
    that layout, because Paddle adds a conv's bias as a [1, C, 1, 1] broadcast over NCHW, which its CPU kernel
    does element by element, about 10x slower than over the last axis. Each output is the same conv sum plus the
    same bias, so the numbers are bitwise those of ``conv(image)``, transposed. Used on every device: the
    transposed layout is what the model consumes next anyway. A ``watched`` layer is called as a layer instead,
    so its hooks see the call."""
    if watched(conv):
        return conv(image).transpose([0, 2, 3, 1])
    out = F.conv2d(image, conv.weight, None, stride=conv._stride, padding=conv._padding, dilation=conv._dilation,
                   groups=conv._groups).transpose([0, 2, 3, 1])
    return out if conv.bias is None else out + conv.bias
