"""build_scheduler and build_optimizer (uninext_paddle.optim): the notebook's by default, the recipe on request."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from uninext_paddle import LabelSmoothingCrossEntropy, UniNeXt
from uninext_paddle.errors import ConfigError
from uninext_paddle.optim import build_optimizer, build_scheduler, check_optimizer, check_schedule

LR, STEPS, EPOCHS = 1e-3, 7, 5  # 35 scheduler steps


def lrs(scheduler: paddle.optimizer.lr.LRScheduler, steps: int) -> list[float]:
    """The lr of each of ``steps`` batches, stepping after each as the training loop does."""
    out = []
    for _ in range(steps):
        out.append(scheduler())
        scheduler.step()
    return out


def tiny(seed: int = 0) -> UniNeXt:
    paddle.seed(seed)
    return UniNeXt(num_classes=10, **TINY)


def test_defaults_are_the_notebooks_cosine_object_with_the_same_lr_every_step():
    scheduler = build_scheduler(LR, STEPS, EPOCHS)
    assert type(scheduler) is paddle.optimizer.lr.CosineAnnealingDecay
    assert (scheduler.T_max, scheduler.eta_min, scheduler.base_lr) == (STEPS * EPOCHS, 0.0, LR)
    notebook = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=LR, T_max=STEPS * EPOCHS, verbose=False)
    assert lrs(scheduler, STEPS * EPOCHS + 3) == lrs(notebook, STEPS * EPOCHS + 3)


def test_min_lr_is_the_floor_of_the_cosine():
    got = lrs(build_scheduler(LR, STEPS, EPOCHS, min_lr=1e-5), STEPS * EPOCHS + 1)
    reference = lrs(paddle.optimizer.lr.CosineAnnealingDecay(LR, T_max=STEPS * EPOCHS, eta_min=1e-5), len(got))
    assert got == reference and got[0] == LR and got[-1] == pytest.approx(1e-5, rel=1e-9)


def test_warmup_rises_linearly_from_0_then_follows_paddles_cosine_over_the_remaining_steps():
    warmup_steps, min_lr = 2 * STEPS, 1e-5
    got = lrs(build_scheduler(LR, STEPS, EPOCHS, warmup_epochs=2, min_lr=min_lr), STEPS * EPOCHS + 1)
    assert got[:warmup_steps] == pytest.approx([LR * t / warmup_steps for t in range(warmup_steps)], rel=1e-12)
    cosine_steps = STEPS * EPOCHS - warmup_steps
    cosine = lrs(paddle.optimizer.lr.CosineAnnealingDecay(LR, T_max=cosine_steps, eta_min=min_lr), cosine_steps + 1)
    assert got[warmup_steps:] == pytest.approx(cosine, rel=1e-9)  # Paddle's own cosine, stepped on its own
    closed_form = [min_lr + (LR - min_lr) * (1 + math.cos(math.pi * t / cosine_steps)) / 2
                   for t in range(cosine_steps + 1)]
    assert got[warmup_steps:] == pytest.approx(closed_form, rel=1e-9)
    assert max(got) == LR and got[-1] == pytest.approx(min_lr)


@pytest.mark.parametrize("warmup_epochs,stop_at", [(0, 9), (2, 5), (2, 20)])
def test_a_schedule_restored_from_the_optimizers_state_continues_with_the_same_lrs_without_warnings(warmup_epochs,
                                                                                                   stop_at):
    full = lrs(build_scheduler(LR, STEPS, EPOCHS, warmup_epochs, 1e-5), STEPS * EPOCHS)
    first = build_scheduler(LR, STEPS, EPOCHS, warmup_epochs, 1e-5)
    lrs(first, stop_at)
    state = copy.deepcopy(build_optimizer("adamw", tiny(), first, 0.05).state_dict())  # holds "LR_Scheduler"
    resumed = build_scheduler(LR, STEPS, EPOCHS, warmup_epochs, 1e-5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_optimizer("adamw", tiny(), resumed, 0.05).set_state_dict(state)
    assert not caught  # Paddle's own LinearWarmup warns here about its nested state on every resume
    assert lrs(resumed, STEPS * EPOCHS - stop_at) == full[stop_at:]


def one_step(optimizer_of, x: paddle.Tensor, y: paddle.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of a tiny UniNeXt after one training step with the optimizer ``optimizer_of(model)``."""
    model = tiny(seed)
    optimizer = optimizer_of(model)
    LabelSmoothingCrossEntropy()(model(x), y).backward()
    optimizer.step()
    return {name: value.numpy() for name, value in model.state_dict().items()}


