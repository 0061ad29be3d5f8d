"""The CPU formulations of UniNeXt's ops, chosen once per model: ``install(model, cpu)`` when it is built for (or
moved to) a device, never per call.

On the CPU, Paddle 3.3.1's eager kernels have fixed costs and single-threaded passes that dominate UniNeXt at small
maps (at 32x32 input its stages run on 8x8, 4x4, 2x2 and 1x1 maps), so ``install`` gives the model:

- ``bias_grad_matmul``: every ``nn.Linear`` with a bias computes ``x @ W`` plus the bias broadcast as a matmul
  (``add_bias``), whose backward sums the bias gradient by a matmul instead of Paddle's slow reduction;
- ``cpp_kernels``: every ``nn.LayerNorm`` over one axis and exact ``nn.GELU`` runs the C++ kernels of
  ``kernels.py`` (one multi-threaded pass forward and backward), where they are built;
- ``small_map_dwconv``: ``depthwise3x3`` runs a 3x3 depthwise conv of a small map as one batched matmul with a
  per-channel [tokens, tokens] matrix, in the token layout (``matmul_form``);
- ``small_map_conv``: ``conv_channels_last`` runs a dense conv of a small map (the Merge_Blocks of stages 2-4) as
  one GEMM over the whole batch, and adds conv biases channels-last (Paddle's NCHW bias broadcast is element by
  element on the CPU).

Each computes the same products, summed in another order at most (float rounding; tests/test_fastpath.py). The
Linear, LayerNorm and GELU formulations replace those layers' ``forward``: the layers keep their Paddle types and
are still called as layers, so ``paddle.summary``, ``paddle.flops`` and forward hooks see them as Paddle's. The
convs' formulations live in the two functions the model calls (they take tokens, or give channels-last maps); a
conv that forward hooks watch is called as a layer there. ``install(model, cpu=False)`` (other devices, and the
exported program) leaves Paddle's own ops everywhere. Measurements: BENCHMARKS.md.
"""
from __future__ import annotations

import functools
import math
import types
from collections.abc import Iterable

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from . import kernels

__all__ = ["FORMULATIONS", "install", "depthwise3x3", "conv_channels_last", "add_bias", "watched", "matmul_form",
           "SMALL_MAP_TOKENS", "MEDIUM_MAP_TOKENS", "MEDIUM_MAP_MIN_BATCH", "SMALL_CONV_TOKENS"]

FORMULATIONS = ("bias_grad_matmul", "cpp_kernels", "small_map_dwconv", "small_map_conv")
_CONV_FORMULATIONS = "cpu_formulations"  # the attribute ``install`` sets on convs: the formulations they take

# Which maps ``depthwise3x3`` runs as a matmul: up to SMALL_MAP_TOKENS tokens always, up to MEDIUM_MAP_TOKENS
# from a batch of MEDIUM_MAP_MIN_BATCH. The [C, N, N] @ [C, N, batch] product does N times the conv's
# multiplications (zeros included), so it pays off only where Paddle's per-image, per-channel kernel calls
# dominate: small maps, more than one image (measured on one core, may change with Paddle or the CPU).
SMALL_MAP_TOKENS = 16
MEDIUM_MAP_TOKENS = 64
MEDIUM_MAP_MIN_BATCH = 2
# Dense convs of input maps up to this many tokens run as one GEMM over the batch (``conv_channels_last``).
SMALL_CONV_TOKENS = 64


def install(model: nn.Layer, cpu: bool, disabled: Iterable[str] = ()) -> list[str]:
    """Give ``model``'s layers the CPU formulations (``cpu``), all but the ``disabled`` ones, or Paddle's own ops
    (``cpu=False``: other devices, export). Returns the formulations installed. Idempotent: installing again
    replaces what was there."""
    chosen = [name for name in FORMULATIONS if cpu and name not in set(disabled)]
    if "cpp_kernels" in chosen and not kernels.available():
        chosen.remove("cpp_kernels")
    for layer in model.sublayers(include_self=True):
        layer.__dict__.pop("forward", None)  # back to the class's forward
        if isinstance(layer, nn.Linear) and "bias_grad_matmul" in chosen and layer.bias is not None:
            layer.forward = types.MethodType(_linear_forward, layer)
        elif isinstance(layer, nn.LayerNorm) and "cpp_kernels" in chosen and _one_axis(layer):
            layer.forward = types.MethodType(_layer_norm_forward, layer)
        elif isinstance(layer, nn.GELU) and "cpp_kernels" in chosen and not layer._approximate:
            layer.forward = types.MethodType(_gelu_forward, layer)
        elif isinstance(layer, nn.Conv2D):
            setattr(layer, _CONV_FORMULATIONS, frozenset(chosen))
    return chosen


def _one_axis(norm: nn.LayerNorm) -> bool:
    return len(norm._normalized_shape) == 1 and norm.weight is not None and norm.bias is not None


def _kernel_applies(x: paddle.Tensor) -> bool:
    """The C++ kernels take float32 tensors in dynamic mode (a half-precision or traced call takes Paddle's)."""
    return x.dtype == paddle.float32 and paddle.in_dynamic_mode()


def _linear_forward(self: nn.Linear, x: paddle.Tensor) -> paddle.Tensor:
    """``nn.Linear`` with ``bias_grad_matmul``: the same numbers, bitwise (Paddle's Linear is this matmul plus this
    add); the bias broadcast by a matmul where a gradient flows to it (``add_bias``)."""
    if not (_bias_gets_a_gradient(self.bias) and x.place.is_cpu_place()):
        return F.linear(x, self.weight, self.bias)
    return add_bias(paddle.matmul(x, self.weight), self.bias)


