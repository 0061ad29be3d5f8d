"""The notebook's training and validation loops (section 2.4), one epoch at a time.

The notebook's numbers are kept: an epoch's loss is ``(sum of per-batch mean losses / images) * batch_size``
and its accuracy is the mean of the per-batch ``paddle.metric.accuracy`` values (what
``paddle.metric.Accuracy.update(acc)`` + ``accumulate()`` computed on Paddle 2.x; on Paddle 3 that update
crashes on the 0-d accuracy tensor, so the mean is taken here directly). The exact top-1 (correct / total)
is reported alongside. In data-parallel runs every sum is reduced over the processes, and the processes agree
at every step on whether to stop (a signal, or a non-finite loss on any of them) before any of them updates.
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import paddle
from tqdm import tqdm

from .device import all_reduce_sum, amp_context, world_size
from .errors import DivergedError
from .mixing import MixupCutmix
from .records import Records
from .runlog import console_stderr

__all__ = ["evaluate", "train_one_epoch", "EpochMeter", "StopRequests", "nonfinite_parameters"]


class StopRequests:
    """While active (``with StopRequests() as stop:``), SIGINT and SIGTERM only set ``stop.signum``, so the loop
    can end at a batch boundary with a resumable checkpoint. A second SIGINT (a person pressing Ctrl-C twice)
    raises ``KeyboardInterrupt`` at once; repeated SIGTERMs do not, because ``paddle.distributed.launch`` forwards
    one stop as three SIGTERMs 0.2 s apart. The previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def requested(self) -> bool:
        """Whether any process got a stop signal; every process must ask, all at the same batch (in
        data-parallel runs the others would otherwise wait in the next all-reduce forever)."""
        return all_reduce_sum([self.signum is not None])[0] > 0

    def __enter__(self) -> StopRequests:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class EpochMeter:
    """Running sums of the train epoch in progress; checkpointed, so an epoch resumed mid-way reports the
    numbers the uninterrupted epoch would have."""

    step: int = 0  # batches done in this epoch
    loss_sum: float = 0.0  # sum of batch mean losses
    acc_sum: float = 0.0  # sum of batch accuracies
    images: int = 0
    skipped: int = 0  # fp16 steps the grad scaler skipped (inf/NaN gradients); the schedule stepped all the same

    def state_dict(self) -> dict[str, Any]:
        """The sums as a plain dict."""
        return asdict(self)


def _batch_size_of(loader: paddle.io.DataLoader) -> int:
    return loader.batch_size or loader.batch_sampler.batch_size


def nonfinite_parameters(model: paddle.nn.Layer) -> list[str]:
    """Names of ``model``'s parameters holding NaN or infinite values (checked before weights are saved)."""
    return [name for name, p in model.named_parameters() if not bool(paddle.isfinite(p).all())]


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader: paddle.io.DataLoader, criterion: paddle.nn.Layer, amp: str = "off",
             device: str = "cpu", num_classes: int = 10, progress: bool = False,
             batch_size: int | None = None) -> dict[str, Any]:
    """The notebook's validation pass over ``loader``, with ``model`` in eval mode.

    Returns "loss" (notebook: sum of batch losses / images * ``batch_size``, default the loader's), "acc"
    (notebook: mean of per-batch accuracies), "correct", "total", "top1" (correct / total), "per_class_correct",
    "per_class_total", "confusion" ([classes][classes] counts, row: true class, column: predicted), "images",
    "seconds" (the whole loop, data loading included, on this process).
    """
    batch_size = batch_size or _batch_size_of(loader)
    model.eval()
    loss_sum = acc_sum = batches = 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    start = time.perf_counter()
    for x_data, y_data in tqdm(loader, desc="val", leave=False, disable=not progress, dynamic_ncols=True,
                                 file=console_stderr()):
        labels = paddle.unsqueeze(y_data, axis=1)
        with amp_context(amp, device):
            logits = model(x_data)
        logits = logits.astype("float32")
        loss_sum += float(criterion(logits, y_data))
        acc_sum += float(paddle.metric.accuracy(logits, labels))
        batches += 1
        np.add.at(confusion, (y_data.numpy().reshape(-1), logits.argmax(axis=1).numpy()), 1)
    seconds = time.perf_counter() - start
    reduced = all_reduce_sum([loss_sum, acc_sum, batches, *confusion.ravel()])
    loss_sum, acc_sum, batches = reduced[:3]
    confusion = np.rint(reduced[3:]).astype(np.int64).reshape(num_classes, num_classes)
    per_class_correct, per_class_total = np.diagonal(confusion).tolist(), confusion.sum(axis=1).tolist()
    correct, total = sum(per_class_correct), sum(per_class_total)
    return {"loss": loss_sum / max(total, 1) * batch_size, "acc": acc_sum / max(batches, 1),
            "correct": correct, "total": total, "top1": correct / max(total, 1),
            "per_class_correct": per_class_correct, "per_class_total": per_class_total,
            "confusion": confusion.tolist(),
            "images": total, "seconds": seconds}


