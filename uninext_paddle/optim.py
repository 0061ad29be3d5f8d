"""The learning-rate schedule and the optimizer: the notebook's by default, a PaddleClas-style recipe on request.

By default ``build_scheduler`` returns the notebook's ``CosineAnnealingDecay(learning_rate=lr,
T_max=steps_per_epoch * epochs)`` and ``build_optimizer`` its ``Adam(weight_decay=wd)`` (L2 decay on every
weight), without gradient clipping; for a model on the CPU with the C++ kernels (``kernels.py``), the L2 decay of
all gradients is one call (``Adam``), bit for bit Paddle's. Options: a linear warmup from 0 over the first epochs
into the cosine (Paddle's ``LinearWarmup`` around a ``CosineAnnealingDecay`` over the remaining steps, as
PaddleClas), a floor ``min_lr`` for the cosine, AdamW (decoupled weight decay, none on norms and biases:
PaddleClas's ``one_dim_param_no_weight_decay``), and clipping by the global gradient norm. All schedules step per
batch.
"""
from __future__ import annotations

from typing import Any

import paddle

from . import kernels
from .errors import ConfigError

__all__ = ["OPTIMIZERS", "LinearWarmup", "Adam", "build_scheduler", "build_optimizer", "check_schedule",
           "check_optimizer"]

OPTIMIZERS = ("adam", "adamw")


class LinearWarmup(paddle.optimizer.lr.LinearWarmup):
    """Paddle's ``LinearWarmup``, whose ``set_state_dict`` does not warn about its own nested schedule.

    Paddle 3.3.1's version restores the nested state but also counts it as an unused value and warns ("There
    are some unused values in state_dict") on every resume, from ``optimizer.set_state_dict`` too.
    """

    def set_state_dict(self, state_dict: dict) -> None:
        """Restore the warmup's own step and lr, then the nested schedule's."""
        own = {key: value for key, value in state_dict.items() if key != "LinearWarmup_LR"}
        paddle.optimizer.lr.LRScheduler.set_state_dict(self, own)
        self.learning_rate.set_state_dict(state_dict["LinearWarmup_LR"])


class Adam(paddle.optimizer.Adam):
    """Paddle's ``Adam`` whose L2 weight decay (a float ``weight_decay``: ``L2Decay``) is applied to every float32
    CPU gradient in one call of the C++ kernel ``kernels.l2_decay``, where Paddle makes two operators per
    parameter (a scale, an add_n): the same gradients, bit for bit, and the same optimizer state. Use it where
    ``kernels.available()``."""

    def append_regularization_ops(self, parameters_and_grads: list[tuple[Any, Any]],
                                  regularization: Any = None) -> list[tuple[Any, Any]]:
        fused = [i for i, (param, grad) in enumerate(parameters_and_grads)
                 if grad is not None and getattr(param, "regularizer", None) is None and param.dtype == grad.dtype
                 == paddle.float32 and grad.place.is_cpu_place() and grad.is_dense()]
        if not (paddle.in_dynamic_mode() and isinstance(regularization, paddle.regularizer.L2Decay) and fused):
            return super().append_regularization_ops(parameters_and_grads, regularization)
        decayed = kernels.l2_decay([parameters_and_grads[i][1] for i in fused],
                                   [parameters_and_grads[i][0] for i in fused], float(regularization._coeff))
        result = super().append_regularization_ops(
            [pair for i, pair in enumerate(parameters_and_grads) if i not in set(fused)], regularization)
        result += [(parameters_and_grads[i][0], grad) for i, grad in zip(fused, decayed)]
        order = {id(param): n for n, (param, _) in enumerate(parameters_and_grads)}
        return sorted(result, key=lambda pair: order[id(pair[0])])


def check_schedule(lr: float, epochs: int, warmup_epochs: int = 0, min_lr: float = 0.) -> None:
    """``ConfigError`` unless 0 <= warmup_epochs < epochs and 0 <= min_lr < lr."""
    if not 0 <= warmup_epochs < epochs:
        raise ConfigError(f"the warmup must be 0 or more epochs and shorter than the run ({epochs} epochs), "
                          f"got {warmup_epochs}")
    if not 0 <= min_lr < lr:
        raise ConfigError(f"the cosine's minimum learning rate must be in [0, {lr}) (the peak), got {min_lr}")


def check_optimizer(name: str, weight_decay: float, clip_grad: float | None = None) -> None:
    """``ConfigError`` for an unknown optimizer, a negative weight decay or a clipping norm that is not > 0."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; one of {', '.join(OPTIMIZERS)}")
    if not weight_decay >= 0:
        raise ConfigError(f"the weight decay must not be negative, got {weight_decay}")
    if clip_grad is not None and not clip_grad > 0:
        raise ConfigError(f"the gradient clipping norm must be positive (or none), got {clip_grad}")


def build_scheduler(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: int = 0,
                    min_lr: float = 0.) -> paddle.optimizer.lr.LRScheduler:
    """The per-batch learning-rate schedule of a run of ``epochs`` x ``steps_per_epoch`` optimizer steps.

    Without warmup: ``CosineAnnealingDecay(lr, T_max=all steps, eta_min=min_lr)``, with the defaults exactly
    the notebook's object. With ``warmup_epochs``: the lr rises linearly from 0 to ``lr`` over their steps,
    then the cosine runs from ``lr`` to ``min_lr`` over the remaining steps.
    """
    check_schedule(lr, epochs, warmup_epochs, min_lr)
    warmup_steps = steps_per_epoch * warmup_epochs
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=lr, T_max=steps_per_epoch * epochs - warmup_steps,
                                                      eta_min=min_lr, verbose=False)
    if warmup_steps == 0:
        return cosine
    return LinearWarmup(learning_rate=cosine, warmup_steps=warmup_steps, start_lr=0., end_lr=lr, verbose=False)


def build_optimizer(name: str, model: paddle.nn.Layer, scheduler: paddle.optimizer.lr.LRScheduler,
                    weight_decay: float, clip_grad: float | None = None) -> paddle.optimizer.Optimizer:
    """The optimizer of ``model``'s parameters (pass the bare model, not a ``DataParallel`` wrapper).

    "adam": the notebook's ``Adam(weight_decay=weight_decay)``, an L2 penalty on every parameter (the decay in one
    C++ call when the model runs the C++ kernels: ``Adam``). "adamw":
    ``AdamW`` with decoupled decay ``weight_decay`` on the weight matrices and kernels only; 1-D parameters
    (norms' scales and shifts, biases, layer scales) are not decayed. ``clip_grad``: clip the gradients to this
    global L2 norm before each step; None (the notebook) does not clip.
    """
    check_optimizer(name, weight_decay, clip_grad)
    grad_clip = None if clip_grad is None else paddle.nn.ClipGradByGlobalNorm(clip_norm=clip_grad)
    if name == "adam":
        kind = Adam if "cpp_kernels" in getattr(model, "cpu_formulations", ()) else paddle.optimizer.Adam
        return kind(parameters=model.parameters(), learning_rate=scheduler, weight_decay=weight_decay,
                    grad_clip=grad_clip)
    no_decay = {p.name for p in model.parameters() if len(p.shape) == 1}  # AdamW asks by the unique p.name
    return paddle.optimizer.AdamW(parameters=model.parameters(), learning_rate=scheduler, weight_decay=weight_decay,
                                  apply_decay_param_fun=lambda param_name: param_name not in no_decay,
                                  grad_clip=grad_clip)
