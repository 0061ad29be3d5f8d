"""UniNeXt: a unified architecture for vision recognition, as the notebook builds it (section 2.3.3).

Paper: "UniNeXt: Exploring A Unified Architecture for Vision Recognition" (Lin et al., 2023),
original code: https://github.com/jianlong-yuan/UniNeXt. This is the AI Studio notebook's Paddle port
of the local-window-attention variant, kept faithful to it:

- Layer and attribute names are the notebook's, so ``state_dict`` keys and shapes are identical and a
  ``best_model.pdparams`` saved by the notebook loads here (and the reverse).
- Layers are created and initialised in the notebook's order, with its initialisers as its Paddle 2.x drew
  them (``trunc_normal_``), so ``paddle.seed(s)`` gives the initial weights of the notebook's code; the same
  weights give the same logits.
- Its quirks stay by default (see README, fidelity notes): stage 3 reads ``heads[1]``/``ws[1]``
  (``paper_stage3_heads=True`` uses ``heads[2]``/``ws[2]``), ``Mlp`` adds a LayerNorm+GELU branch,
  the ``qkv`` Linear has a bias, and ``Merge_Block`` recovers the map side as ``sqrt(tokens)``, so the
  model takes square images only (``non_square=True`` tracks height and width instead).

What differs is only how the tensors are moved: ``DilatedAttention`` takes the qkv Linear's output as it
is and splits it (the notebook passed a stacked [3, B, N, C] tensor), q, k and v are each windowed by
``_window``, on maps that pad to a single window only the map's own tokens are computed (the padded query
rows were cropped away; the padded zero keys enter each softmax as one logit, ``_is_one_padded_window``),
reshapes keep the batch dimension as ``-1`` (so ``paddle.jit.to_static`` can export the model with a dynamic
batch), the map sizes are the convolutions' real output sizes (``stage_sizes``) rather than ``H // 2**k``, and
a model built on (or moved to) the CPU takes the faster formulations of ``fastpath.py`` for its Linears,
LayerNorms, GELUs and small-map convs (same sums to float rounding; other devices keep Paddle's own ops).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .droppath import DropPath
from .errors import ConfigError
from . import fastpath
from .fastpath import conv_channels_last, depthwise3x3

__all__ = [
    "Mlp", "DilatedAttention", "UnifiedBlock", "Merge_Block", "UniNeXt", "UniNeXt_T", "UniNeXt_S", "UniNeXt_B",
    "VARIANTS", "create_model", "stage_sizes",
]

# The notebook's initialisers. Its Paddle 2.x ``TruncatedNormal(std=.02)`` cut at 2 standard deviations; since
# Paddle 2.6 ``a``/``b`` are absolute bounds (default -2, 2, which cut nothing at std .02), hence the explicit
# +-2 std: weights within +-0.04, std 0.0176.
trunc_normal_ = nn.initializer.TruncatedNormal(std=.02, a=-.04, b=.04)
kaiming_normal_ = nn.initializer.KaimingNormal()
zeros_ = nn.initializer.Constant(0.)
ones_ = nn.initializer.Constant(1.)

# The notebook's three builders (UniNeXt_T/_S/_B), every argument they pass but num_classes.
VARIANTS: dict[str, dict[str, Any]] = {
    "T": dict(embed_dim=64, depth=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), ws=(7, 7, 7, 7), mlp_ratio=4.),
    "S": dict(embed_dim=96, depth=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), ws=(7, 7, 7, 7), mlp_ratio=4.),
    "B": dict(embed_dim=128, depth=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), ws=(7, 7, 7, 7), mlp_ratio=4.),
}


# ---------------------------------------------------------------------------------------------------
# Map sizes and local windows. ``notebook_windows.py`` keeps the notebook's helpers (``local_group``,
# ``img2group``, ``group2image``) as an API on top of these.

def stage_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of the token map after the stem and after each of the four Merge_Blocks, for an input image of
    height x width: each is a 3x3, stride-2, padding-1 conv, so each halves a side rounding up, (s + 1) // 2.

    E.g. 224 -> [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]; stage i (1-4) runs on entry i.
    """
    sizes = [((height + 1) // 2, (width + 1) // 2)]
    for _ in range(4):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _window_padding(H: int, W: int, ws: int) -> tuple[int, int]:
    """(pad_bottom, pad_right) that ``local_group`` adds to an H x W map for windows of side ws."""
    if H % ws == 0 and W % ws == 0:
        return 0, 0
    return ws - H % ws, ws - W % ws


def _zero_pad(x: paddle.Tensor, pad_bottom: int, pad_right: int) -> paddle.Tensor:
    """[B, H, W, C] -> [B, H + pad_bottom, W + pad_right, C], zeros below and to the right: ``local_group``'s
    ``F.pad(..., data_format='NHWC')`` as concatenations, because Paddle Inference's oneDNN pad kernel fails on
    NHWC maps (Paddle 3.3.1)."""
    _, H, W, C = x.shape
    batch = paddle.shape(x)[0]  # a tensor, so the exported graph keeps a dynamic batch
    if pad_right:
        x = paddle.concat([x, paddle.zeros([batch, H, pad_right, C], x.dtype)], axis=2)
    if pad_bottom:
        x = paddle.concat([x, paddle.zeros([batch, pad_bottom, W + pad_right, C], x.dtype)], axis=1)
    return x


def _window(x: paddle.Tensor, H: int, W: int, ws: int, num_heads: int) -> paddle.Tensor:
    """``img2group``: [B, H*W, C] -> [B*Gh*Gw, heads, ws*ws, C/heads], windows in row-major order.

    Two transposes of at most 5 dims (windows, then heads) rather than one of 7, because Paddle's CPU transpose
    of more than 6 dims takes a much slower generic path (BENCHMARKS.md, optimisation 6).
    Note ``local_group``'s padding rule: when either side needs padding, it pads both sides by
    ``ws - side % ws``, which adds a whole window of zeros on a side that was already a multiple of ws.
    Kept as written.
    """
    C = x.shape[-1]
    pad_bottom, pad_right = _window_padding(H, W, ws)
    x = x.reshape([-1, H, W, C])
    if pad_bottom or pad_right:
        x = _zero_pad(x, pad_bottom, pad_right)
    Gh, Gw = (H + pad_bottom) // ws, (W + pad_right) // ws
    x = x.reshape([-1, Gh, ws, Gw, ws * C])
    if Gw > 1:  # with one window per row of windows the order is already [B, Gh, Gw, ws, ws*C]
        x = x.transpose([0, 1, 3, 2, 4])
    x = x.reshape([-1, ws * ws, num_heads, C // num_heads])
    return x.transpose([0, 2, 1, 3])


def _is_one_padded_window(H: int, W: int, ws: int) -> bool:
    """Whether the map pads to exactly one ws x ws window (at 32x32 input: stages 2-4, maps 4, 2 and 1).

    Then ``DilatedAttention`` computes only the map's own tokens: the padded tokens' query rows are cropped away
    by ``group2image`` after the attention, and the padded keys and values are zeros (padded after the qkv
    projection), so each padded key adds a logit of exactly 0 to every real query's softmax and nothing to its
    output. The P padded keys together are one logit log(P) (exp(log P) = P times exp(0)): the notebook's softmax
    over ws*ws logits, to float rounding, on an N x (N + 1) matrix instead of ws*ws x ws*ws.
    """
    pad_bottom, pad_right = _window_padding(H, W, ws)
    return (pad_bottom or pad_right) > 0 and H + pad_bottom == ws and W + pad_right == ws


def _unwindow(x: paddle.Tensor, H: int, W: int, Hp: int, Wp: int, ws: int) -> paddle.Tensor:
    """[B*Gh*Gw, heads, ws*ws, head_dim] -> [B, H*W, C], cropping the padding (``group2image``); the
    transposes of ``_window`` in reverse."""
    _, heads, _, head_dim = x.shape
    C = heads * head_dim
    Gh, Gw = Hp // ws, Wp // ws
    x = x.transpose([0, 2, 1, 3]).reshape([-1, Gh, Gw, ws, ws * C])
    if Gw > 1:
        x = x.transpose([0, 1, 3, 2, 4])
    x = x.reshape([-1, Hp, Wp, C])
    if Hp != H or Wp != W:
        x = x[:, :H, :W, :]
    return x.reshape([-1, H * W, C])


def _tokens_to_image(x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return x.reshape([-1, H, W, x.shape[-1]]).transpose([0, 3, 1, 2])


# ---------------------------------------------------------------------------------------------------

class Mlp(nn.Layer):
    """The HdC feed-forward: fc1, GELU, then a 3x3 depthwise conv branch (LayerNorm + GELU) added back
    in the hidden dimension, then fc2. The LayerNorm+GELU branch is the notebook's addition.

    Args:
        in_features: int, input channels.
        hidden_features: int | None, hidden channels, default: in_features.
        out_features: int | None, output channels, default: in_features.
        act_layer: type, activation after fc1, default: nn.GELU.
        drop: float, dropout after fc1 and fc2, default: 0.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Layer] = nn.GELU, drop: float = 0.) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.dwconv = nn.Conv2D(hidden_features, hidden_features, 3, 1, 1, groups=hidden_features)
        self.norm_act = nn.Sequential(nn.LayerNorm(hidden_features), nn.GELU())
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
        x = self.drop(self.act(self.fc1(x)))  # [B, H*W, hidden]
        x = x + self.norm_act(depthwise3x3(self.dwconv, x, H, W))
        return self.drop(self.fc2(x))


class DilatedAttention(nn.Layer):
    """Multi-head self-attention inside non-overlapping ws x ws windows, plus LePE (a 3x3 depthwise conv
    on v, the EC branch) added to the output before the projection.

    Maps whose sides are not multiples of ws are zero-padded (after the qkv projection, so padded tokens
    have q = k = v = 0) and the padded keys take part in the softmax, as in the notebook.

    Args:
        dim: int, channels.
        ws: int, window side, default: 7.
        num_heads: int, attention heads, default: 8.
        attn_drop: float, dropout on attention weights, default: 0.
        qk_scale: float | None, logit scale, default: head_dim ** -0.5.
    """

    def __init__(self, dim: int, ws: int = 7, num_heads: int = 8, attn_drop: float = 0.,
                 qk_scale: float | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.ws = ws
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.attn_drop = nn.Dropout(attn_drop)
        self.lepe = nn.Conv2D(in_channels=dim, out_channels=dim, kernel_size=3, stride=1, padding=1, groups=dim,
                              bias_attr=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, qkv: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
        """qkv: [B, H*W, 3*dim], the output of the block's qkv Linear -> [B, H*W, dim].

        The notebook's version took that output reshaped and stacked as [3, B, H*W, dim]; the split here gives
        the same q, k and v.
        """
        heads, ws = self.num_heads, self.ws
        q, k, v = paddle.split(qkv, 3, axis=-1)  # [B, H*W, C] each; split, not slices: one concat backward
        lepe = depthwise3x3(self.lepe, v, H, W)  # [B, H*W, C]
        if _is_one_padded_window(H, W, ws):
            x = self._one_window_attention(q, k, v, ws * ws - H * W)
        else:
            pad_bottom, pad_right = _window_padding(H, W, ws)
            q, k, v = (_window(t, H, W, ws, heads) for t in (q, k, v))  # [B*G, heads, ws*ws, head_dim]
            attn = paddle.matmul(q * self.scale, k, transpose_y=True)  # [B*G, heads, ws*ws, ws*ws]
            attn = self.attn_drop(F.softmax(attn, axis=-1))
            x = _unwindow(attn @ v, H, W, H + pad_bottom, W + pad_right, ws)
        return self.proj(x + lepe)

    def _one_window_attention(self, q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor,
                              padded: int) -> paddle.Tensor:
        """Attention of a map that pads to one window with ``padded`` zero tokens (``_is_one_padded_window``):
        q, k, v [B, N, C] -> [B, N, C], the ``padded`` zero keys as one logit log(padded) in each softmax."""
        N, C, heads = q.shape[1], self.dim, self.num_heads
        q, k, v = (t.reshape([-1, N, heads, C // heads]).transpose([0, 2, 1, 3]) for t in (q, k, v))
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)  # [B, heads, N, N]
        zeros_logit = paddle.full([paddle.shape(attn)[0], heads, N, 1], math.log(padded), attn.dtype)
        attn = F.softmax(paddle.concat([attn, zeros_logit], axis=-1), axis=-1)  # [B, heads, N, N + 1]
        attn = self.attn_drop(paddle.split(attn, [N, 1], axis=-1)[0])  # the padded keys' weights meet zero values
        x = attn @ v  # [B, heads, N, head_dim]
        return x.transpose([0, 2, 1, 3]).reshape([-1, N, C])


class UnifiedBlock(nn.Layer):
    """One UniNeXt block: x + DilatedAttention(LN(x)), x + Mlp(LN(x)), then PC: x + dwconv3x3(x).

    Args:
        dim: int, channels.
        num_heads: int, attention heads.
        ws: int, window side, default: 7.
        mlp_ratio: float, hidden/in channels of the Mlp, default: 4.
        qkv_bias: bool, bias in the qkv Linear, default: False (UniNeXt passes True).
        qk_scale: float | None, attention logit scale, default: head_dim ** -0.5.
        drop: float, Mlp dropout, default: 0.
        attn_drop: float, attention dropout, default: 0.
        drop_path: float, stochastic depth of both residual branches, default: 0.
        act_layer: type, Mlp activation, default: nn.GELU.
    """

    def __init__(self, dim: int, num_heads: int, ws: int = 7, mlp_ratio: float = 4., qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 act_layer: type[nn.Layer] = nn.GELU) -> None:
        super().__init__()
        self.mlp_ratio = mlp_ratio
        mlp_hidden_dim = int(dim * mlp_ratio)
        # Unified mixer
        self.norm1 = nn.LayerNorm(dim)
        self.attns = DilatedAttention(dim, ws=ws, num_heads=num_heads, attn_drop=attn_drop, qk_scale=qk_scale)
        self.qkv = nn.Linear(dim, dim * 3, bias_attr=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        # HdC feed-forward
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, out_features=dim, act_layer=act_layer,
                       drop=drop)
        # PC (post convolution)
        self.cpe = nn.Conv2D(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
        """x: [B, H*W, dim] -> [B, H*W, dim]."""
        x = x + self.drop_path(self.attns(self.qkv(self.norm1(x)), H, W))
        x = x + self.drop_path(self.mlp(self.norm2(x), H, W))
        return x + depthwise3x3(self.cpe, x, H, W)


class Merge_Block(nn.Layer):
    """Downsampling between stages: a 3x3 stride-2 conv then LayerNorm.

    The notebook recovers the map side as ``int(sqrt(tokens))``, i.e. it assumes a square map. Passing
    ``H`` and ``W`` (``UniNeXt(non_square=True)``) lifts that assumption.

    Args:
        dim: int, input channels.
        dim_out: int, output channels.
        norm_layer: type, normalisation after the conv, default: nn.LayerNorm.
    """

    def __init__(self, dim: int, dim_out: int, norm_layer: type[nn.Layer] = nn.LayerNorm) -> None:
        super().__init__()
        self.conv = nn.Conv2D(dim, dim_out, 3, 2, 1)
        self.norm = norm_layer(dim_out)

    def forward(self, x: paddle.Tensor, H: int | None = None, W: int | None = None) -> paddle.Tensor:
        """x: [B, H*W, dim] -> [B, ceil(H/2)*ceil(W/2), dim_out]."""
        if H is None or W is None:
            H = W = math.isqrt(x.shape[1])
            if H * W != x.shape[1]:
                raise ConfigError(f"Merge_Block got {x.shape[1]} tokens, not a square map: UniNeXt needs square "
                                  "images (or build it with non_square=True)")
        return self.norm(conv_channels_last(self.conv, _tokens_to_image(x, H, W)).flatten(1, 2))


class UniNeXt(nn.Layer):
    """UniNeXt: conv stem, then four stages of UnifiedBlocks with Merge_Block downsampling, LayerNorm,
    global average pooling and a Linear head.

    Args:
        in_chans: int, input channels, default: 3.
        num_classes: int, classes of the head (0: no head), default: 1000.
        embed_dim: int, channels of stage 1 (doubled at each stage), default: 96.
        depth: tuple[int, ...], blocks per stage, default: (2, 2, 6, 2).
        ws: tuple[int, ...], window side per stage, default: (7, 7, 7, 7).
        num_heads: tuple[int, ...], heads per stage, default: (3, 6, 12, 24) (the notebook's default, 12, is
            not a sequence and fails).
        mlp_ratio: float, Mlp hidden/in channels, default: 4.
        qkv_bias: bool, bias in the qkv Linear, default: True.
        qk_scale: float | None, attention logit scale, default: head_dim ** -0.5.
        drop_rate: float, Mlp dropout, default: 0.
        attn_drop_rate: float, attention dropout, default: 0.
        drop_path_rate: float, stochastic depth of the last block (linear from 0), default: 0.
        norm_layer: type, final normalisation, default: nn.LayerNorm.
        paper_stage3_heads: bool, stage 3 uses heads[2]/ws[2] as in the paper instead of the notebook's
            heads[1]/ws[1]; changes the compute, not the parameters, default: False.
        non_square: bool, track height and width through the stages so non-square images work; the
            notebook's Merge_Block assumes square maps, default: False (non-square input: ConfigError).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96,
                 depth: tuple[int, ...] = (2, 2, 6, 2), ws: tuple[int, ...] = (7, 7, 7, 7),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), mlp_ratio: float = 4., qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_rate: float = 0., attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0., norm_layer: type[nn.Layer] = nn.LayerNorm,
                 paper_stage3_heads: bool = False, non_square: bool = False) -> None:
        super().__init__()
        for name, values in (("depth", depth), ("ws", ws), ("num_heads", num_heads)):
            if not isinstance(values, (list, tuple)) or len(values) != 4:
                raise ConfigError(f"UniNeXt's {name} needs one value for each of its 4 stages, got {values!r}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.non_square = non_square
        heads = num_heads
        # stem: three 3x3 convs (the first with stride 2), each followed by LayerNorm + GELU over channels
        stem_out = embed_dim // 2
        self.stem1 = nn.Conv2D(in_chans, stem_out, 3, 2, 1)
        self.norm_act1 = nn.Sequential(nn.LayerNorm(stem_out), nn.GELU())
        self.stem2 = nn.Conv2D(stem_out, stem_out, 3, 1, 1)
        self.norm_act2 = nn.Sequential(nn.LayerNorm(stem_out), nn.GELU())
        self.stem3 = nn.Conv2D(stem_out, stem_out, 3, 1, 1)
        self.norm_act3 = nn.Sequential(nn.LayerNorm(stem_out), nn.GELU())

        self.merge0 = Merge_Block(stem_out, embed_dim)

        # Stochastic depth decay rule. Computed in float32 with paddle.linspace, as the notebook does.
        dpr = [x.item() for x in paddle.linspace(0, drop_path_rate, np.sum(depth))]
        stage3 = 2 if paper_stage3_heads else 1  # the notebook's stage 3 reads heads[1] and ws[1]
        stage_cfg = [(heads[0], ws[0]), (heads[1], ws[1]), (heads[stage3], ws[stage3]), (heads[3], ws[3])]
        curr_dim = embed_dim
        for i, (stage_heads, stage_ws) in enumerate(stage_cfg):
            if i > 0:  # created in the notebook's order (merge_i, then stage_i+1) for seed-identical init
                setattr(self, f"merge{i}", Merge_Block(curr_dim, curr_dim * 2))
                curr_dim = curr_dim * 2
            first = int(np.sum(depth[:i]))
            setattr(self, f"stage{i + 1}", nn.LayerList([
                UnifiedBlock(dim=curr_dim, num_heads=stage_heads, ws=stage_ws, mlp_ratio=mlp_ratio,
                             qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                             drop_path=dpr[first + j])
                for j in range(depth[i])]))
        self.norm = norm_layer(curr_dim)
        self.head = nn.Linear(curr_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_features = curr_dim  # the pooled features' width (the notebook's stays embed_dim)
        self.apply(self._init_weights)
        self.cpu_formulations = fastpath.install(self, cpu=_on_cpu(self))  # decided once, for this device

    def to(self, device: Any = None, dtype: Any = None, blocking: bool | None = None) -> UniNeXt:
        """``nn.Layer.to``, choosing the formulations of ``fastpath`` again for the device the weights are on."""
        super().to(device=device, dtype=dtype, blocking=blocking)
        self.cpu_formulations = fastpath.install(self, cpu=_on_cpu(self))
        return self

    def _init_weights(self, m: nn.Layer) -> None:
        """The notebook's init of one layer: Linear truncated normal, Conv2D Kaiming, norms ones/zeros."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight)
            if m.bias is not None:
                zeros_(m.bias)
        if isinstance(m, nn.Conv2D):
            kaiming_normal_(m.weight)
            if m.bias is not None:
                zeros_(m.bias)
        if isinstance(m, (nn.BatchNorm2D, nn.LayerNorm)):
            ones_(m.weight)
            zeros_(m.bias)

    def _stem(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, 3, H, W] -> [B, H/2*W/2, embed_dim/2]; LayerNorm over channels in the channels-last layout."""
        for conv, norm_act in ((self.stem1, self.norm_act1), (self.stem2, self.norm_act2)):
            x = norm_act(conv_channels_last(conv, x)).transpose([0, 3, 1, 2])
        return self.norm_act3(conv_channels_last(self.stem3, x).flatten(1, 2))

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[B, in_chans, H, W] -> pooled features [B, num_features]."""
        H, W = x.shape[2], x.shape[3]
        if H != W and not self.non_square:
            raise ConfigError(f"UniNeXt needs square images, got {H}x{W} (or build it with non_square=True)")
        sizes = stage_sizes(H, W)  # after the stem, then the map of each stage
        x = self._stem(x)
        stages = ((self.merge0, self.stage1), (self.merge1, self.stage2), (self.merge2, self.stage3),
                  (self.merge3, self.stage4))
        for (merge, blocks), (H_in, W_in), (H, W) in zip(stages, sizes, sizes[1:]):
            x = merge(x, H_in, W_in) if self.non_square else merge(x)
            for blk in blocks:
                x = blk(x, H, W)
        x = self.norm(x)
        return paddle.mean(x, axis=1)

    def forward_head(self, x: paddle.Tensor) -> paddle.Tensor:
        """Pooled features [B, num_features] -> logits [B, num_classes]."""
        return self.head(x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(self._init_weights)
        self.cpu_formulations = fastpath.install(self, cpu=_on_cpu(self))


def _on_cpu(model: nn.Layer) -> bool:
    """Whether ``model``'s weights are on the CPU."""
    return next(iter(model.parameters())).place.is_cpu_place()


def create_model(variant: str, num_classes: int = 10, **kwargs: Any) -> UniNeXt:
    """Build UniNeXt-``variant`` (T, S or B) as the notebook's builders do; ``kwargs`` go to ``UniNeXt``
    and override the variant's values."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown UniNeXt variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return UniNeXt(num_classes=num_classes, **{**VARIANTS[variant], **kwargs})


def UniNeXt_T(num_classes: int = 10, **kwargs: Any) -> UniNeXt:
    """UniNeXt-T (``VARIANTS["T"]``): 23.0M parameters at 10 classes."""
    return create_model("T", num_classes, **kwargs)


def UniNeXt_S(num_classes: int = 10, **kwargs: Any) -> UniNeXt:
    """UniNeXt-S (``VARIANTS["S"]``): 51.4M parameters at 10 classes."""
    return create_model("S", num_classes, **kwargs)


def UniNeXt_B(num_classes: int = 10, **kwargs: Any) -> UniNeXt:
    """UniNeXt-B (``VARIANTS["B"]``): 91.1M parameters at 10 classes."""
    return create_model("B", num_classes, **kwargs)