def _forward_backward(model: paddle.nn.Layer, x: paddle.Tensor, labels: paddle.Tensor, target: paddle.Tensor,
                      criterion: paddle.nn.Layer, amp: str, device: str, scaler: paddle.amp.GradScaler | None,
                      scale: float) -> tuple[float, float]:
    """One forward and backward pass (gradients accumulate); (loss, accuracy) of the batch. ``scale`` weighs
    the loss of one of several micro-batches (1: the notebook's single pass, bitwise)."""
    with amp_context(amp, device):
        logits = model(x)
    logits = logits.astype("float32")
    loss = criterion(logits, target)
    acc = float(paddle.metric.accuracy(logits, labels.reshape([-1, 1])))
    scaled = loss if scale == 1 else loss * scale
    (scaled if scaler is None else scaler.scale(scaled)).backward()
    return float(loss), acc


def train_one_epoch(model: paddle.nn.Layer, loader: paddle.io.DataLoader, criterion: paddle.nn.Layer,
                    optimizer: paddle.optimizer.Optimizer, scheduler: paddle.optimizer.lr.LRScheduler,
                    records: Records, meter: EpochMeter, epoch: int, amp: str = "off", device: str = "cpu",
                    scaler: paddle.amp.GradScaler | None = None, log_interval: int = 10, progress: bool = False,
                    stop: StopRequests | None = None,
                    after_step: Callable[[EpochMeter, float], None] | None = None,
                    mixer: MixupCutmix | None = None, soft_criterion: paddle.nn.Layer | None = None,
                    accum_steps: int = 1) -> dict[str, Any] | None:
    """The notebook's training epoch, continuing from ``meter`` (batches already done are not in ``loader``).

    Per batch: forward (under ``amp``), the loss and ``paddle.metric.accuracy``, backward, optimizer step,
    ``scheduler.step()``; every ``log_interval``-th batch's loss goes to ``records`` (the notebook: every 10th).
    Before the update the processes agree on whether any loss is NaN/inf (``DivergedError`` on all of them, the
    weights untouched) or any process was asked to stop (``stop``): then it returns None after this batch's
    update, with ``meter`` ready to be checkpointed (one all-reduce per step carries both). Otherwise returns the
    epoch's "loss" and "acc" (the notebook's definitions, reduced over processes), "images", "seconds" and
    "skipped". ``after_step(meter, seconds)`` is called after every update (seconds since this call began).

    Options beyond the notebook (their defaults give its step): ``mixer`` mixes each batch (Mixup/CutMix), which is
    then trained against soft targets with ``soft_criterion`` and scored against each image's dominant label;
    ``accum_steps`` splits each batch into that many equal micro-batches whose gradients add up to the batch's
    (one update per batch: the same update up to float rounding, in a fraction of the memory).
    """
    model.train()
    batch_size = _batch_size_of(loader)
    start, seen = time.perf_counter(), 0
    bar = tqdm(total=len(loader), initial=meter.step, desc=f"epoch {epoch}", leave=False,
               disable=not progress, dynamic_ncols=True, file=console_stderr())
    for x_data, y_data in loader:
        labels, target, loss_fn = y_data, y_data, criterion
        if mixer is not None:
            x_data, mixed = mixer(x_data, y_data)
            labels, target, loss_fn = mixed.dominant, mixed.soft, soft_criterion
        loss_value = acc = 0.0
        parts = ([paddle.split(t, accum_steps) for t in (x_data, labels, target)] if accum_steps > 1
                 else [[x_data], [labels], [target]])
        for i, (x, y, t) in enumerate(zip(*parts)):
            # data parallel: gradients are all-reduced once per batch, in the last micro-batch's backward
            last = i == accum_steps - 1
            with nullcontext() if last or not isinstance(model, paddle.DataParallel) else model.no_sync():
                chunk_loss, chunk_acc = _forward_backward(model, x, y, t, loss_fn, amp, device, scaler,
                                                          1 / accum_steps)
            loss_value += chunk_loss / accum_steps
            acc += chunk_acc / accum_steps
        stop_asked = stop is not None and stop.signum is not None
        diverged, stopping = all_reduce_sum([not math.isfinite(loss_value), stop_asked])
        if diverged:
            what = f"{loss_value}" if not math.isfinite(loss_value) else "not finite on another process"
            raise DivergedError(f"the training loss is {what} at epoch {epoch}, batch {meter.step}")
        if meter.step % log_interval == 0:
            records.add_train_loss(loss_value)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            meter.skipped += bool(scaler._found_inf)  # the documented GradScaler keeps no public flag for it
            scaler.update()
        scheduler.step()
        optimizer.clear_grad()

        meter.step += 1
        meter.loss_sum += loss_value
        meter.acc_sum += acc
        meter.images += len(y_data)
        seen += len(y_data)
        bar.update()
        if meter.step % log_interval == 0 or meter.step == bar.total:
            bar.set_postfix(loss=f"{meter.loss_sum / meter.step:.4f}", acc=f"{meter.acc_sum / meter.step:.4f}",
                            lr=f"{optimizer.get_lr():.3e}",
                            img_s=f"{seen * world_size() / (time.perf_counter() - start):.1f}")
        if after_step is not None:
            after_step(meter, time.perf_counter() - start)
        if stopping:
            bar.close()
            return None
    bar.close()
    loss_sum, acc_sum, batches, images, skipped = all_reduce_sum(
        [meter.loss_sum, meter.acc_sum, meter.step, meter.images, meter.skipped])
    return {"loss": loss_sum / max(images, 1) * batch_size, "acc": acc_sum / max(batches, 1),
            "images": int(images), "seconds": time.perf_counter() - start, "skipped": int(skipped)}
