"""An exponential moving average (EMA) of a model's weights, kept as a second model on the same device.

After every optimizer step, ``ema.update(model)`` sets each floating-point weight ``e = d * e + (1 - d) * w``
(timm's ``ModelEmaV2``/``V3``; integer buffers are copied). With warmup, the decay of update ``n`` (counted
from 0) is ``min(decay, (1 + n) / (10 + n))``, so the early average forgets the random initial weights quickly.
``ema.module`` is an ordinary model in eval mode: evaluate it like the model, and save
``ema.module.state_dict()`` as a plain state_dict in the notebook's format (``best_model_ema.pdparams``).
``state_dict()``/``set_state_dict()`` carry everything a resumed run needs to continue the same average.
"""
from __future__ import annotations

import copy
from typing import Any

import paddle

from .errors import CheckpointError, ConfigError

__all__ = ["ModelEma", "check_ema"]


def check_ema(decay: float) -> None:
    """``ConfigError`` unless ``decay`` is in (0, 1)."""
    if not 0 < decay < 1:
        raise ConfigError(f"the EMA decay must be in (0, 1), e.g. 0.9998; got {decay}")


class ModelEma:
    """EMA of ``model``'s weights in a copy of ``model`` (``self.module``, eval mode, no gradients).

    Args:
        model: the bare model being trained (not a ``paddle.DataParallel`` wrapper: its state_dict keys would
            carry a prefix); copied as the average's starting point.
        decay: weight of the old average at each update, in (0, 1), e.g. 0.9998.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` for update ``n`` instead of ``decay``.
    """

    def __init__(self, model: paddle.nn.Layer, decay: float, warmup: bool = False) -> None:
        check_ema(decay)
        self.decay, self.warmup = float(decay), bool(warmup)
        self.updates = 0  # optimizer steps averaged so far
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.stop_gradient = True

    def decay_at(self, n: int) -> float:
        """The decay used by update ``n`` (0 for the first)."""
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        """Fold ``model``'s current weights into the average; call once after every optimizer step."""
        d = self.decay_at(self.updates)
        weights = model.state_dict()
        for name, average in self.module.state_dict().items():
            w = weights[name]
            if average.is_floating_point():
                paddle.assign(average * d + w * (1. - d), output=average)
            else:
                paddle.assign(w, output=average)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """{"decay", "warmup", "updates", "module": the averaged weights}, for the resumable checkpoint."""
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "module": self.module.state_dict()}

    def set_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the average saved by ``state_dict()`` (decay and warmup stay this object's own)."""
        ours = self.module.state_dict()
        theirs = state.get("module", {}) if isinstance(state, dict) else {}
        if set(theirs) != set(ours) or any(list(theirs[k].shape) != list(v.shape) for k, v in ours.items()):
            raise CheckpointError("the saved EMA weights do not fit the model (other keys or shapes)")
        self.module.set_state_dict(theirs)
        self.updates = int(state["updates"])
