"""The notebook's learning-curve records (``loss_record`` / ``acc_record``) and their ``history.json`` file.

The structure is the notebook's, key for key::

    loss_record = {'train': {'loss': [], 'iter': []}, 'val': {'loss': [], 'iter': []}}
    acc_record = {'train': {'acc': [], 'iter': []}, 'val': {'acc': [], 'iter': []}}

with the notebook's counters: ``loss_iter`` counts recorded train losses (one every 10 batches) and a val loss
is stamped with the current ``loss_iter``; ``acc_iter`` counts epochs and is incremented between the train
and the val accuracy, so the val points sit one step to the right, as in the notebook's plots. Values are
stored as floats (the notebook kept 1-element arrays), so the file is plain JSON.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any

from .errors import DataError
from .fileio import atomic_write_json

__all__ = ["Records", "HISTORY_FILE", "load_history"]

HISTORY_FILE = "history.json"


class Records:
    """The notebook's ``loss_record`` and ``acc_record``, plus one summary row per epoch (``epochs``)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = copy.deepcopy(state) if state else {}
        self.loss_record: dict[str, dict[str, list]] = state.get(
            "loss_record", {'train': {'loss': [], 'iter': []}, 'val': {'loss': [], 'iter': []}})
        self.acc_record: dict[str, dict[str, list]] = state.get(
            "acc_record", {'train': {'acc': [], 'iter': []}, 'val': {'acc': [], 'iter': []}})
        self.epochs: list[dict[str, Any]] = state.get("epochs", [])

    @property
    def loss_iter(self) -> int:
        """The notebook's ``loss_iter``: how many train losses have been recorded."""
        return len(self.loss_record['train']['loss'])

    @property
    def acc_iter(self) -> int:
        """The notebook's ``acc_iter`` after the train accuracy of the current epoch was recorded."""
        return len(self.acc_record['train']['acc'])

    def add_train_loss(self, loss: float) -> None:
        """Record a train batch's loss (the notebook does it for every 10th batch)."""
        self.loss_record['train']['iter'].append(self.loss_iter)
        self.loss_record['train']['loss'].append(float(loss))

    def add_train_acc(self, acc: float) -> None:
        """Record an epoch's train accuracy."""
        self.acc_record['train']['iter'].append(self.acc_iter)
        self.acc_record['train']['acc'].append(float(acc))

    def add_val(self, loss: float, acc: float) -> None:
        """Record an epoch's val loss and accuracy."""
        self.loss_record['val']['loss'].append(float(loss))
        self.loss_record['val']['iter'].append(self.loss_iter)
        self.acc_record['val']['acc'].append(float(acc))
        self.acc_record['val']['iter'].append(self.acc_iter)

    def add_epoch(self, summary: dict[str, Any]) -> None:
        """Append an epoch's summary row (lr, losses, accuracies, timings)."""
        self.epochs.append(dict(summary))

    def state_dict(self) -> dict[str, Any]:
        """Everything, as plain JSON-able Python (also what a training checkpoint stores)."""
        return copy.deepcopy({"loss_record": self.loss_record, "acc_record": self.acc_record,
                              "epochs": self.epochs})

    def save(self, path: str, **extra: Any) -> None:
        """Write ``state_dict()`` as JSON to ``path``, atomically, with ``extra`` entries (e.g. the run's config)."""
        atomic_write_json({**self.state_dict(), **extra}, path)


def load_history(path: str) -> dict[str, Any]:
    """The notebook's ``loss_record`` and ``acc_record`` from ``path``, checked to be plottable."""
    if not os.path.isfile(path):
        raise DataError(f"history not found: {path} (train.py writes it next to the checkpoints)")
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"history {path} is not readable JSON ({type(err).__name__}: {err})") from err
    for record, metric in (("loss_record", "loss"), ("acc_record", "acc")):
        for split in ("train", "val"):
            try:
                values, steps = history[record][split][metric], history[record][split]["iter"]
            except (KeyError, TypeError, IndexError):
                values = steps = None
            if not (isinstance(values, list) and isinstance(steps, list) and values and len(values) == len(steps)):
                raise DataError(f"history {path} has no plottable {record}['{split}']: expected equally long, "
                                f"non-empty '{metric}' and 'iter' lists")
            if not all(isinstance(v, (int, float)) for v in values + steps):
                raise DataError(f"history {path}: {record}['{split}'] holds values that are not numbers")
    return history
