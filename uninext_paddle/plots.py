"""The notebook's result plots (section 2.5): learning curves and the grid of test predictions; and the confusion
matrix of an evaluation, readable with 10 classes and with 100.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``), so they render headless, never touch
a display and leave no global figure behind; ``save_figure`` writes them as PNG files.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib
import numpy as np
import paddle
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation

from .data import CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from .errors import WriteError

__all__ = ["plot_learning_curve", "show_images", "label_names", "denormalize", "plot_confusion_matrix", "save_figure"]

NAMED_AXES_MAX = 30  # up to this many classes the confusion matrix's axes carry the names, beyond it indices
ANNOTATED_MAX = 12  # up to this many classes each cell of the confusion matrix shows its percentage
KEY_ROWS, KEY_FONT_SIZE = 50, 8  # the index -> name key beside a confusion matrix with indices: lines per column


def plot_learning_curve(record: dict[str, Any], title: str = "loss", ylabel: str = "CE Loss") -> Figure:
    """The notebook's ``plot_learning_curve``: train (red) and val (cyan) ``record[split][title]`` against
    ``record[split]['iter']``, y from 0.9 x the minimum to 1.1 x the maximum."""
    maxtrain = max(map(float, record['train'][title]))
    maxval = max(map(float, record['val'][title]))
    ymax = max(maxtrain, maxval) * 1.1
    mintrain = min(map(float, record['train'][title]))
    minval = min(map(float, record['val'][title]))
    ymin = min(mintrain, minval) * 0.9

    x_1 = list(map(int, record['train']['iter']))
    x_2 = list(map(int, record['val']['iter']))
    fig = Figure(figsize=(10, 6))
    ax = fig.subplots()
    ax.plot(x_1, list(map(float, record['train'][title])), c='tab:red', label='train')
    ax.plot(x_2, list(map(float, record['val'][title])), c='tab:cyan', label='val')
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel('Training steps')
    ax.set_ylabel(ylabel)
    ax.set_title('Learning curve of {}'.format(title))
    ax.legend()
    return fig


def label_names(labels: Sequence[Any] | paddle.Tensor | np.ndarray,
                names: Sequence[str] = CIFAR10_CLASSES) -> list[str]:
    """The notebook's ``get_cifar10_labels`` for any class names: class indices -> ``names``."""
    return [names[int(i)] for i in np.asarray(labels).reshape(-1)]


def denormalize(images: paddle.Tensor | np.ndarray) -> np.ndarray:
    """Normalised [N, 3, H, W] images -> [N, H, W, 3] RGB in [0, 1] (x * std + mean).

    The notebook showed the normalised tensors, which imshow clips (one warning per image) into wrong colours.
    """
    x = np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1)  # [N, H, W, 3]
    return np.clip(x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32), 0.0, 1.0)


def show_images(imgs: Sequence[np.ndarray], num_rows: int, num_cols: int, pred: Sequence[str] | None = None,
                gt: Sequence[str] | None = None, scale: float = 1.5) -> np.ndarray:
    """The notebook's ``show_images``: a ``num_rows`` x ``num_cols`` grid of HWC images, axes hidden, each
    titled ``pt: <pred>\\ngt: <truth>`` when labels are given (either line alone when only one is). Returns the
    flat array of axes (``axes[0].figure`` is the figure)."""
    figsize = (num_cols * scale, num_rows * scale)
    axes = Figure(figsize=figsize).subplots(num_rows, num_cols, squeeze=False).flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        ax.imshow(img.numpy() if paddle.is_tensor(img) else img)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        lines = ([f"pt: {pred[i]}"] if pred else []) + ([f"gt: {gt[i]}"] if gt else [])
        if lines:
            ax.set_title("\n".join(lines))
    return axes


def plot_confusion_matrix(counts: np.ndarray, names: Sequence[str], title: str = "Confusion matrix") -> Figure:
    """The confusion matrix ``counts`` [classes, classes] (row: true class, column: predicted class) as a heat map
    normalised per true class: cell (i, j) is the share of class i's images predicted as j, so small and large
    classes read alike. The rows of classes without images are grey.

    Readable with few classes and with many: up to ``NAMED_AXES_MAX`` classes the axes carry the names (and up to
    ``ANNOTATED_MAX`` the non-empty cells their percentage); beyond that, the axes carry indices on about 20
    ticks and a key beside the map lists index -> name. The figure grows with the class count.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(names)
    totals = counts.sum(axis=1, keepdims=True)  # [classes, 1]
    shares = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)  # [classes, classes]
    side = min(max(4.0, 0.35 * n + 2.0), 14.0)  # inches: 5.5 at 10 classes, 14 from 35 on
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="lightgrey")
    image = ax.imshow(shares, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(f"{title} ({int(counts.sum())} images; rows normalised per true class)")
    if n <= NAMED_AXES_MAX:
        ax.set_xticks(range(n), labels=names, rotation=90)
        ax.set_yticks(range(n), labels=names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=20, integer=True))
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xlabel("predicted class (index, see the key)")
        ax.set_ylabel("true class (index, see the key)")
        # the key: columns of "index name" right of the colour bar, placed in inches (save_figure's tight
        # bounding box takes them in)
        digits = len(str(n - 1))
        column_width = (digits + 4 + max(map(len, names))) * KEY_FONT_SIZE * 0.62 / 72  # inches of monospace
        for column, first in enumerate(range(0, n, KEY_ROWS)):
            lines = [f"{i:>{digits}} {names[i]}" for i in range(first, min(n, first + KEY_ROWS))]
            place = colorbar.ax.transAxes + ScaledTranslation(0.9 + column * column_width, 0, fig.dpi_scale_trans)
            fig.text(1.0, 1.0, "\n".join(lines), transform=place, va="top", ha="left", family="monospace",
                     fontsize=KEY_FONT_SIZE)
    if n <= ANNOTATED_MAX:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, f"{shares[i, j] * 100:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    return fig


def save_figure(fig: Figure, path: str) -> str:
    """Write ``fig`` to ``path`` as a PNG (creating its folder); an unwritable place raises ``WriteError``."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    return path
