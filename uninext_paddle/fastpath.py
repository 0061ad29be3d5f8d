"""A faster CPU formulation of UniNeXt's small-map depthwise convs, chosen by device in one place
(``use_fastpath``).

Paddle's CPU ``depthwise_conv2d`` (im2col + one tiny GEMM per image and channel) has a large fixed cost
per call and per channel: a [64, 1024, 1, 1] input (exactly ``x * w[:, :, 1, 1] + b``) takes tens of
milliseconds, and its backward several times that. Every block runs three of them (LePE, HdC, PC), and
at 32x32 input stages 2-4 run on 4x4, 2x2 and 1x1 maps. ``depthwise3x3`` runs a 3x3/stride-1/pad-1
depthwise conv on such a small map as gathered multiply-adds in the token layout (so the token<->image
transposes disappear too), summed in the kernel's order: the same sums, in the same order where
Paddle's kernel allows it, float rounding at most otherwise (tests/test_fastpath.py). On other devices
(GPU: cuDNN) and on larger maps Paddle's conv is used unchanged.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["FASTPATHS", "use_fastpath", "disabled", "depthwise3x3", "SMALL_MAP_TOKENS"]

# The fast paths by name; ``disabled`` switches them off (the benchmark measures each one's gain this way).
FASTPATHS: dict[str, bool] = {"small_map_dwconv": True}

# Largest map (H*W tokens) that ``depthwise3x3`` runs tap by tap. Measured on 2 CPU cores at batch 64, the
# tap-by-tap form is 5-300x faster than Paddle's kernel on 1x1 and 2x2 maps, about 2x on 4x4 (forward),
# and no faster from 7x7 on, where Paddle's per-call overhead no longer dominates.
SMALL_MAP_TOKENS = 16


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
def _tap_plan(H: int, W: int) -> tuple[tuple[int, ...], np.ndarray]:
    """The 3x3/pad-1 taps that read inside an H x W map, and for each of them (tap-major) the input token
    every output token reads: H*W means a padding zero. Taps in the kernel's row-major order."""
    N = H * W
    taps, index = [], []
    for k in range(9):
        di, dj = k // 3 - 1, k % 3 - 1
        row = [(i + di) * W + j + dj if 0 <= i + di < H and 0 <= j + dj < W else N
               for i, j in (divmod(p, W) for p in range(N))]
        if min(row) < N:  # a tap that reads only padding adds exact zeros: skipped
            taps.append(k)
            index += row
    return tuple(taps), np.asarray(index, np.int64)


def depthwise3x3(conv: nn.Conv2D, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
    """``conv`` (3x3, stride 1, padding 1, groups = channels) applied to tokens: [B, H*W, C] -> [B, H*W, C].

    Small maps on CPU: the input tokens each tap reads are gathered in one ``index_select`` (a zero token
    stands for the padding), then out = x_tap0 * w0 + x_tap1 * w1 + ... + bias, accumulated tap by tap.
    That is the order Paddle's CPU kernel (im2col + GEMM) sums in, so on 1x1, 2x2 and 4x4 maps (32x32 and
    64x64 inputs) the output and the input gradient are bitwise the kernel's; on 3x3 maps its GEMM sums
    the last column otherwise, a float-rounding difference, as is the weight gradient's reduction order
    everywhere. Otherwise: Paddle's conv in NCHW.
    """
    C = x.shape[-1]
    if H * W <= SMALL_MAP_TOKENS and use_fastpath("small_map_dwconv", x):
        taps, index = _tap_plan(H, W)
        weight = conv.weight.reshape([C, 9])
        padded = paddle.concat([x, paddle.zeros_like(x[:, :1])], axis=1)  # [B, H*W + 1, C]
        gathered = paddle.index_select(padded, paddle.to_tensor(index, place=x.place), axis=1)
        out = None
        for k, x_tap in zip(taps, paddle.split(gathered, len(taps), axis=1)):  # x_tap: [B, H*W, C]
            term = x_tap * weight[:, k]
            out = term if out is None else out + term
        return out if conv.bias is None else out + conv.bias
    image = x.transpose([0, 2, 1]).reshape([-1, C, H, W])
    return conv(image).flatten(2).transpose([0, 2, 1])
