"""LabelSmoothingCrossEntropy and DropPath against the notebook's definitions."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import uninext_paddle as up


def test_label_smoothing_equals_the_notebooks_formula(nb):
    logits = paddle.randn([6, 10]) * 3
    target = paddle.to_tensor([0, 9, 3, 3, 7, 1], dtype="int64")
    expected = float(nb.LabelSmoothingCrossEntropy(0.1)(logits, target))
    assert float(up.LabelSmoothingCrossEntropy(0.1)(logits, target)) == pytest.approx(expected, rel=1e-6)
    # By hand: 0.9 * nll + 0.1 * mean over classes of -log p.
    logp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    by_hand = (0.9 * -logp[np.arange(6), target.numpy()] + 0.1 * -logp.mean(1)).mean()
    assert expected == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("dtype,shape", [("int32", [6]), ("int64", [6, 1]), ("int32", [6, 1])])
def test_label_smoothing_accepts_int32_and_column_labels(dtype, shape):
    logits = paddle.randn([6, 10])
    labels = [2, 4, 6, 8, 0, 1]
    reference = float(up.LabelSmoothingCrossEntropy()(logits, paddle.to_tensor(labels, dtype="int64")))
    got = float(up.LabelSmoothingCrossEntropy()(logits, paddle.to_tensor(labels, dtype=dtype).reshape(shape)))
    assert got == pytest.approx(reference, rel=1e-7)


def test_droppath_is_identity_at_p0_and_in_eval_and_drops_whole_samples_in_training(nb):
    x = paddle.randn([64, 5, 3])
    np.testing.assert_array_equal(up.DropPath(0.0)(x).numpy(), x.numpy())
    layer = up.DropPath(0.5)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    layer.train()
    paddle.seed(4)
    out = layer(x).numpy()
    paddle.seed(4)
    np.testing.assert_array_equal(out, nb.DropPath(0.5)(x).numpy())
    kept = np.abs(out).reshape(64, -1).sum(1) > 0
    assert 10 < kept.sum() < 54  # about half of the samples, each kept or dropped whole
    np.testing.assert_allclose(out[kept], x.numpy()[kept] * 2, rtol=1e-6)
