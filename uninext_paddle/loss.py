"""Label-smoothing cross entropy, the notebook's loss (section 2.3.1)."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["LabelSmoothingCrossEntropy"]


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
        """pred: [batch, classes] logits; target: [batch] or [batch, 1] class ids, int32 or int64."""
        # The notebook stacks target with an int64 arange, so it only took int64 [N] labels.
        target = target.reshape([-1]).astype("int64")
        confidence = 1. - self.smoothing
        log_probs = F.log_softmax(pred, axis=-1)
        idx = paddle.stack([paddle.arange(log_probs.shape[0]), target], axis=1)
        nll_loss = paddle.gather_nd(-log_probs, index=idx)
        smooth_loss = paddle.mean(-log_probs, axis=-1)
        loss = confidence * nll_loss + self.smoothing * smooth_loss

        return loss.mean()
