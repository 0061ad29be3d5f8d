"""uninext_paddle.explain: the scikit-learn 0.24 Ridge(normalize=True) shim and interpretdl's LIME on UniNeXt."""
from __future__ import annotations

import warnings

import numpy as np
import paddle
import pytest
from sklearn.linear_model import Ridge
from tqdm import tqdm

import uninext_paddle as up
from tests.conftest import TINY
from uninext_paddle.data import IMAGENET_MEAN, IMAGENET_STD
from uninext_paddle.explain import LegacyRidge, explain_image, legacy_ridge, plot_explanation
from interpretdl.interpreter import _lime_base


def regression_data(n: int = 60, features: int = 5, seed: int = 0):
    """LIME-like data: binary features, a noisy linear target, positive sample weights."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, features)).astype(np.float64)
    X[:, 0] *= 3.0  # columns of different scales, so normalising changes a penalised fit
    y = X @ rng.normal(size=features) + 0.5 + rng.normal(0, 0.1, n)
    return X, y, rng.uniform(0.1, 1.0, n)


def normalized_ridge_reference(X, y, w, alpha):
    """scikit-learn 0.24's Ridge(alpha, normalize=True).fit(X, y, w), written out: centre on the weighted means,
    divide the columns by their L2 norm, solve the weighted normal equations, undo the scaling."""
    x_mean, y_mean = np.average(X, axis=0, weights=w), np.average(y, weights=w)
    centered = X - x_mean
    scale = np.linalg.norm(centered, axis=0)
    Xs = centered / scale
    coef = np.linalg.solve(Xs.T @ (w[:, None] * Xs) + alpha * np.eye(X.shape[1]),
                           Xs.T @ (w * (y - y_mean))) / scale
    return coef, y_mean - x_mean @ coef


def test_unpenalised_fit_is_weighted_least_squares():
    X, y, w = regression_data()
    model = LegacyRidge(alpha=0, fit_intercept=True, normalize=True).fit(X, y, sample_weight=w)
    design = np.c_[np.ones(len(X)), X] * np.sqrt(w)[:, None]
    solution = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0]
    np.testing.assert_allclose(model.coef_, solution[1:], rtol=1e-9, atol=1e-10)
    assert model.intercept_ == pytest.approx(solution[0], abs=1e-10)


def test_penalised_fit_reproduces_old_normalize_true():
    X, y, w = regression_data()
    coef, intercept = normalized_ridge_reference(X, y, w, alpha=2.0)
    model = LegacyRidge(alpha=2.0, normalize=True).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-9)
    assert model.intercept_ == pytest.approx(intercept, rel=1e-9)
    # the scaling matters here: today's Ridge (no normalize) finds another solution
    assert not np.allclose(Ridge(alpha=2.0).fit(X, y, sample_weight=w).coef_, coef, rtol=1e-3)
    # and without normalize the shim is today's Ridge
    np.testing.assert_allclose(LegacyRidge(alpha=2.0).fit(X, y, sample_weight=w).coef_,
                               Ridge(alpha=2.0).fit(X, y, sample_weight=w).coef_)


def test_constant_column_is_left_unscaled():
    X, y, w = regression_data()
    X[:, 2] = 1.0  # its weighted mean is 1 only up to rounding; the column must still count as constant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn notes the singular system before its lstsq fallback
        model = LegacyRidge(alpha=0, normalize=True).fit(X, y, sample_weight=w)
    assert model.coef_[2] == pytest.approx(0, abs=1e-12)
    reference = LegacyRidge(alpha=0, normalize=True).fit(np.delete(X, 2, axis=1), y, sample_weight=w)
    np.testing.assert_allclose(np.delete(model.coef_, 2), reference.coef_, rtol=1e-8)


def test_interpretdl_needs_the_shim_and_gets_it_only_inside_the_block():
    X, y, w = regression_data()
    labels = np.c_[y, -y]
    base = _lime_base.LimeBase(random_state=0)
    with pytest.raises(TypeError, match="normalize"):  # interpretdl 0.8.0 against scikit-learn >= 1.2
        base._fitting_data(X, labels, np.linspace(0, 1, len(X)), 0)
    with legacy_ridge():
        assert _lime_base.Ridge is LegacyRidge
        intercept, weights, score, _ = base._fitting_data(X, labels, np.linspace(0, 1, len(X)), 0)
    assert _lime_base.Ridge is Ridge
    assert len(weights) == X.shape[1] and 0 < score <= 1


def test_lime_explains_a_uninext_image(capsys):
    paddle.seed(0)
    model = up.UniNeXt(num_classes=10, **TINY)
    # four flat quadrants: quickshift finds several superpixels, unlike on noise
    pixels = np.zeros((32, 32, 3), np.float32)
    pixels[:16, :16], pixels[:16, 16:], pixels[16:, :16], pixels[16:, 16:] = (.9, .1, .1), (.1, .8, .2), \
        (.2, .2, .9), (.9, .9, .1)
    image = ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)
    result = explain_image(model, image, label=3, num_samples=30, batch_size=10, seed=0)
    assert capsys.readouterr().err == ""  # interpretdl's bar over the samples only when asked for

    superpixels = np.unique(result.segments)
    assert len(superpixels) >= 4 and sorted(sp for sp, _ in result.weights) == superpixels.tolist()
    magnitudes = [abs(w) for _, w in result.weights]
    assert magnitudes == sorted(magnitudes, reverse=True)  # interpretdl's order: most important first
    assert np.abs(result.image.astype(np.float32) / 255 - pixels).max() <= 1 / 255
    # interpretdl classifies the image it restored to uint8, so the probability is that image's
    restored = ((result.image / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    probability = paddle.nn.functional.softmax(model(paddle.to_tensor(restored)))[0, 3]
    assert result.probability == pytest.approx(float(probability), rel=1e-5)
    assert result.overlay.shape == (32, 32, 3) and result.overlay.dtype == np.uint8
    fig = plot_explanation(result, image, prediction=1)
    assert [ax.get_title() for ax in fig.axes] == ["pt: automobile\ngt: cat",
                                                   f"LIME for 'cat' (p = {float(probability):.3f})"]
    # your own classes; an image file without a known class (its predicted class explained): no "gt"
    names = [f"kind {i}" for i in range(10)]
    fig = plot_explanation(result, image, prediction=3, names=names, labelled=False)
    assert [ax.get_title() for ax in fig.axes] == ["pt: kind 3", f"LIME for 'kind 3' (p = {float(probability):.3f})"]


def test_lime_draws_its_progress_bar_when_asked(capsys):
    paddle.seed(0)
    model = up.UniNeXt(num_classes=10, **TINY)
    image = np.zeros((3, 32, 32), np.float32)
    explain_image(model, image, label=0, num_samples=4, batch_size=2, seed=0, progress=True)
    assert "4/4" in capsys.readouterr().err
    assert _lime_base.tqdm is tqdm  # interpretdl's own bar is back after the call
