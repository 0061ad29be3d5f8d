"""ModelEma (uninext_paddle.ema): the average itself, its warmup, and its place in the resumable checkpoint."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from uninext_paddle import UniNeXt
from uninext_paddle.ema import ModelEma, check_ema
from uninext_paddle.errors import CheckpointError, ConfigError


def tiny(seed: int) -> UniNeXt:
    paddle.seed(seed)
    return UniNeXt(num_classes=10, **TINY)


def numpy_state(model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    return {name: value.numpy().copy() for name, value in model.state_dict().items()}


def perturb(model: paddle.nn.Layer, rng: np.random.Generator) -> None:
    """Stand-in for an optimizer step: move every weight by a random amount."""
    with paddle.no_grad():
        for p in model.parameters():
            p.set_value(p.numpy() + rng.normal(0, 0.1, p.shape).astype("float32"))


@pytest.mark.parametrize("warmup", [False, True])
def test_the_average_equals_one_computed_by_hand_after_a_few_steps(warmup):
    model, rng, decay = tiny(0), np.random.default_rng(0), 0.9
    ema = ModelEma(model, decay, warmup=warmup)
    expected = numpy_state(model)
    for n in range(4):
        perturb(model, rng)
        ema.update(model)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        expected = {k: (v * np.float32(d) + numpy_state(model)[k] * np.float32(1 - d)) for k, v in expected.items()}
    got = numpy_state(ema.module)
    assert ema.updates == 4 and got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # The average is not the model: it lags behind it.
    assert not np.allclose(got["head.weight"], model.head.weight.numpy())


def test_warmup_decay_is_min_of_decay_and_1_plus_n_over_10_plus_n():
    ema = ModelEma(tiny(0), 0.9998, warmup=True)
    assert ema.decay_at(0) == 1 / 10
    assert ema.decay_at(10) == 11 / 20
    assert ema.decay_at(44_980) == 44_981 / 44_990 < 0.9998  # (1 + n) / (10 + n) reaches 0.9998 at n = 44990
    assert ema.decay_at(45_000) == 0.9998 == ema.decay_at(10 ** 7)
    assert ModelEma(tiny(0), 0.9998).decay_at(0) == 0.9998  # no warmup


def test_the_ema_module_is_a_frozen_eval_copy_whose_state_dict_is_the_models_format():
    model = tiny(0)
    ema = ModelEma(model, 0.99)
    assert not ema.module.training and all(p.stop_gradient for p in ema.module.parameters())
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    assert {name: list(value.shape) for name, value in ema.module.state_dict().items()} == shapes  # model format
    before = numpy_state(ema.module)
    perturb(model, np.random.default_rng(1))  # training the model does not touch the copy until update()
    for name, value in numpy_state(ema.module).items():
        np.testing.assert_array_equal(value, before[name])
    x = paddle.randn([2, 3, 32, 32])
    reference = tiny(5)
    reference.set_state_dict(ema.module.state_dict())  # loads into a fresh model and predicts the same
    reference.eval()
    np.testing.assert_array_equal(reference(x).numpy(), ema.module(x).numpy())


def test_state_round_trips_through_paddle_save_exactly_and_the_resumed_average_continues_the_same(tmp_path):
    model, rng = tiny(0), np.random.default_rng(2)
    ema = ModelEma(model, 0.99, warmup=True)
    for _ in range(3):
        perturb(model, rng)
        ema.update(model)
    paddle.save({"ema": ema.state_dict()}, str(tmp_path / "last.pdckpt"))
    resumed = ModelEma(tiny(1), 0.99, warmup=True)  # other starting weights, all overwritten
    resumed.set_state_dict(paddle.load(str(tmp_path / "last.pdckpt"))["ema"])
    assert resumed.updates == 3
    for name, value in numpy_state(ema.module).items():
        np.testing.assert_array_equal(numpy_state(resumed.module)[name], value)
    perturb(model, rng)
    ema.update(model)
    resumed.update(model)
    for name, value in numpy_state(ema.module).items():
        np.testing.assert_array_equal(numpy_state(resumed.module)[name], value)


def test_saved_state_of_another_model_is_a_checkpoint_error():
    ema = ModelEma(tiny(0), 0.99)
    other = ModelEma(UniNeXt(num_classes=5, **TINY), 0.99)
    with pytest.raises(CheckpointError, match="EMA"):
        ema.set_state_dict(other.state_dict())


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_decay_outside_0_1_is_a_config_error(decay):
    with pytest.raises(ConfigError):
        check_ema(decay)
    with pytest.raises(ConfigError):
        ModelEma(tiny(0), decay)
