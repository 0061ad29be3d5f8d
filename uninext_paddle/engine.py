"""The notebook's training and validation loops (section 2.4), one epoch at a time.

The notebook's numbers are kept: an epoch's loss is ``(sum of per-batch mean losses / images) * batch_size``
and its accuracy is the mean of the per-batch ``paddle.metric.accuracy`` values (what
``paddle.metric.Accuracy.update(acc)`` + ``accumulate()`` computed on Paddle 2.x; on Paddle 3 that update
crashes on the 0-d accuracy tensor, so the mean is taken here directly). The exact top-1 (correct / total)
is reported alongside. In data-parallel runs every sum is reduced over the processes, and the processes agree
at every step on whether to stop (a signal, or a non-finite loss on any of them) before any of them updates, and
at every batch on whether any data loader failed (``agreed_batches``).
"""
from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import paddle
from tqdm import tqdm

from .device import all_reduce_sum, amp_context, world_size
from .errors import DataError, DivergedError
from .mixing import MixupCutmix
from .records import Records
from .runlog import console_stderr

__all__ = ["agreed_batches", "evaluate", "TrainStep", "train_one_epoch", "EpochMeter", "StopRequests",
           "nonfinite_parameters"]


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

    def add_batch(self, loss: float, acc: float, images: int) -> None:
        """Count one finished batch."""
        self.step += 1
        self.loss_sum += loss
        self.acc_sum += acc
        self.images += images

    def state_dict(self) -> dict[str, Any]:
        """The sums as a plain dict."""
        return asdict(self)


def agreed_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``, with every process of a data-parallel run agreeing at each batch that none of
    them hit a data error (``loader.BatchLoader`` raises ``DataError`` for an unreadable image or a dead worker):
    then all of them raise it at the same batch, instead of the others waiting forever in their next collective
    call. Processes whose share has fewer batches (val) keep answering until every share is done. In a single
    process, the loader's own batches and errors."""
    batches = iter(loader)
    if world_size() == 1:
        yield from batches
        return
    while True:
        batch, error, done = None, None, False
        try:
            batch = next(batches)
        except StopIteration:
            done = True
        except DataError as err:
            error = err
        delivering, failing = all_reduce_sum([not done and error is None, error is not None])
        if failing:
            raise error or DataError("the data loader of another process failed (see its message above)")
        if not delivering:
            return
        if not done:
            yield batch


def _batch_size_of(loader: Any) -> int:
    return loader.batch_size or loader.batch_sampler.batch_size


def nonfinite_parameters(model: paddle.nn.Layer) -> list[str]:
    """Names of ``model``'s parameters holding NaN or infinite values (checked before weights are saved)."""
    return [name for name, p in model.named_parameters() if not bool(paddle.isfinite(p).all())]


