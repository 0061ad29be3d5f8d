"""Stochastic depth (DropPath), as the notebook wrote it (section 2.3.2).

Origin: timm's ``drop_path``; the notebook's Paddle version is kept line for line so that, with the same
seed, the port draws the same random numbers as the notebook and drops the same samples.
"""
from __future__ import annotations

import paddle
from paddle import nn

__all__ = ["drop_path", "DropPath"]


def drop_path(x: paddle.Tensor, drop_prob: float = 0.0, training: bool = False) -> paddle.Tensor:
    """
    Drop paths (Stochastic Depth) per sample (when applied in main path of residual blocks).
    the original name is misleading as 'Drop Connect' is a different form of dropout in a separate paper...
    See discussion: https://github.com/tensorflow/tpu/issues/494#issuecomment-532968956 ...
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = paddle.to_tensor(1 - drop_prob)
    shape = (paddle.shape(x)[0],) + (1,) * (x.ndim - 1)
    random_tensor = keep_prob + paddle.rand(shape, dtype=x.dtype)
    random_tensor = paddle.floor(random_tensor)  # binarize
    output = x.divide(keep_prob) * random_tensor
    return output


class DropPath(nn.Layer):
    """Drop whole samples of a residual branch with probability ``drop_prob`` during training.

    Args:
        drop_prob: float | None, probability of dropping a sample's branch, default: None (never drop).
    """

    def __init__(self, drop_prob: float | None = None) -> None:
        super(DropPath, self).__init__()
        self.drop_prob = drop_prob

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return drop_path(x, self.drop_prob, self.training)