def test_adam_is_the_notebooks_adam_step_for_step():
    x, y = paddle.randn([2, 3, 32, 32]), paddle.to_tensor([1, 7], dtype="int64")
    ours = one_step(lambda m: build_optimizer("adam", m, build_scheduler(LR, STEPS, EPOCHS), 1e-5), x, y)
    notebook = one_step(lambda m: paddle.optimizer.Adam(
        parameters=m.parameters(), learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(
            learning_rate=LR, T_max=STEPS * EPOCHS, verbose=False), weight_decay=1e-5), x, y)
    start = {name: value.numpy() for name, value in tiny().state_dict().items()}
    for name, value in notebook.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    assert not np.array_equal(ours["head.weight"], start["head.weight"])


def test_adamw_decays_matrices_by_lr_times_wd_and_leaves_1d_params_alone():
    wd = 0.05
    model = tiny()
    start = {name: value.numpy().copy() for name, value in model.state_dict().items()}
    optimizer = build_optimizer("adamw", model, build_scheduler(LR, STEPS, EPOCHS), wd)
    (model(paddle.randn([2, 3, 32, 32])) * 0).sum().backward()  # zero gradients: only the decay moves weights
    optimizer.step()
    decayed = undecayed = 0
    for name, value in model.state_dict().items():
        if value.ndim == 1:
            np.testing.assert_array_equal(value.numpy(), start[name], err_msg=name)
            undecayed += 1
        else:
            np.testing.assert_allclose(value.numpy(), start[name] * (1 - LR * wd), rtol=1e-6, err_msg=name)
            decayed += 1
    assert decayed > 10 and undecayed > 10  # kernels and linear weights; biases, norms, layer scales


def test_clip_grad_clips_the_global_gradient_norm():
    x, y = paddle.randn([2, 3, 32, 32]), paddle.to_tensor([1, 7], dtype="int64")
    start = {name: value.numpy() for name, value in tiny().state_dict().items()}
    for name in ("adam", "adamw"):
        moved = {}
        for clip in (None, 1e-12):  # clipped to almost nothing, Adam's step is far below the lr
            after = one_step(lambda m, name=name, clip=clip: build_optimizer(
                name, m, build_scheduler(LR, STEPS, EPOCHS), 0., clip), x, y)
            moved[clip] = np.abs(after["head.weight"] - start["head.weight"]).max()
        assert moved[None] == pytest.approx(LR, rel=1e-2) and moved[1e-12] < LR / 100


@pytest.mark.parametrize("call", [
    lambda: check_schedule(LR, 5, warmup_epochs=5), lambda: check_schedule(LR, 5, warmup_epochs=-1),
    lambda: check_schedule(LR, 5, min_lr=LR), lambda: check_schedule(LR, 5, min_lr=-1e-6),
    lambda: check_optimizer("sgd", 1e-5), lambda: check_optimizer("adam", -1e-5),
    lambda: check_optimizer("adamw", 0.05, clip_grad=0.), lambda: build_scheduler(LR, STEPS, 2, warmup_epochs=3),
    lambda: build_optimizer("lamb", tiny(), LR, 0.)])
def test_out_of_range_settings_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()
