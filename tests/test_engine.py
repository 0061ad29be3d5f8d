"""The training and evaluation loops (uninext_paddle.engine): the evaluation's metrics (the notebook's, the exact
top-1 and the confusion matrix) and the steps an fp16 grad scaler skips."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from tests.own_data_fixture import SIZE, eager_probabilities, make_own_data
from uninext_paddle import LabelSmoothingCrossEntropy, UniNeXt
from uninext_paddle.data import load_val_split
from uninext_paddle.engine import EpochMeter, TrainStep, evaluate, train_one_epoch
from uninext_paddle.loader import make_loader
from uninext_paddle.records import Records


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


def test_evaluate_gives_the_confusion_matrix_of_its_pass(tmp_path):
    own = make_own_data(tmp_path)
    paddle.seed(0)
    tiny = UniNeXt(num_classes=3, **TINY)
    dataset, _ = load_val_split(own["data"], SIZE)
    stats = evaluate(tiny, make_loader(dataset, 4, num_workers=0), LabelSmoothingCrossEntropy(), num_classes=3)
    truth = np.array([label for _, label in own["val"]])
    predicted = eager_probabilities(tiny, [path for path, _ in own["val"]]).argmax(1)
    counts = np.array(stats["confusion"])
    assert counts.sum(1).tolist() == [3, 3, 3] == stats["per_class_total"]  # rows: true classes
    assert all(counts[t, p] == sum((truth == t) & (predicted == p)) for t in range(3) for p in range(3))
    assert np.diagonal(counts).tolist() == stats["per_class_correct"]


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
    paddle.seed(0)
    model = UniNeXt(num_classes=10, **TINY)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=1e-3, T_max=10)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler)
    batches = [(paddle.randn([4, 3, 32, 32]), paddle.to_tensor([0, 1, 2, 3])) for _ in range(3)]
    loader = type("Loader", (), {"__iter__": lambda self: iter(batches), "__len__": lambda self: 3,
                                 "batch_size": 4})()
    step = TrainStep(optimizer, scheduler, LabelSmoothingCrossEntropy(), scaler=_SkippingScaler())
    summary = train_one_epoch(model, loader, step, Records(), EpochMeter(), 0)
    assert summary["skipped"] == 3
    assert scheduler.last_epoch == 3  # the schedule still steps (documented: README, mixed precision)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())
