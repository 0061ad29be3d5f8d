"""Label-smoothing cross entropy: the notebook's loss (section 2.3.1), and its form for mixed (soft) targets.

``LabelSmoothingCrossEntropy`` is the notebook's class, computing what it computed. Under Mixup/CutMix a
batch's targets are a mix of two labels (``mixing.MixedTargets.soft``, rows summing to 1);
``SoftTargetCrossEntropy`` is the same formula with the one-hot target replaced by that mix, so with one-hot
targets it is the notebook's loss, and with ``lam * onehot(y_a) + (1 - lam) * onehot(y_b)`` it is
``lam * L(y_a) + (1 - lam) * L(y_b)`` of the notebook's loss ``L`` (timm's ``mixup_target`` smoothing).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["LabelSmoothingCrossEntropy", "SoftTargetCrossEntropy"]


class LabelSmoothingCrossEntropy(nn.Layer):
    """Cross entropy against a target smoothed uniformly over all classes, averaged over the batch.

    ``loss = (1 - smoothing) * nll(target) + smoothing * mean_c(-log p_c)``, the notebook's formula.

    Args:
        smoothing: float, weight of the uniform part of the target, default: 0.1.
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, pred: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        """pred: [batch, classes] logits; target: the classes' weights, see ``_nll``. Returns a 0-d mean loss."""
        confidence = 1. - self.smoothing
        log_probs = F.log_softmax(pred, axis=-1)  # [batch, classes]
        nll_loss = self._nll(log_probs, target)  # [batch]
        smooth_loss = paddle.mean(-log_probs, axis=-1)  # [batch]
        loss = confidence * nll_loss + self.smoothing * smooth_loss

        return loss.mean()

    def _nll(self, log_probs: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        """-log p of each row's class; target: [batch] or [batch, 1] class ids, int32 or int64. -> [batch]"""
        # The notebook stacks target with an int64 arange, so it only took int64 [N] labels.
        target = target.reshape([-1]).astype("int64")
        idx = paddle.stack([paddle.arange(log_probs.shape[0]), target], axis=1)  # [batch, 2]
        return paddle.gather_nd(-log_probs, index=idx)


class SoftTargetCrossEntropy(LabelSmoothingCrossEntropy):
    """The notebook's label-smoothing loss against soft targets (Mixup/CutMix), averaged over the batch.

    ``loss = (1 - smoothing) * sum_c(-t_c log p_c) + smoothing * mean_c(-log p_c)`` for a target row ``t``
    that sums to 1; a one-hot ``t`` gives ``LabelSmoothingCrossEntropy``'s value.

    Args:
        smoothing: float, weight of the uniform part of the target, default: 0.1 (the notebook's).
    """

    def _nll(self, log_probs: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        """Cross entropy of each row against target: [batch, classes] float, rows summing to 1. -> [batch]"""
        return paddle.sum(-log_probs * target.astype(log_probs.dtype), axis=-1)
