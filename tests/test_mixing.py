"""Mixup/CutMix (uninext_paddle.mixing) and the soft-target loss they train with (uninext_paddle.loss)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from uninext_paddle.errors import ConfigError
from uninext_paddle.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from uninext_paddle.mixing import MixupCutmix, check_mixing


def constant_images(batch: int = 6, size: int = 16) -> paddle.Tensor:
    """[batch, 3, size, size], image i filled with i + 1: every pixel says which image it came from."""
    return paddle.to_tensor(np.broadcast_to(np.arange(1, batch + 1, dtype="float32")[:, None, None, None],
                                            (batch, 3, size, size)).copy())


def one_hot(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype="float32")[labels]


def mixed_batches(mixer: MixupCutmix, batches: int = 30, size: int = 16):
    """(x, y, mixed x, targets) of several calls on constant images with labels 0..5."""
    y = paddle.to_tensor([0, 1, 2, 3, 4, 5], dtype="int64")
    for _ in range(batches):
        x = constant_images(size=size)
        yield x, y, *mixer(x, y)


def test_mixup_blends_each_image_with_its_mirror_and_the_targets_carry_the_same_lambda():
    mixer = MixupCutmix(mixup_alpha=0.8, seed=1)
    x, y = paddle.randn([6, 3, 8, 8]), paddle.to_tensor([3, 1, 4, 1, 5, 9], dtype="int64")
    mixed, t = mixer(x, y)
    assert 0 < t.lam < 1
    np.testing.assert_allclose(mixed.numpy(), t.lam * x.numpy() + (1 - t.lam) * x.numpy()[::-1], rtol=1e-5, atol=1e-6)
    expected = t.lam * one_hot(y.numpy()) + (1 - t.lam) * one_hot(y.numpy()[::-1])
    np.testing.assert_allclose(t.soft.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(t.soft.numpy().sum(1), 1., rtol=1e-6)
    assert t.soft.shape == [6, 10] and t.soft.dtype == paddle.float32


def test_cutmix_lambda_is_the_share_of_each_image_left_unpasted_with_boxes_clipped_at_the_borders():
    mixer = MixupCutmix(cutmix_alpha=1.0, seed=0)
    touched_border = 0
    for x, _, mixed, t in mixed_batches(mixer, size=16):
        own = mixed.numpy() == x.numpy()  # [6, 3, 16, 16]
        from_partner = mixed.numpy() == x.numpy()[::-1]
        assert np.all(own | from_partner)  # CutMix never blends pixels
        box = from_partner[0, 0]  # [16, 16]: where image 0 shows image 5
        rows, cols = box.any(1), box.any(0)
        np.testing.assert_array_equal(box, rows[:, None] & cols[None, :])  # one rectangle
        np.testing.assert_array_equal(from_partner[:3], np.broadcast_to(box, from_partner[:3].shape))  # same box
        assert t.lam == pytest.approx(1 - box.mean(), abs=1e-12)
        np.testing.assert_allclose(t.soft.numpy().sum(1), 1., rtol=1e-6)
        np.testing.assert_allclose(t.soft.numpy()[0, [0, 5]], [t.lam, 1 - t.lam], rtol=1e-6)
        touched_border += bool(box.any() and (rows[0] or rows[-1] or cols[0] or cols[-1]))
    assert touched_border > 0  # some boxes were clipped at a border in these draws


def test_prob_zero_or_no_alpha_returns_the_very_batch_with_one_hot_targets():
    x, y = paddle.randn([4, 3, 8, 8]), paddle.to_tensor([[7], [0], [7], [2]], dtype="int32")
    before = x.numpy().copy()
    for mixer in (MixupCutmix(mixup_alpha=1., cutmix_alpha=1., prob=0., seed=0), MixupCutmix(seed=0)):
        assert not mixer.enabled
        for _ in range(5):
            mixed, t = mixer(x, y)
            assert mixed is x
            np.testing.assert_array_equal(mixed.numpy(), before)
            assert t.lam == 1.0
            np.testing.assert_array_equal(t.soft.numpy(), one_hot(np.array([7, 0, 7, 2])))
            np.testing.assert_array_equal(t.dominant.numpy(), [7, 0, 7, 2])


def test_the_dominant_label_is_the_own_label_from_lambda_one_half_up_else_the_partners():
    mixer = MixupCutmix(mixup_alpha=1.0, cutmix_alpha=1.0, seed=3)
    seen = set()
    for _, y, _, t in mixed_batches(mixer):
        own = t.lam >= 0.5
        seen.add(own)
        np.testing.assert_array_equal(t.dominant.numpy(), y.numpy() if own else y.numpy()[::-1])
        np.testing.assert_array_equal(t.dominant.numpy(), t.soft.numpy().argmax(1))  # lam is never exactly 0.5 here
        assert t.dominant.dtype == paddle.int64
    assert seen == {True, False}


def test_switch_prob_picks_cutmix_or_mixup_and_prob_mixes_that_share_of_batches():
    def kinds(**kwargs):
        out = []
        for x, _, mixed, t in mixed_batches(MixupCutmix(seed=5, **kwargs), batches=60):
            blended = not np.all((mixed.numpy() == x.numpy()) | (mixed.numpy() == x.numpy()[::-1]))
            out.append("none" if t.lam == 1.0 else "mixup" if blended else "cutmix")
        return out

    assert set(kinds(mixup_alpha=1., cutmix_alpha=1., switch_prob=1.)) <= {"cutmix", "none"}
    assert set(kinds(mixup_alpha=1., cutmix_alpha=1., switch_prob=0.)) == {"mixup"}
    both = kinds(mixup_alpha=1., cutmix_alpha=1.)
    assert both.count("mixup") > 10 and both.count("cutmix") > 10
    assert 10 < kinds(mixup_alpha=1., prob=0.5).count("none") < 50


def test_generator_state_round_trips_through_paddle_save_so_a_resumed_run_mixes_the_same(tmp_path):
    mixer = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=1.0, seed=42)
    list(mixed_batches(mixer, batches=3))
    paddle.save({"mix": mixer.get_state()}, str(tmp_path / "state.pdckpt"))
    expected = [(t.lam, m.numpy()) for _, _, m, t in mixed_batches(mixer, batches=8)]
    resumed = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=1.0, seed=0)
    resumed.set_state(paddle.load(str(tmp_path / "state.pdckpt"))["mix"])
    got = [(t.lam, m.numpy()) for _, _, m, t in mixed_batches(resumed, batches=8)]
    assert [lam for lam, _ in got] == [lam for lam, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args", [(-0.1, 0., 1., .5), (0., -1., 1., .5), (1., 0., 1.5, .5), (1., 1., 1., -0.1),
                                  (float("nan"), 0., 1., .5)])
def test_out_of_range_settings_are_config_errors(args):
    with pytest.raises(ConfigError):
        check_mixing(*args)
    with pytest.raises(ConfigError):
        MixupCutmix(*args)


def test_soft_target_loss_on_one_hot_targets_is_the_notebooks_loss(nb):
    logits, y = paddle.randn([6, 10]) * 3, paddle.to_tensor([0, 9, 3, 3, 7, 1], dtype="int64")
    notebook = float(nb.LabelSmoothingCrossEntropy(0.1)(logits, y))
    _, t = MixupCutmix(seed=0)(paddle.zeros([6, 3, 4, 4]), y)  # mixing off: lambda 1
    assert float(SoftTargetCrossEntropy(0.1)(logits, t.soft)) == pytest.approx(notebook, rel=1e-6)
    assert float(LabelSmoothingCrossEntropy(0.1)(logits, y)) == notebook


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_soft_target_loss_on_mixed_targets_is_the_lambda_weighted_notebook_loss(nb, smoothing):
    logits = paddle.randn([6, 10]) * 3
    notebook = nb.LabelSmoothingCrossEntropy(smoothing)
    for _, y, _, t in mixed_batches(MixupCutmix(mixup_alpha=1., cutmix_alpha=1., seed=2), batches=4):
        expected = t.lam * float(notebook(logits, y)) + (1 - t.lam) * float(notebook(logits, y.flip([0])))
        assert float(SoftTargetCrossEntropy(smoothing)(logits, t.soft)) == pytest.approx(expected, rel=1e-5)
