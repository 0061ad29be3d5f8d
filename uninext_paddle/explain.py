"""The notebook's LIME explanation (section 2.5) with interpretdl's ``LIMECVInterpreter``, headless.

interpretdl 0.8.0 fits LIME's local linear model with ``Ridge(alpha=0, fit_intercept=True, normalize=True)``.
scikit-learn removed ``normalize`` in 1.2, and interpretdl pins ``scikit-learn<=0.24``, which has no wheel for
Python 3.11. ``LegacyRidge`` is a ``Ridge`` that accepts ``normalize`` and reproduces scikit-learn 0.24's
``normalize=True`` preprocessing; ``legacy_ridge()`` puts it in place of ``Ridge`` inside interpretdl's
``_lime_base`` module for the duration of a ``with`` block. Nothing in site-packages is changed.

interpretdl also draws a progress bar over LIME's samples on every call; ``explain_image`` draws it only when asked.
"""
from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import paddle
from matplotlib.figure import Figure
from sklearn.linear_model import Ridge

with contextlib.redirect_stdout(io.StringIO()):
    # On Paddle 3 interpretdl's optional interpreters fail to import paddle.fluid and it prints "Paddle should be
    # installed ..." although Paddle is there; LIME does not need them.
    import interpretdl as it
    from interpretdl.data_processor.visualizer import overlay_threshold, sp_weights_to_image_explanation
    from interpretdl.interpreter import _lime_base

from .data import CIFAR10_CLASSES
from .plots import denormalize
from .runlog import console_stderr

__all__ = ["LegacyRidge", "legacy_ridge", "LimeExplanation", "explain_image", "plot_explanation"]


class LegacyRidge(Ridge):
    """``sklearn.linear_model.Ridge`` with scikit-learn 0.24's ``normalize`` argument.

    With ``normalize=True`` and ``fit_intercept=True``, ``fit`` centres X's columns on their sample-weighted mean,
    divides them by their L2 norm (constant columns are left at zero with scale 1), fits, then maps ``coef_`` back
    to X's scale and recomputes ``intercept_`` from the weighted means, as
    ``sklearn.linear_model._base._preprocess_data`` and ``_set_intercept`` did in 0.24. The scaling changes the
    solution whenever the penalty or the least-squares fallback of an under-determined fit is involved (LIME
    with fewer samples than superpixels).

    Args:
        alpha: float, L2 penalty, default: 1.0.
        normalize: bool, the 0.24 preprocessing above (ignored without an intercept, as in 0.24), default: False.
        fit_intercept, copy_X, max_iter, tol, solver, positive, random_state: as ``Ridge``.
    """

    def __init__(self, alpha: float = 1.0, *, normalize: bool = False, fit_intercept: bool = True,
                 copy_X: bool = True, max_iter: int | None = None, tol: float = 1e-4, solver: str = "auto",
                 positive: bool = False, random_state: Any = None) -> None:
        super().__init__(alpha=alpha, fit_intercept=fit_intercept, copy_X=copy_X, max_iter=max_iter, tol=tol,
                         solver=solver, positive=positive, random_state=random_state)
        self.normalize = normalize

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "LegacyRidge":
        if not (self.normalize and self.fit_intercept):
            return super().fit(X, y, sample_weight=sample_weight)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        X_offset = np.average(X, axis=0, weights=sample_weight)
        X_centered = X - X_offset
        # A constant column's weighted mean can miss its value by rounding; dividing that noise by its own
        # norm would blow it up to unit scale (scikit-learn 1.0 fixed the same in _is_constant_feature).
        X_centered[:, np.ptp(X, axis=0) == 0] = 0.0
        X_scale = np.linalg.norm(X_centered, axis=0)
        X_scale[X_scale == 0] = 1.0
        super().fit(X_centered / X_scale, y, sample_weight=sample_weight)
        self.coef_ = self.coef_ / X_scale
        self.intercept_ = np.average(y, axis=0, weights=sample_weight) - self.coef_ @ X_offset
        return self


