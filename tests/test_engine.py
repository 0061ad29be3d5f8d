"""Device selection, AMP guards and the evaluation loop's metrics (the notebook's and the exact top-1)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from uninext_paddle import LabelSmoothingCrossEntropy, UniNeXt
from uninext_paddle.device import amp_context, make_grad_scaler, select_device
from uninext_paddle.engine import evaluate
from uninext_paddle.errors import ConfigError, DeviceError


def test_select_device_cpu_and_gpu_without_cuda():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") == ("cpu" if not paddle.is_compiled_with_cuda() else paddle.device.get_device())
    if not paddle.is_compiled_with_cuda():
        with pytest.raises(DeviceError, match="a GPU was asked for"):
            select_device("gpu")
    with pytest.raises(ConfigError, match="unknown device"):
        select_device("tpu")


def test_amp_off_is_a_no_op_and_half_precision_on_cpu_is_refused():
    with amp_context("off", "cpu"):
        pass
    assert make_grad_scaler("off", "cpu") is None
    # Paddle 3.3.1's auto_cast does nothing on CPU
    for amp in ("fp16", "bf16"):
        with pytest.raises(DeviceError, match=f"mixed precision {amp} needs a GPU"):
            amp_context(amp, "cpu")
    with pytest.raises(ConfigError, match="unknown mixed precision"):
        amp_context("int8", "cpu")


def test_evaluate_reproduces_the_notebook_metrics():
    paddle.seed(0)
    model = UniNeXt(num_classes=10, **TINY)
    x = paddle.randn([10, 3, 32, 32])
    y = paddle.to_tensor(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int64))
    loader = paddle.io.DataLoader(paddle.io.TensorDataset([x, y]), batch_size=4, shuffle=False)
    criterion = LabelSmoothingCrossEntropy(0.1)
    result = evaluate(model, loader, criterion, batch_size=128)

    model.eval()
    with paddle.no_grad():
        logits = model(x)
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    losses = [float(criterion(logits[b], y[b])) for b in batches]
    accs = [float((logits[b].argmax(1) == y[b]).astype("float32").mean()) for b in batches]
    predicted = logits.argmax(1).numpy()
    assert result["loss"] == pytest.approx(sum(losses) / 10 * 128, rel=1e-5)
    assert result["acc"] == pytest.approx(np.mean(accs), rel=1e-6)  # unequal batches: differs from top-1
    assert result["correct"] == int((predicted == y.numpy()).sum())
    assert result["total"] == result["images"] == 10
    assert result["per_class_total"] == [1] * 10
    assert result["per_class_correct"] == [int(p == t) for p, t in zip(predicted, range(10))]
    assert result["seconds"] > 0
    assert not model.training


class _SkippingScaler:
    """A GradScaler stand-in whose every step finds inf gradients (as fp16 does on overflow), like Paddle's:
    ``step`` skips the update and ``_found_inf`` says so."""

    def __init__(self) -> None:
        self._found_inf = False

    def scale(self, loss):
        return loss

    def step(self, optimizer) -> None:
        self._found_inf = True

    def update(self) -> None:
        pass


def test_steps_the_grad_scaler_skips_are_counted_and_the_weights_stay():
    from uninext_paddle.engine import EpochMeter, train_one_epoch
    from uninext_paddle.records import Records

    paddle.seed(0)
    model = UniNeXt(num_classes=10, **TINY)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=1e-3, T_max=10)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler)
    batches = [(paddle.randn([4, 3, 32, 32]), paddle.to_tensor([0, 1, 2, 3])) for _ in range(3)]
    loader = type("Loader", (), {"__iter__": lambda self: iter(batches), "__len__": lambda self: 3,
                                 "batch_size": 4})()
    summary = train_one_epoch(model, loader, LabelSmoothingCrossEntropy(), optimizer, scheduler, Records(),
                              EpochMeter(), 0, scaler=_SkippingScaler())
    assert summary["skipped"] == 3
    assert scheduler.last_epoch == 3  # the schedule still steps (documented: README, mixed precision)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
