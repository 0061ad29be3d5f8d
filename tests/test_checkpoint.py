"""Training checkpoints and records: atomic writes, RNG states through paddle.save, the notebook's records."""
from __future__ import annotations

import json
import random

import numpy as np
import paddle
import pytest

from uninext_paddle.checkpoint import atomic_write, restore_rng_states, rng_states
from uninext_paddle.records import Records


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


def test_rng_states_survive_paddle_save_and_load(tmp_path):
    paddle.seed(3), np.random.seed(3), random.seed(3)
    paddle.save({"rng": rng_states()}, str(tmp_path / "c.pdckpt"))
    expected = (paddle.rand([3]).numpy(), np.random.rand(3), random.random())
    restore_rng_states(paddle.load(str(tmp_path / "c.pdckpt"))["rng"])
    again = (paddle.rand([3]).numpy(), np.random.rand(3), random.random())
    assert all(np.array_equal(a, b) for a, b in zip(expected, again))


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
