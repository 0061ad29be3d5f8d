"""throughput.py: the notebook's timed loop (forward passes only, over every batch, the notebook's own line) and
the model-only timer."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from uninext_paddle.throughput import LoopTiming, model_throughput, notebook_loop


class CountingModel(paddle.nn.Layer):
    """Records the batches it is called on and whether gradients were on."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self.batches.append(int(x.shape[0]))
        self.grad_enabled.append(paddle.is_grad_enabled())
        return x.mean(axis=[2, 3])


class LabelledImages(paddle.io.Dataset):
    """``count`` [3, 4, 4] images whose labels would fail if anything used them as class indices."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        return np.full((3, 4, 4), i, np.float32), np.int64(-1)


def test_the_notebooks_line_is_its_integer_floor_division():
    # the notebook: print("Throughout:{}".format(int(len(val_dataset)//(bb - aa))))
    assert LoopTiming(images=10000, seconds=24.8).notebook_line() == "Throughout:403"
    assert LoopTiming(images=10000, seconds=24.8).images_per_s == pytest.approx(403.2258)
    assert LoopTiming(images=20, seconds=0.3).notebook_line() == "Throughout:66"  # 20 // 0.3 = 66.0


def test_the_notebook_loop_runs_every_batch_forward_only():
    model = CountingModel()
    model.train()
    loader = paddle.io.DataLoader(LabelledImages(10), batch_size=4, shuffle=False, drop_last=False)
    timing = notebook_loop(model, loader)
    assert model.batches == [4, 4, 2]  # every image once, the last batch kept
    assert model.grad_enabled == [False] * 3 and not model.training  # no_grad, eval mode
    assert timing.images == 10 and timing.seconds > 0


def test_model_throughput_times_only_the_timed_batches():
    model = CountingModel()
    images = paddle.zeros([6, 3, 4, 4])
    assert model_throughput(model, images, "cpu", warmup=2, batches=3) > 0
    assert model.batches == [6] * 5
