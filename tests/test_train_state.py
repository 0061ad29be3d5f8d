"""The resumable training state (uninext_paddle/train_state.py): format 3 round trips with every process's random
generators as plain arrays and numbers; formats 1 and 2 (their generators a pickled blob, a GeneratorState inside)
still load through the safe loader; a hostile object in any of them is refused with nothing run; values of the
wrong kind are one error; the optimizer state restores into a model built in another order."""
from __future__ import annotations

import os
import pickle
import random

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from uninext_paddle import UniNeXt, train_state
from uninext_paddle.errors import CheckpointError
from uninext_paddle.train_state import (FORMAT_VERSION, TrainingState, capture_rng, portable_optimizer_state,
                                        restore_optimizer_state, restore_rng)


class Hostile:
    """Unpickling this runs ``touch MARKER``: the file a stranger's checkpoint could be."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _state(**changes) -> TrainingState:
    fields = dict(model={"w": paddle.ones([2, 2])}, optimizer={}, scheduler={"last_epoch": 3}, scaler=None, epoch=1,
                  meter={"step": 2}, best_acc=0.5, records={}, rng=[capture_rng()], config={"variant": "T"})
    return TrainingState(**{**fields, **changes})


def draws() -> tuple:
    return paddle.rand([3]).numpy(), np.random.rand(3), random.random(), random.gauss(0, 1)


def test_training_state_round_trips_with_the_generators_of_every_process_as_plain_data(tmp_path):
    np.random.seed(7)
    second = capture_rng()
    paddle.seed(3), np.random.seed(3), random.seed(3)
    random.gauss(0, 1)  # Python's generator then holds a cached gaussian
    state = _state(rng=[capture_rng(), second])
    state.save(str(tmp_path / "last.pdckpt"))
    expected = draws()
    with open(tmp_path / "last.pdckpt", "rb") as f:
        raw = f.read()
    assert b"GeneratorState" not in raw and b"libpaddle" not in raw  # no pickled Paddle object: data only
    loaded = TrainingState.load(str(tmp_path / "last.pdckpt"))
    assert (loaded.epoch, loaded.meter, loaded.best_acc, loaded.variant()) == (1, {"step": 2}, 0.5, "T")
    # tensors come back as host arrays: a resumed GPU run holds no second copy of the weights on the device
    assert isinstance(loaded.model["w"], np.ndarray)
    assert restore_rng(loaded.rng[0]) is None
    assert all(np.array_equal(a, b) for a, b in zip(expected, draws()))
    restore_rng(loaded.rng[1])  # the second process's own streams
    assert np.array_equal(np.random.rand(2), np.random.RandomState(7).rand(2))


def test_a_training_state_of_an_unknown_version_or_damaged_is_one_clear_error(tmp_path):
    paddle.save({"version": FORMAT_VERSION + 1}, str(tmp_path / "new.pdckpt"))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this code reads versions 1 to"):
        TrainingState.load(str(tmp_path / "new.pdckpt"))
    _state().save(str(tmp_path / "ok.pdckpt"))
    blob = paddle.load(str(tmp_path / "ok.pdckpt"))
    paddle.save({**blob, "version": 2, "rng": np.zeros(3, np.uint8)}, str(tmp_path / "damaged.pdckpt"))
    with pytest.raises(CheckpointError, match=r"damaged\.pdckpt is not a readable Paddle file"):
        TrainingState.load(str(tmp_path / "damaged.pdckpt"))  # its generators' blob is not a pickle
    paddle.save({**blob, "epoch": "one"}, str(tmp_path / "odd.pdckpt"))
    with pytest.raises(CheckpointError, match=r"odd\.pdckpt is a damaged training checkpoint \(ValueError"):
        TrainingState.load(str(tmp_path / "odd.pdckpt"))
    (tmp_path / "cut.pdckpt").write_bytes((tmp_path / "ok.pdckpt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"cut\.pdckpt is not a readable Paddle file .*truncated"):
        TrainingState.load(str(tmp_path / "cut.pdckpt"))


def _old_rng_blob(rng: object) -> np.ndarray:
    """The generators as formats 1 and 2 stored them: pickled by Python, as a uint8 array."""
    return np.frombuffer(pickle.dumps(rng), dtype=np.uint8)


def _version_1(rng: object) -> dict:
    return {"model": {}, "optimizer": {}, "scheduler": {}, "scaler": None, "epoch": 2, "step": 3,
            "meter": {"step": 3}, "best_acc": 0.25, "records": {}, "config": {"variant": "S"},
            "rng": _old_rng_blob(rng)}


def _version_2(rng: object) -> dict:
    return {"version": 2, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": None, "epoch": 2,
            "meter": {"step": 3}, "best_acc": 0.25, "records": {}, "config": {"variant": "S"}, "extras": {},
            "rng": _old_rng_blob(rng)}


def test_versions_1_and_2_still_resume_their_generators(tmp_path):
    paddle.seed(5), np.random.seed(5), random.seed(5)
    version_1 = {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    version_2 = [{"cpu": paddle.get_rng_state("cpu")[0], "cuda": [], "numpy": np.random.get_state(),
                  "python": random.getstate(), "mixing": {"bit_generator": "PCG64"}}]
    expected = draws()
    for name, obj in (("v1", _version_1(version_1)), ("v2", _version_2(version_2))):
        paddle.save(obj, str(tmp_path / f"{name}.pdckpt"))
        loaded = TrainingState.load(str(tmp_path / f"{name}.pdckpt"))
        assert (loaded.epoch, loaded.meter["step"], loaded.variant()) == (2, 3, "S")
        assert restore_rng(loaded.rng[0]) is None
        assert all(np.array_equal(a, b) for a, b in zip(expected, draws())), name
    assert loaded.rng[0]["mixing"] == {"bit_generator": "PCG64"}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_hostile_object_in_a_training_state_of_any_version_is_refused_having_run_nothing(tmp_path, version):
    marker = tmp_path / "ran"
    hostile = Hostile(str(marker))
    if version == 1:
        obj = _version_1({"paddle": [hostile], "numpy": None, "python": None})  # inside the generators' blob
    elif version == 2:
        obj = _version_2([{"cpu": hostile}])
    else:
        obj = {"version": 3, "model": {"w": np.ones(2)}, "optimizer": {}, "scheduler": {}, "scaler": None,
               "epoch": 0, "meter": {}, "best_acc": 0.0, "records": {"epochs": [{"note": hostile}]}, "rng": [],
               "config": {}, "extras": {}}
    path = tmp_path / "last.pdckpt"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    with pytest.raises(CheckpointError, match=r"holds posix\.system, which loading would call: refused"):
        TrainingState.load(str(path))
    assert not marker.exists()


class _FakeGenerator:
    """A CUDA generator stand-in: its state is a real GeneratorState, told apart by its seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def get_state(self):
        paddle.seed(self.seed)
        return paddle.get_rng_state("cpu")[0]

    def set_state(self, state) -> None:
        self.seed = state.__getstate__()[1]


