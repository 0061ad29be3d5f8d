"""Timing the forward pass: the notebook's throughput loop (section 2.5) and the model-only throughput.

The notebook timed a bare loop over the test loader after training: ``model(x_data)`` under ``no_grad`` for
every batch, data loading included, no loss, no metrics, no copies to the host, and printed
``Throughout:{int(len(val_dataset) // seconds)}`` (403 on its GPU). ``notebook_loop`` times that loop on its
own; evaluate.py's accuracy pass, which adds the loss and the metrics, is not timed. ``model_throughput`` times
the forward pass alone on one batch already on the device, without the data pipeline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import paddle
from tqdm import tqdm

from .device import amp_context
from .runlog import console_stderr

__all__ = ["LoopTiming", "notebook_loop", "model_throughput"]


@dataclass
class LoopTiming:
    """The wall time of one pass of the notebook's loop over ``images`` images."""

    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    def notebook_line(self) -> str:
        """The notebook's own report, verbatim, its spelling and its integer floor division included:
        ``Throughout:403``."""
        return "Throughout:{}".format(int(self.images // self.seconds))


def _synchronize(device: str) -> None:
    """Wait for the GPU's queued kernels, so the clock sees finished work (nothing to wait for on the CPU)."""
    if device.startswith("gpu"):
        paddle.device.synchronize()


@paddle.no_grad()
def notebook_loop(model: paddle.nn.Layer, loader: paddle.io.DataLoader, amp: str = "off", device: str = "cpu",
                  progress: bool = False) -> LoopTiming:
    """The notebook's timed loop: ``model`` in eval mode over every batch of ``loader``, forward pass only,
    the clock around the whole loop (so data loading and the loader's worker start-up count, as they did in the
    notebook). The images are ``len(loader.dataset)``, as the notebook's ``len(val_dataset)``. The notebook's
    unused ``labels = paddle.unsqueeze(y_data, axis=1)`` is left out; on the GPU the clock stops after the
    queued kernels finish (the notebook's stopped when the last one was queued)."""
    model.eval()
    start = time.perf_counter()
    for x_data, _ in tqdm(loader, desc="timed loop", leave=False, disable=not progress, dynamic_ncols=True,
                          file=console_stderr()):
        with amp_context(amp, device):
            model(x_data)
    _synchronize(device)
    return LoopTiming(images=len(loader.dataset), seconds=time.perf_counter() - start)


@paddle.no_grad()
def model_throughput(model: paddle.nn.Layer, images: paddle.Tensor, device: str, amp: str = "off",
                     warmup: int = 3, batches: int = 10) -> float:
    """Images per second of the forward pass alone, on ``images`` [B, 3, S, S] moved to the device first:
    ``warmup`` untimed batches (kernel selection, allocator, caches), then ``batches`` timed ones, synchronised
    on GPU so the clock sees finished work rather than queued kernels."""
    model.eval()
    images = images.to(device)  # outside the clock: a copy at most

    def forward() -> None:
        with amp_context(amp, device):
            model(images)

    for _ in range(warmup):
        forward()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        forward()
    _synchronize(device)
    return images.shape[0] * batches / (time.perf_counter() - start)
