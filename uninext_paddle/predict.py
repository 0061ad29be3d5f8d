"""Predictions on your own images for evaluate.py and visualize.py: class probabilities of image files and their
top k, and the check that a checkpoint's classes are the data's.

Image files are read and transformed as an evaluation reads its data (``image_data.read_rgb``, the notebook's
test transforms), so a file gets the probabilities its image would get in the val split of an image folder.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np
import paddle

from .checkpoint import class_names_path
from .data import build_test_transforms
from .device import amp_context
from .errors import CheckpointError
from .image_data import ImageFileDataset

__all__ = ["UNLABELLED", "image_files_dataset", "predict_probabilities", "Prediction", "top_k",
           "check_class_names"]

UNLABELLED = -1  # the label of an image given to be predicted: its class is the question, not known


def image_files_dataset(files: list[str], names: list[str], image_size: int) -> ImageFileDataset:
    """``files`` as a data set with the notebook's test transforms at ``image_size``, every label ``UNLABELLED``;
    ``names``: the class names the model predicts."""
    return ImageFileDataset([(file, UNLABELLED) for file in files], names, build_test_transforms(image_size))


@paddle.no_grad()
def predict_probabilities(model: paddle.nn.Layer, loader: paddle.io.DataLoader, amp: str = "off",
                          device: str = "cpu") -> np.ndarray:
    """[N, classes] float32: the softmax of ``model``'s logits for every image of ``loader``, in order (the
    forward pass under ``amp``, the softmax in float32)."""
    model.eval()
    batches = []
    for x_data, _ in loader:
        with amp_context(amp, device):
            logits = model(x_data)  # [B, classes]
        batches.append(paddle.nn.functional.softmax(logits.astype("float32"), axis=-1).numpy())
    return np.concatenate(batches)


class Prediction(NamedTuple):
    """One class of an image's top k."""
    name: str
    index: int
    probability: float


def top_k(probabilities: np.ndarray, names: Sequence[str], k: int) -> list[list[Prediction]]:
    """The ``k`` most probable classes (all of them when there are fewer) of each row of ``probabilities``
    [N, classes], most probable first; ties in the order of the classes."""
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]  # [N, k]
    return [[Prediction(names[c], int(c), float(row[c])) for c in classes]
            for row, classes in zip(probabilities, order)]


def check_class_names(weights_path: str, weights_names: Sequence[str], data_path: str,
                      data_names: Sequence[str]) -> None:
    """``CheckpointError`` unless the weights at ``weights_path`` were trained on the classes of the data at
    ``data_path``: as many, with the same names in the same order (a label means the same class to both)."""
    if len(weights_names) != len(data_names):
        raise CheckpointError(f"{weights_path} has a head of {len(weights_names)} classes but {data_path} has "
                              f"{len(data_names)} classes")
    differs = next((i for i, (ours, theirs) in enumerate(zip(weights_names, data_names)) if ours != theirs), None)
    if differs is not None:
        sidecar = class_names_path(weights_path)
        source = (f"from {sidecar}" if os.path.isfile(sidecar) else
                  f"no {os.path.basename(sidecar)} beside it: CIFAR-10's names for 10 classes, else 0, 1, ...")
        raise CheckpointError(f"{weights_path} was trained on other classes than {data_path} holds: class "
                              f"{differs} is {weights_names[differs]!r} for the weights ({source}), "
                              f"{data_names[differs]!r} in the data")
