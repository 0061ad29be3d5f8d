"""Faster CPU formulations of UniNeXt's small-map convs and of the bias gradients, chosen by device in one place
(``use_fastpath``), and conv biases added channels-last.

At 32x32 input the stages run on 8x8, 4x4, 2x2 and 1x1 maps, where Paddle's CPU convs run one tiny GEMM per
image (and per channel for depthwise convs) and their fixed costs dominate:

- ``small_map_dwconv``: ``depthwise3x3`` runs a 3x3/stride-1/pad-1 depthwise conv on a small map
  (``matmul_form``) as one batched matmul with a per-channel [tokens, tokens] matrix built from the 3x3
  weights, in the token layout (so the token<->image transposes disappear too). Every block runs three.
- ``small_map_conv``: ``conv_channels_last`` runs a dense conv of a small map (the Merge_Blocks of stages 2-4)
  as one GEMM over the whole batch (``_conv_as_matmul``).
- ``bias_grad_matmul``: ``add_bias`` (every Linear through ``linear``, every conv bias) sums the bias gradient
  over the rows with a matmul instead of Paddle's slow reduction over the leading axes.

Each is the same products summed in another order at most (float rounding; tests/test_fastpath.py). On other
devices (GPU: cuDNN and fast reductions) and on larger maps Paddle's ops run unchanged. Measurements:
BENCHMARKS.md, "Why the fast paths exist" and "Training step vs PyTorch".
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["FASTPATHS", "use_fastpath", "disabled", "depthwise3x3", "conv_channels_last", "linear", "add_bias",
           "watched", "matmul_form", "SMALL_MAP_TOKENS", "MEDIUM_MAP_TOKENS", "MEDIUM_MAP_MIN_BATCH",
           "SMALL_CONV_TOKENS"]

# The fast paths by name; ``disabled`` switches them off (the benchmark measures each one's gain this way).
FASTPATHS: dict[str, bool] = {"small_map_dwconv": True, "small_map_conv": True, "bias_grad_matmul": True}

# Which maps ``depthwise3x3`` runs as a matmul: up to SMALL_MAP_TOKENS tokens always, up to MEDIUM_MAP_TOKENS
# from a batch of MEDIUM_MAP_MIN_BATCH. The [C, N, N] @ [C, N, batch] product does N times the conv's
# multiplications (zeros included), so it pays off only where Paddle's per-image, per-channel kernel calls
# dominate: small maps, more than one image (measured on one core, may change with Paddle or the CPU).
SMALL_MAP_TOKENS = 16
MEDIUM_MAP_TOKENS = 64
MEDIUM_MAP_MIN_BATCH = 2
# Dense convs of input maps up to this many tokens run as one GEMM over the batch (``conv_channels_last``).
SMALL_CONV_TOKENS = 64


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
def _tap_matrix(H: int, W: int) -> np.ndarray:
    """[9, H*W * H*W] float32 one-hot: entry (k, n * H*W + m) is 1 where output token n reads input token m
    through the 3x3 tap k (row-major), 0 elsewhere (the conv's padding and non-neighbours)."""
    N = H * W
    taps = np.zeros((9, N, N), np.float32)
    for n in range(N):
        i, j = divmod(n, W)
        for k in range(9):
            di, dj = k // 3 - 1, k % 3 - 1
            if 0 <= i + di < H and 0 <= j + dj < W:
                taps[k, n, (i + di) * W + j + dj] = 1
    return taps.reshape(9, N * N)


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
    on small maps. M is the [C, 9] weights times a constant one-hot [9, N*N] tap matrix, a matmul whose
    backward is a matmul too (an index_select's backward, the first version, took 66 ms on 8x8 maps at
    C=256). The same products as the conv, plus exact zeros; on 1x1 and 2x2 maps the output is bitwise the
    kernel's, elsewhere and in the gradients the sums may differ in order (float rounding;
    tests/test_fastpath.py). Otherwise: Paddle's conv in NCHW.
    """
    C = x.shape[-1]
    if matmul_form(H, W, x.shape[0]) and use_fastpath("small_map_dwconv", x) and not watched(conv):
        N = H * W
        taps = paddle.to_tensor(_tap_matrix(H, W), dtype=conv.weight.dtype, place=x.place)
        mixing = paddle.matmul(conv.weight.reshape([C, 9]), taps).reshape([C, N, N])
        out = paddle.matmul(mixing, x.transpose([2, 1, 0])).transpose([2, 1, 0])  # [C, N, B] -> [B, N, C]
        return out if conv.bias is None else add_bias(out, conv.bias)
    image = x.transpose([0, 2, 1]).reshape([-1, C, H, W])
    return conv_channels_last(conv, image).reshape([-1, H * W, C])


def conv_channels_last(conv: nn.Conv2D, image: paddle.Tensor) -> paddle.Tensor:
    """``conv`` (NCHW, zero padding) on ``image``, returned channels-last [B, H', W', C'] with the bias added in
    that layout, because Paddle adds a conv's bias as a [1, C, 1, 1] broadcast over NCHW, which its CPU kernel
    does element by element, about 10x slower than over the last axis. Used on every device: the transposed
    layout is what the model consumes next anyway. Otherwise the numbers are bitwise those of ``conv(image)``,
    transposed, except for small input maps on the CPU (``small_map_conv``): there the conv is one GEMM over
    the whole batch (``_conv_as_matmul``), the same sums in another order. A ``watched`` layer is called as a
    layer instead, so its hooks see the call."""
    if watched(conv):
        return conv(image).transpose([0, 2, 3, 1])
    if _conv_as_matmul_applies(conv, image):
        out = _conv_as_matmul(conv, image)
    else:
        out = F.conv2d(image, conv.weight, None, stride=conv._stride, padding=conv._padding,
                       dilation=conv._dilation, groups=conv._groups).transpose([0, 2, 3, 1])
    return out if conv.bias is None else add_bias(out, conv.bias)


def _conv_as_matmul_applies(conv: nn.Conv2D, image: paddle.Tensor) -> bool:
    """Whether ``conv_channels_last`` runs ``conv`` on ``image`` as ``_conv_as_matmul``: a dense (groups 1,
    dilation 1, explicit symmetric zero padding) conv of an input map of at most SMALL_CONV_TOKENS tokens."""
    return (image.shape[2] * image.shape[3] <= SMALL_CONV_TOKENS and conv._groups == 1
            and list(conv._dilation) == [1, 1] and conv._padding_mode == "zeros"
            and getattr(conv, "_padding_algorithm", "EXPLICIT") == "EXPLICIT" and len(conv._updated_padding) == 2
            and use_fastpath("small_map_conv", image))


@functools.lru_cache(maxsize=None)
def _gather_matrix(H: int, W: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int]) -> np.ndarray:
    """[H*W, K * L] float32 one-hot im2col of an H x W map for a conv with ``kernel`` (K = kh*kw taps), ``stride``
    and zero ``padding`` (L = H' * W' output positions): entry (m, k * L + o) is 1 where output o reads input m
    through tap k (row-major), 0 elsewhere (padding)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    gather = np.zeros((H * W, kh * kw, Ho * Wo), np.float32)
    for o in range(Ho * Wo):
        oi, oj = divmod(o, Wo)
        for k in range(kh * kw):
            i, j = oi * sh - ph + k // kw, oj * sw - pw + k % kw
            if 0 <= i < H and 0 <= j < W:
                gather[i * W + j, k, o] = 1
    return gather.reshape(H * W, kh * kw * Ho * Wo)


def _conv_as_matmul(conv: nn.Conv2D, image: paddle.Tensor) -> paddle.Tensor:
    """``conv`` without its bias on a small map, [B, Cin, H, W] -> [B, H', W', Cout]: im2col as a matmul with
    the constant one-hot ``_gather_matrix`` (exact: each entry is one input value), then one
    [B*L, Cin*K] @ [Cin*K, Cout] GEMM. Paddle's CPU conv runs one GEMM per image instead, a matrix-vector
    product on a 2x2 map: 50 ms forward and backward for merge3 at 32x32 and batch 64, 4 ms this way."""
    _, Cin, H, W = image.shape
    Cout, _, kh, kw = conv.weight.shape
    stride, padding = tuple(conv._stride), tuple(conv._updated_padding)
    Ho, Wo = (H + 2 * padding[0] - kh) // stride[0] + 1, (W + 2 * padding[1] - kw) // stride[1] + 1
    gather = paddle.to_tensor(_gather_matrix(H, W, (kh, kw), stride, padding), dtype=image.dtype,
                              place=image.place)
    cols = paddle.matmul(image.reshape([-1, H * W]), gather).reshape([-1, Cin * kh * kw, Ho * Wo])  # [B, Cin*K, L]
    if Ho * Wo > 1:
        cols = cols.transpose([0, 2, 1])  # [B, L, Cin*K]
    out = paddle.matmul(cols.reshape([-1, Cin * kh * kw]), conv.weight.reshape([Cout, -1]), transpose_y=True)
    return out.reshape([-1, Ho, Wo, Cout])


def linear(layer: nn.Linear, x: paddle.Tensor) -> paddle.Tensor:
    """``layer(x)`` for an ``nn.Linear``: [..., in] -> [..., out]. Where ``add_bias`` sums the bias gradient by a
    matmul, it is that matmul plus ``add_bias`` (the same numbers, bitwise: Paddle's Linear is this matmul plus
    this add); otherwise, and for a ``watched`` layer, the layer itself (on the GPU, Paddle's fused Linear)."""
    if layer.bias is None or watched(layer) or not _bias_grad_by_matmul(x, layer.bias):
        return layer(x)
    return add_bias(paddle.matmul(x, layer.weight), layer.bias)


def add_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias`` for a bias [C] over the last axis of x [..., C]; the same numbers, bitwise.

    Where a gradient flows to the bias on the CPU (``bias_grad_matmul``), the bias is broadcast as the matmul
    ones [R, 1] @ bias [1, C] (R = the rows of x; exact: 1 * b), whose backward sums the rows' gradients as the
    matmul ones^T @ grad, not by Paddle's reduction over the leading axis, which its CPU kernel runs about 5x
    slower (an add of [64, 64, 256] forward and backward: 10 ms, 2 ms this way): the same sum in another order
    (float rounding). Elsewhere (GPU, no gradient, tracing): the plain add.
    """
    if not _bias_grad_by_matmul(x, bias):
        return x + bias
    rows = paddle.ones([math.prod(x.shape[:-1]), 1], x.dtype)
    return x + paddle.matmul(rows, bias.reshape([1, -1])).reshape(x.shape)


def _bias_grad_by_matmul(x: paddle.Tensor, bias: paddle.Tensor) -> bool:
    """Whether ``add_bias`` broadcasts ``bias`` over ``x`` by a matmul: a gradient will flow to the bias, in
    dynamic mode, on the CPU."""
    return (not bias.stop_gradient and paddle.is_grad_enabled() and paddle.in_dynamic_mode()
            and use_fastpath("bias_grad_matmul", x))
