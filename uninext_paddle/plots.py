"""The notebook's result plots (section 2.5): learning curves and the grid of test predictions.

Figures are built with matplotlib's object API (``Figure``, no ``pyplot``), so they render headless, never touch
a display and leave no global figure behind; ``save_figure`` writes them as PNG files.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import paddle
from matplotlib.figure import Figure

from .data import CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from .errors import WriteError

__all__ = ["plot_learning_curve", "show_images", "get_cifar10_labels", "denormalize", "save_figure"]


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


def get_cifar10_labels(labels: Sequence[Any] | paddle.Tensor | np.ndarray) -> list[str]:
    """The notebook's ``get_cifar10_labels``: class indices -> CIFAR-10 class names."""
    return [CIFAR10_CLASSES[int(i)] for i in np.asarray(labels).reshape(-1)]


def denormalize(images: paddle.Tensor | np.ndarray) -> np.ndarray:
    """Normalised [N, 3, H, W] images -> [N, H, W, 3] RGB in [0, 1] (x * std + mean).

    The notebook showed the normalised tensors, which imshow clips (one warning per image) into wrong colours.
    """
    x = np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1)  # [N, H, W, 3]
    return np.clip(x * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32), 0.0, 1.0)


def show_images(imgs: Sequence[np.ndarray], num_rows: int, num_cols: int, pred: Sequence[str] | None = None,
                gt: Sequence[str] | None = None, scale: float = 1.5) -> np.ndarray:
    """The notebook's ``show_images``: a ``num_rows`` x ``num_cols`` grid of HWC images, axes hidden, each
    titled ``pt: <pred>\\ngt: <truth>`` when labels are given. Returns the flat array of axes (``axes[0].figure``
    is the figure)."""
    figsize = (num_cols * scale, num_rows * scale)
    axes = Figure(figsize=figsize).subplots(num_rows, num_cols, squeeze=False).flatten()
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        ax.imshow(img.numpy() if paddle.is_tensor(img) else img)
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if pred or gt:
            ax.set_title("pt: " + pred[i] + "\ngt: " + gt[i])
    return axes


def save_figure(fig: Figure, path: str) -> str:
    """Write ``fig`` to ``path`` as a PNG (creating its folder); an unwritable place raises ``WriteError``."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, format="png", bbox_inches="tight")
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    return path
