"""Training state and records: atomic writes (and their failures), the versioned training state with every
process's random generators, the notebook's records."""
from __future__ import annotations

import errno
import json
import random

import numpy as np
import paddle
import pytest

from uninext_paddle import train_state
from uninext_paddle.errors import CheckpointError, WriteError
from uninext_paddle.fileio import atomic_save, atomic_write
from uninext_paddle.records import Records
from uninext_paddle.train_state import (FORMAT_VERSION, TrainingState, capture_rng, portable_optimizer_state,
                                        restore_optimizer_state, restore_rng)


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "last.pdckpt"
    target.write_bytes(b"good")

    def crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(target), crash)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pdckpt"]


def _state(**changes) -> TrainingState:
    fields = dict(model={"w": paddle.ones([2, 2])}, optimizer={}, scheduler={"last_epoch": 3}, scaler=None, epoch=1,
                  meter={"step": 2}, best_acc=0.5, records={}, rng=[capture_rng()], config={"variant": "T"})
    return TrainingState(**{**fields, **changes})


def test_training_state_round_trips_with_the_generators_of_every_process(tmp_path):
    paddle.seed(3), np.random.seed(3), random.seed(3)
    state = _state(rng=[capture_rng(), {**capture_rng(), "numpy": np.random.RandomState(7).get_state()}])
    state.save(str(tmp_path / "last.pdckpt"))
    expected = (paddle.rand([3]).numpy(), np.random.rand(3), random.random())
    loaded = TrainingState.load(str(tmp_path / "last.pdckpt"))
    assert (loaded.epoch, loaded.meter, loaded.best_acc, loaded.variant()) == (1, {"step": 2}, 0.5, "T")
    # tensors come back as host arrays: a resumed GPU run holds no second copy of the weights on the device
    assert isinstance(loaded.model["w"], np.ndarray)
    assert restore_rng(loaded.rng[0]) is None
    again = (paddle.rand([3]).numpy(), np.random.rand(3), random.random())
    assert all(np.array_equal(a, b) for a, b in zip(expected, again))
    restore_rng(loaded.rng[1])  # the second process's own streams
    assert np.array_equal(np.random.rand(2), np.random.RandomState(7).rand(2))


def test_a_training_state_of_an_unknown_version_or_damaged_is_one_clear_error(tmp_path):
    paddle.save({"version": FORMAT_VERSION + 1}, str(tmp_path / "new.pdckpt"))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this code reads versions 1 to"):
        TrainingState.load(str(tmp_path / "new.pdckpt"))
    _state().save(str(tmp_path / "ok.pdckpt"))
    blob = paddle.load(str(tmp_path / "ok.pdckpt"))
    paddle.save({**blob, "rng": np.zeros(3, np.uint8)}, str(tmp_path / "damaged.pdckpt"))
    with pytest.raises(CheckpointError, match="damaged training checkpoint"):
        TrainingState.load(str(tmp_path / "damaged.pdckpt"))


