"""Batch-level Mixup and CutMix on the device (timm's ``Mixup`` in "batch" mode, PaddleClas's BatchOperators).

One draw per batch: with probability ``prob`` the batch is mixed, by CutMix with probability ``switch_prob``
when both are enabled, else by Mixup; ``lam ~ Beta(alpha, alpha)``. Each image is mixed with the batch's
mirror image (``x.flip(0)``: image ``i`` with image ``B - 1 - i``), as timm does. Mixup blends the pixels,
``lam * x + (1 - lam) * x.flip(0)``; CutMix pastes a box of the partner image whose area is about ``1 - lam``,
clipped at the borders, and ``lam`` becomes the share of the image left unpasted (timm's ``correct_lam``).

The targets are a ``MixedTargets``: the soft target matrix for ``loss.SoftTargetCrossEntropy`` (which adds the
notebook's label smoothing) and the dominant label each image's train accuracy is counted against. The
randomness is the mixer's own numpy Generator, seeded by the caller and checkpointed with ``get_state``, so a
resumed run mixes exactly as the uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from .errors import ConfigError
from .loss import SoftTargetCrossEntropy

__all__ = ["MixedTargets", "MixupCutmix", "check_mixing", "cutmix_box"]


def check_mixing(mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float) -> None:
    """``ConfigError`` unless the alphas are >= 0 and the probabilities in [0, 1]."""
    for name, alpha in (("Mixup alpha", mixup_alpha), ("CutMix alpha", cutmix_alpha)):
        if not alpha >= 0:  # also catches NaN
            raise ConfigError(f"{name} must be 0 (off) or positive, got {alpha}")
    for name, p in (("mixing probability", prob), ("Mixup/CutMix switch probability", switch_prob)):
        if not 0 <= p <= 1:
            raise ConfigError(f"the {name} must be in [0, 1], got {p}")


def cutmix_box(rng: np.random.Generator, height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """timm's ``rand_bbox``: (top, bottom, left, right) of a box of about ``(1 - lam) * height * width``
    pixels, its centre uniform over the image, clipped at the borders (so it may be smaller)."""
    ratio = np.sqrt(1. - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


@dataclass(frozen=True)
class MixedTargets:
    """What a mixed batch is trained against.

    soft: [B, classes] float32, ``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))``; rows sum to 1.
    dominant: [B] int64, the label with the larger weight (``y`` when ``lam >= 0.5``, else ``y.flip(0)``),
        for the train accuracy.
    lam: the weight of each image's own label (CutMix: the share of its pixels left unpasted); 1.0 when the
        batch was not mixed.
    """

    soft: paddle.Tensor
    dominant: paddle.Tensor
    lam: float


class MixupCutmix:
    """Mixup and/or CutMix of whole device batches, timm's ``Mixup(mode="batch")`` semantics.

    ``mixer(x, y) -> (x_mixed, MixedTargets)``; an unmixed batch (probability ``1 - prob``, or both alphas 0)
    comes back as the very tensor ``x``. ``mixer.criterion`` is the loss mixed batches are trained with:
    ``SoftTargetCrossEntropy`` with the run's label ``smoothing``.

    Args:
        mixup_alpha: Beta(alpha, alpha) of Mixup's lambda; 0 disables Mixup.
        cutmix_alpha: Beta(alpha, alpha) of CutMix's lambda; 0 disables CutMix.
        prob: probability that a batch is mixed at all.
        switch_prob: probability of CutMix rather than Mixup when both are enabled.
        num_classes: width of the soft targets.
        seed: seeds the mixer's own numpy Generator (e.g. the run's seed plus the process rank).
        smoothing: the label smoothing of ``criterion`` (the notebook's 0.1).
    """

    def __init__(self, mixup_alpha: float = 0., cutmix_alpha: float = 0., prob: float = 1.0,
                 switch_prob: float = 0.5, num_classes: int = 10, seed: int = 0, smoothing: float = 0.1) -> None:
        check_mixing(mixup_alpha, cutmix_alpha, prob, switch_prob)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.criterion = SoftTargetCrossEntropy(smoothing)

    @property
    def enabled(self) -> bool:
        """Whether any batch can be mixed (an alpha above 0 and ``prob`` above 0)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def get_state(self) -> dict[str, Any]:
        """The Generator's state (plain Python values, for the resumable checkpoint)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a ``get_state()``: the next batches mix as they would have."""
        self.rng.bit_generator.state = state

    def _draw(self) -> tuple[float, bool]:
        """(lam, use_cutmix) for the next batch, timm's ``_params_per_batch``; lam 1.0: no mixing."""
        if not self.enabled or self.rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(self.rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: paddle.Tensor, y: paddle.Tensor) -> tuple[paddle.Tensor, MixedTargets]:
        """x: [B, 3, H, W] images, y: [B] or [B, 1] class ids -> (mixed x [B, 3, H, W], MixedTargets)."""
        y = y.reshape([-1]).astype("int64")  # [B]
        lam, use_cutmix = self._draw()
        if lam < 1.0:
            partner = x.flip([0])  # [B, 3, H, W]: image i is mixed with image B - 1 - i
            if use_cutmix:
                height, width = x.shape[-2:]
                top, bottom, left, right = cutmix_box(self.rng, height, width, lam)
                lam = 1. - (bottom - top) * (right - left) / (height * width)
                if lam < 1.0:
                    x = x.clone()
                    x[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
            else:
                x = x * lam + partner * (1. - lam)
        own = F.one_hot(y, self.num_classes)  # [B, classes] float32
        if lam == 1.0:
            return x, MixedTargets(soft=own, dominant=y, lam=1.0)
        y_b = y.flip([0])
        soft = own * lam + F.one_hot(y_b, self.num_classes) * (1. - lam)  # [B, classes]
        return x, MixedTargets(soft=soft, dominant=y if lam >= 0.5 else y_b, lam=lam)