@pytest.mark.parametrize("saved, visible", [(2, 1), (1, 2), (2, 0), (0, 2), (2, 2)])
def test_resuming_with_another_number_of_gpus_restores_what_fits_and_says_what_did_not(saved, visible, monkeypatch):
    """paddle.set_rng_state raises ValueError when the count of GPU states differs: a traceback on resume."""
    monkeypatch.setattr(train_state, "cuda_generators", lambda: [_FakeGenerator(100 + i) for i in range(saved)])
    states = capture_rng()
    now = [_FakeGenerator(200 + i) for i in range(visible)]
    monkeypatch.setattr(train_state, "cuda_generators", lambda: now)
    note = restore_rng(states)
    assert [g.seed for g in now] == [100 + i if i < saved else 200 + i for i in range(visible)]
    if saved == visible:
        assert note is None
    else:
        assert f"{saved} GPU(s) were saved and {visible} are visible" in note


def _trained() -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer]:
    paddle.seed(0)
    model = UniNeXt(num_classes=10, **TINY)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=1e-3)
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    optimizer.step()
    return model, optimizer


def test_the_optimizer_state_restores_into_a_model_built_in_another_order():
    """Paddle keys optimizer state by process-wide unique parameter names (linear_12.w_0), which differ between a
    fresh process and one that built other layers first; the training state uses the structured names."""
    model, optimizer = _trained()
    paddle.nn.Linear(3, 3)  # shifts every unique name of what is built next
    other = UniNeXt(num_classes=10, **TINY)
    assert {p.name for p in other.parameters()}.isdisjoint(p.name for p in model.parameters())
    again = paddle.optimizer.Adam(parameters=other.parameters(), learning_rate=1e-3)
    saved = {k: (v.numpy() if isinstance(v, paddle.Tensor) else v)
             for k, v in portable_optimizer_state(optimizer, model).items()}  # as TrainingState.load gives it
    restore_optimizer_state(again, other, saved)
    theirs = again.state_dict()
    for name, p in model.named_parameters():
        q = dict(other.named_parameters())[name]
        mine = optimizer.state_dict()[f"{p.name}_moment1_0"]
        assert np.array_equal(np.asarray(theirs[f"{q.name}_moment1_0"]), mine.numpy()), name
    bad = {**saved, "head.bias_moment1_0": "not an array"}
    with pytest.raises(CheckpointError, match="the optimizer state's head.bias_moment1_0 is not an array of floats"):
        restore_optimizer_state(again, other, bad)