@contextlib.contextmanager
def legacy_ridge() -> Iterator[None]:
    """Within the block, interpretdl's LIME fits with ``LegacyRidge`` (see module doc); restored afterwards."""
    original = _lime_base.Ridge
    _lime_base.Ridge = LegacyRidge
    try:
        yield
    finally:
        _lime_base.Ridge = original


@contextlib.contextmanager
def _sample_progress(enabled: bool) -> Iterator[None]:
    """Within the block, interpretdl's bar over LIME's samples is drawn only if ``enabled`` (on the console's
    stderr); restored afterwards."""
    original = _lime_base.tqdm
    _lime_base.tqdm = functools.partial(original, disable=not enabled, file=console_stderr())
    try:
        yield
    finally:
        _lime_base.tqdm = original


@dataclass
class LimeExplanation:
    """One image's LIME result.

    Args:
        label: int, the explained class.
        probability: float, the model's softmax probability of ``label``.
        weights: list[tuple[int, float]], (superpixel, weight) by decreasing |weight| (interpretdl's order).
        r2: float, weighted R^2 of the local linear model.
        image: np.ndarray, the input as uint8 [H, W, 3] RGB.
        segments: np.ndarray, the superpixel index of every pixel [H, W].
        overlay: np.ndarray, interpretdl's visualisation (positive top-20% superpixels in green) [H, W, 3].
    """
    label: int
    probability: float
    weights: list[tuple[int, float]]
    r2: float
    image: np.ndarray
    segments: np.ndarray
    overlay: np.ndarray


def explain_image(model: paddle.nn.Layer, image: np.ndarray, label: int, num_samples: int = 1000,
                  batch_size: int = 10, device: str = "cpu", seed: int | None = None,
                  progress: bool = False) -> LimeExplanation:
    """The notebook's ``LIMECVInterpreter(model).interpret(X[i], interpret_class=y[i], ...)`` on one normalised
    [3, H, W] image; ``progress``: draw interpretdl's bar over the samples. A fresh interpreter each call:
    interpretdl caches the segmentation of the first image."""
    lime = it.LIMECVInterpreter(model, device=device, random_seed=seed)
    with legacy_ridge(), _sample_progress(progress):
        weights = lime.interpret(np.asarray(image, dtype=np.float32), interpret_class=int(label),
                                 batch_size=batch_size, num_samples=num_samples, visual=False)
    results = lime.lime_results
    image_u8, segments = results["input"], results["segmentation"]
    mask = sp_weights_to_image_explanation(image_u8, weights, label, segments)
    return LimeExplanation(label=int(label), probability=float(results["probability"][label]),
                           weights=[(int(sp), float(w)) for sp, w in weights[label]],
                           r2=float(results["r2_scores"][label]), image=image_u8, segments=segments,
                           overlay=overlay_threshold(image_u8, mask))


def plot_explanation(explanation: LimeExplanation, normalized_image: np.ndarray, prediction: int,
                     names: Sequence[str] = CIFAR10_CLASSES, labelled: bool = True) -> Figure:
    """The image (de-normalised) next to the LIME overlay interpretdl shows with ``visual=True``; ``names``: the
    class names, ``labelled``: the explained class is the image's true class (titled ``gt``; else the image is
    titled with the prediction alone)."""
    name = names[explanation.label]
    fig = Figure(figsize=(8, 4.4))
    left, right = fig.subplots(1, 2)
    left.imshow(denormalize(np.asarray(normalized_image)[None])[0])
    left.set_title(f"pt: {names[prediction]}" + (f"\ngt: {name}" if labelled else ""))
    right.imshow(explanation.overlay)
    right.set_title(f"LIME for '{name}' (p = {explanation.probability:.3f})")
    for ax in (left, right):
        ax.axis("off")
    return fig
