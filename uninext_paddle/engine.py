"""The notebook's training and validation loops (section 2.4), one epoch at a time.

The notebook's numbers are kept: an epoch's loss is ``(sum of per-batch mean losses / images) * batch_size``
and its accuracy is the mean of the per-batch ``paddle.metric.accuracy`` values (what
``paddle.metric.Accuracy.update(acc)`` + ``accumulate()`` computed on Paddle 2.x; on Paddle 3 that update
crashes on the 0-d accuracy tensor, so the mean is taken here directly). The exact top-1 (correct / total)
is reported alongside. In data-parallel runs every sum is reduced over the processes.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import paddle
from tqdm import tqdm

from .device import all_reduce_sum, amp_context

__all__ = ["evaluate"]


def _batch_size_of(loader: paddle.io.DataLoader) -> int:
    return loader.batch_size or loader.batch_sampler.batch_size


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader: paddle.io.DataLoader, criterion: paddle.nn.Layer, amp: str = "off",
             device: str = "cpu", num_classes: int = 10, progress: bool = False,
             batch_size: int | None = None) -> dict[str, Any]:
    """The notebook's validation pass over ``loader``, with ``model`` in eval mode.

    Returns "loss" (notebook: sum of batch losses / images * ``batch_size``, default the loader's), "acc"
    (notebook: mean of per-batch accuracies), "correct", "total", "top1" (correct / total), "per_class_correct",
    "per_class_total", "images", "seconds" (the whole loop, data loading included, on this process).
    """
    batch_size = batch_size or _batch_size_of(loader)
    model.eval()
    loss_sum = acc_sum = batches = 0.0
    per_class_correct = np.zeros(num_classes, dtype=np.int64)
    per_class_total = np.zeros(num_classes, dtype=np.int64)
    start = time.perf_counter()
    for x_data, y_data in tqdm(loader, desc="val", leave=False, disable=not progress, dynamic_ncols=True):
        labels = paddle.unsqueeze(y_data, axis=1)
        with amp_context(amp, device):
            logits = model(x_data)
        logits = logits.astype("float32")
        loss_sum += float(criterion(logits, y_data))
        acc_sum += float(paddle.metric.accuracy(logits, labels))
        batches += 1
        predicted = logits.argmax(axis=1).numpy()
        truth = y_data.numpy().reshape(-1)
        per_class_total += np.bincount(truth, minlength=num_classes)
        per_class_correct += np.bincount(truth[predicted == truth], minlength=num_classes)
    seconds = time.perf_counter() - start
    reduced = all_reduce_sum([loss_sum, acc_sum, batches, *per_class_correct, *per_class_total])
    loss_sum, acc_sum, batches = reduced[:3]
    per_class_correct = [int(round(v)) for v in reduced[3:3 + num_classes]]
    per_class_total = [int(round(v)) for v in reduced[3 + num_classes:]]
    correct, total = sum(per_class_correct), sum(per_class_total)
    return {"loss": loss_sum / max(total, 1) * batch_size, "acc": acc_sum / max(batches, 1),
            "correct": correct, "total": total, "top1": correct / max(total, 1),
            "per_class_correct": per_class_correct, "per_class_total": per_class_total,
            "images": total, "seconds": seconds}