def _layer_norm_forward(self: nn.LayerNorm, x: paddle.Tensor) -> paddle.Tensor:
    if not _kernel_applies(x):
        return nn.LayerNorm.forward(self, x)
    return kernels.layer_norm(x, self.weight, self.bias, self._epsilon)


def _gelu_forward(self: nn.GELU, x: paddle.Tensor) -> paddle.Tensor:
    return kernels.gelu(x) if _kernel_applies(x) else nn.GELU.forward(self, x)


def _conv_takes(conv: nn.Conv2D, formulation: str) -> bool:
    return formulation in getattr(conv, _CONV_FORMULATIONS, ()) and not watched(conv)


def _transposed(conv: nn.Conv2D, x: paddle.Tensor, perm: list[int]) -> paddle.Tensor:
    """``x.transpose(perm)``, by the C++ kernel (on the math library's threads) in ``conv``'s formulations."""
    return kernels.transpose(x, perm) if _conv_takes(conv, "cpp_kernels") and _kernel_applies(x) else x.transpose(perm)


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
    may users): then the conv formulations, which use its weights without calling it, step aside."""
    return bool(layer._forward_pre_hooks or layer._forward_post_hooks)


def matmul_form(H: int, W: int, batch: int) -> bool:
    """Whether ``depthwise3x3`` computes an H x W map of ``batch`` images as a matmul (``small_map_dwconv``; see
    the thresholds above)."""
    return H * W <= SMALL_MAP_TOKENS or (H * W <= MEDIUM_MAP_TOKENS and batch >= MEDIUM_MAP_MIN_BATCH)


def depthwise3x3(conv: nn.Conv2D, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
    """``conv`` (3x3, stride 1, padding 1, groups = channels) applied to tokens: [B, H*W, C] -> [B, H*W, C].

    ``small_map_dwconv`` on small maps: per channel c, an [N, N] matrix M_c whose row n holds the weights of the
    taps through which output token n reads each input token (zeros elsewhere), so out_c = M_c @ x_c + b_c: one
    batched matmul over the channels instead of Paddle's per-channel depthwise kernel, whose fixed cost dominates
    on small maps. M is the [C, 9] weights times a constant one-hot [9, N*N] tap matrix, a matmul whose backward
    is a matmul too. The same products as the conv, plus exact zeros; on 1x1 and 2x2 maps the output is bitwise
    the kernel's, elsewhere and in the gradients the sums may differ in order (float rounding). Otherwise:
    Paddle's conv in NCHW.
    """
    C = x.shape[-1]
    if _conv_takes(conv, "small_map_dwconv") and matmul_form(H, W, x.shape[0]):
        N = H * W
        taps = paddle.to_tensor(_tap_matrix(H, W), dtype=conv.weight.dtype, place=x.place)
        mixing = paddle.matmul(conv.weight.reshape([C, 9]), taps).reshape([C, N, N])
        out = _transposed(conv, paddle.matmul(mixing, _transposed(conv, x, [2, 1, 0])), [2, 1, 0])  # [B, N, C]
        return out if conv.bias is None else add_bias(out, conv.bias)
    image = x.reshape([-1, H, W, C]).transpose([0, 3, 1, 2])  # [B, H*W, C] -> [B, C, H, W]
    return conv_channels_last(conv, image).reshape([-1, H * W, C])


def conv_channels_last(conv: nn.Conv2D, image: paddle.Tensor) -> paddle.Tensor:
    """``conv`` (NCHW, zero padding) on ``image``, returned channels-last [B, H', W', C'].

    ``small_map_conv``: the bias is added in that layout (Paddle adds a conv's bias as a [1, C, 1, 1] broadcast
    over NCHW, which its CPU kernel does element by element, about 10x slower than over the last axis), and a
    dense conv of a small input map is one GEMM over the whole batch (``_conv_as_matmul``), the same sums in
    another order. Otherwise, and for a ``watched`` conv: ``conv(image)``, transposed.
    """
    if not _conv_takes(conv, "small_map_conv"):
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
            and getattr(conv, "_padding_algorithm", "EXPLICIT") == "EXPLICIT" and len(conv._updated_padding) == 2)


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
    [B*L, Cin*K] @ [Cin*K, Cout] GEMM, where Paddle's CPU conv runs one GEMM per image (a matrix-vector product
    on a 2x2 map)."""
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


def add_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """``x + bias`` for a bias [C] over the last axis of x [..., C]; the same numbers, bitwise.

    Where a gradient flows to the bias, it is broadcast as the matmul ones [R, 1] @ bias [1, C] (R = the rows of
    x; exact: 1 * b), whose backward sums the rows' gradients as the matmul ones^T @ grad, not by Paddle's
    reduction over the leading axis, which its CPU kernel runs about 5x slower: the same sum in another order
    (float rounding). Otherwise the plain add.
    """
    if not _bias_gets_a_gradient(bias):
        return x + bias
    rows = paddle.ones([math.prod(x.shape[:-1]), 1], x.dtype)
    return x + paddle.matmul(rows, bias.reshape([1, -1])).reshape(x.shape)


def _bias_gets_a_gradient(bias: paddle.Tensor) -> bool:
    return not bias.stop_gradient and paddle.is_grad_enabled() and paddle.in_dynamic_mode()