def test_a_version_1_checkpoint_still_resumes(tmp_path):
    import pickle

    paddle.seed(5), np.random.seed(5), random.seed(5)
    old_rng = {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    paddle.save({"model": {}, "optimizer": {}, "scheduler": {}, "scaler": None, "epoch": 2, "step": 3,
                 "meter": {"step": 3}, "best_acc": 0.25, "records": {}, "config": {"variant": "S"},
                 "rng": np.frombuffer(pickle.dumps(old_rng), dtype=np.uint8)}, str(tmp_path / "v1.pdckpt"))
    expected = paddle.rand([2]).numpy()
    loaded = TrainingState.load(str(tmp_path / "v1.pdckpt"))
    assert (loaded.epoch, loaded.meter["step"], loaded.variant()) == (2, 3, "S")
    restore_rng(loaded.rng[0])
    assert np.array_equal(paddle.rand([2]).numpy(), expected)


class _FakeGenerator:
    def __init__(self, state: str) -> None:
        self.state = state

    def get_state(self) -> str:
        return self.state

    def set_state(self, state: str) -> None:
        self.state = state


@pytest.mark.parametrize("saved, visible", [(2, 1), (1, 2), (2, 0), (0, 2), (2, 2)])
def test_resuming_with_another_number_of_gpus_restores_what_fits_and_says_what_did_not(saved, visible, monkeypatch):
    """paddle.set_rng_state raises ValueError when the count of GPU states differs: a traceback on resume."""
    monkeypatch.setattr(train_state, "cuda_generators", lambda: [_FakeGenerator(f"old{i}") for i in range(saved)])
    states = capture_rng()
    states["cuda"] = [f"saved{i}" for i in range(saved)]
    now = [_FakeGenerator(f"now{i}") for i in range(visible)]
    monkeypatch.setattr(train_state, "cuda_generators", lambda: now)
    note = restore_rng(states)
    assert [g.state for g in now] == [f"saved{i}" if i < saved else f"now{i}" for i in range(visible)]
    if saved == visible:
        assert note is None
    else:
        assert f"{saved} GPU(s) were saved and {visible} are visible" in note


def test_a_full_disk_is_one_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "best_model.pdparams"
    atomic_save({"w": paddle.ones([2])}, str(target))
    good = target.read_bytes()
    (tmp_path / ".best_model.pdparams.99999.tmp").write_bytes(b"left by a kill -9")

    def full_disk(obj, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paddle, "save", full_disk)
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        atomic_save({"w": paddle.zeros([2])}, str(target))
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best_model.pdparams.99999.tmp", "best_model.pdparams"]
    monkeypatch.undo()
    atomic_save({"w": paddle.zeros([2])}, str(target))  # a successful save removes the stale temporary file
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.pdparams"]


def test_records_follow_the_notebooks_counters(tmp_path):
    records = Records()
    for epoch in range(2):
        records.add_train_loss(2.0 - epoch)
        records.add_train_loss(1.5 - epoch)
        records.add_train_acc(0.5 + epoch / 10)
        records.add_val(1.0, 0.6)
    assert records.loss_record == {'train': {'loss': [2.0, 1.5, 1.0, 0.5], 'iter': [0, 1, 2, 3]},
                                   'val': {'loss': [1.0, 1.0], 'iter': [2, 4]}}
    assert records.acc_record == {'train': {'acc': [0.5, 0.6], 'iter': [0, 1]},
                                  'val': {'acc': [0.6, 0.6], 'iter': [1, 2]}}
    records.save(str(tmp_path / "history.json"))
    loaded = Records(json.loads((tmp_path / "history.json").read_text()))
    assert loaded.state_dict() == records.state_dict()
    loaded.add_train_loss(0.1)
    assert len(records.loss_record['train']['loss']) == 4  # Records(state) copies


def test_the_optimizer_state_restores_into_a_model_built_in_another_order():
    """Paddle keys optimizer state by process-wide unique parameter names (linear_12.w_0), which differ between a
    fresh process and one that built other layers first; the training state uses the structured names."""
    from tests.conftest import TINY
    from uninext_paddle import UniNeXt

    def trained() -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer]:
        paddle.seed(0)
        model = UniNeXt(num_classes=10, **TINY)
        optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=1e-3)
        model(paddle.randn([2, 3, 32, 32])).mean().backward()
        optimizer.step()
        return model, optimizer

    model, optimizer = trained()
    paddle.nn.Linear(3, 3)  # shifts every unique name of what is built next
    other = UniNeXt(num_classes=10, **TINY)
    assert {p.name for p in other.parameters()}.isdisjoint(p.name for p in model.parameters())
    again = paddle.optimizer.Adam(parameters=other.parameters(), learning_rate=1e-3)
    restore_optimizer_state(again, other, portable_optimizer_state(optimizer, model))
    theirs = again.state_dict()
    for name, p in model.named_parameters():
        q = dict(other.named_parameters())[name]
        mine = optimizer.state_dict()[f"{p.name}_moment1_0"]
        assert np.array_equal(theirs[f"{q.name}_moment1_0"].numpy(), mine.numpy()), name