@paddle.no_grad()
def evaluate(model: paddle.nn.Layer, loader: Iterable[Any], criterion: paddle.nn.Layer, amp: str = "off",
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
    for x_data, y_data in tqdm(agreed_batches(loader), total=len(loader), desc="val", leave=False,
                               disable=not progress, dynamic_ncols=True, file=console_stderr()):
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


@dataclass
class TrainStep:
    """What a training step updates and how it runs and reports; with the defaults, the notebook's step.

    Args:
        optimizer: updated once per batch.
        scheduler: stepped once per batch (the notebook's per-batch cosine).
        criterion: the loss against the labels (the notebook's ``LabelSmoothingCrossEntropy``).
        mixer: mixes each batch (Mixup/CutMix), which is then trained with the mixer's own soft-target loss and
            scored against each image's dominant label; None: no mixing.
        amp: the forward pass's autocast ("off", "fp16", "bf16").
        device: where the model runs.
        scaler: fp16's GradScaler; None: plain backward and step.
        accum_steps: split each batch into this many equal micro-batches whose gradients add up to the batch's
            (one update per batch: the same update up to float rounding, in a fraction of the memory).
        log_interval: every ``log_interval``-th batch's loss goes to the records (the notebook: every 10th) and
            the progress bar's figures are refreshed.
        progress: draw a progress bar on stderr.
    """

    optimizer: paddle.optimizer.Optimizer
    scheduler: paddle.optimizer.lr.LRScheduler
    criterion: paddle.nn.Layer
    mixer: MixupCutmix | None = None
    amp: str = "off"
    device: str = "cpu"
    scaler: paddle.amp.GradScaler | None = None
    accum_steps: int = 1
    log_interval: int = 10
    progress: bool = False

    def forward_backward(self, model: paddle.nn.Layer, x: paddle.Tensor, y: paddle.Tensor) -> tuple[float, float]:
        """Forward and backward passes of one batch (gradients accumulate over ``accum_steps`` micro-batches; in
        data-parallel runs they are all-reduced once, in the last one's backward); (loss, accuracy) of the
        batch."""
        labels, target, criterion = y, y, self.criterion
        if self.mixer is not None:
            x, mixed = self.mixer(x, y)
            labels, target, criterion = mixed.dominant, mixed.soft, self.mixer.criterion
        parts = ([paddle.split(t, self.accum_steps) for t in (x, labels, target)] if self.accum_steps > 1
                 else [[x], [labels], [target]])
        loss_value = acc = 0.0
        for i, (x_part, labels_part, target_part) in enumerate(zip(*parts)):
            last = i == self.accum_steps - 1
            with nullcontext() if last or not isinstance(model, paddle.DataParallel) else model.no_sync():
                part_loss, part_acc = self._pass(model, x_part, labels_part, target_part, criterion)
            loss_value += part_loss / self.accum_steps
            acc += part_acc / self.accum_steps
        return loss_value, acc

    def _pass(self, model: paddle.nn.Layer, x: paddle.Tensor, labels: paddle.Tensor, target: paddle.Tensor,
              criterion: paddle.nn.Layer) -> tuple[float, float]:
        """One forward and backward pass; its loss weighed by 1 / ``accum_steps`` (1: the notebook's single pass,
        bitwise)."""
        with amp_context(self.amp, self.device):
            logits = model(x)
        logits = logits.astype("float32")
        loss = criterion(logits, target)
        acc = float(paddle.metric.accuracy(logits, labels.reshape([-1, 1])))
        scaled = loss if self.accum_steps == 1 else loss * (1 / self.accum_steps)
        (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        return float(loss), acc

    def update(self, meter: EpochMeter) -> None:
        """The optimizer step (through the fp16 scaler, counting the steps it skips in ``meter``), the scheduler
        step, and the gradients cleared."""
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            meter.skipped += bool(self.scaler._found_inf)  # the documented GradScaler keeps no public flag for it
            self.scaler.update()
        self.scheduler.step()
        self.optimizer.clear_grad()


def train_one_epoch(model: paddle.nn.Layer, loader: Iterable[Any], step: TrainStep, records: Records,
                    meter: EpochMeter, epoch: int, stop: StopRequests | None = None,
                    after_step: Callable[[EpochMeter, float], None] | None = None) -> dict[str, Any] | None:
    """The notebook's training epoch, continuing from ``meter`` (batches already done are not in ``loader``).

    Per batch (``step``): forward (under its amp), the loss and ``paddle.metric.accuracy``, backward, optimizer
    step, ``scheduler.step()``; every ``step.log_interval``-th batch's loss goes to ``records``. Before the update
    the processes agree on whether any loss is NaN/inf (``DivergedError`` on all of them, the weights untouched)
    or any process was asked to stop (``stop``): then it returns None after this batch's update, with ``meter``
    ready to be checkpointed (one all-reduce per step carries both). Otherwise returns the epoch's "loss" and
    "acc" (the notebook's definitions, reduced over processes), "images", "seconds" and "skipped".
    ``after_step(meter, seconds)`` is called after every update (seconds since this call began).
    """
    model.train()
    batch_size = _batch_size_of(loader)
    start, seen = time.perf_counter(), 0
    bar = tqdm(total=len(loader), initial=meter.step, desc=f"epoch {epoch}", leave=False,
               disable=not step.progress, dynamic_ncols=True, file=console_stderr())
    for x_data, y_data in agreed_batches(loader):
        loss_value, acc = step.forward_backward(model, x_data, y_data)
        stop_asked = stop is not None and stop.signum is not None
        diverged, stopping = all_reduce_sum([not math.isfinite(loss_value), stop_asked])
        if diverged:
            what = f"{loss_value}" if not math.isfinite(loss_value) else "not finite on another process"
            raise DivergedError(f"the training loss is {what} at epoch {epoch}, batch {meter.step}")
        if meter.step % step.log_interval == 0:
            records.add_train_loss(loss_value)
        step.update(meter)
        meter.add_batch(loss_value, acc, len(y_data))
        seen += len(y_data)
        bar.update()
        if meter.step % step.log_interval == 0 or meter.step == bar.total:
            bar.set_postfix(loss=f"{meter.loss_sum / meter.step:.4f}", acc=f"{meter.acc_sum / meter.step:.4f}",
                            lr=f"{step.optimizer.get_lr():.3e}",
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
