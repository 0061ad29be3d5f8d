"""Atomic writes (uninext_paddle/fileio.py): an interrupted or failed write keeps the previous file, a full disk
is one clear error, and a temporary file left by a killed process is removed by the next write."""
from __future__ import annotations

import errno

import paddle
import pytest

from uninext_paddle.errors import WriteError
from uninext_paddle.fileio import atomic_save, atomic_write


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
