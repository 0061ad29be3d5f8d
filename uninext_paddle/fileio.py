"""Files written atomically: a temporary file, then ``os.replace``. (Reading is ``safe_load.py``'s.)

A crash, ``kill -9``, Ctrl-C, full disk or I/O error while writing leaves the previous file (or none), never a
truncated one. Temporary files are named ``.NAME.PID.tmp`` next to the target; one left behind by a killed
process is removed by the next successful write of the same file.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable

import paddle

from .errors import WriteError

__all__ = ["atomic_write", "atomic_write_json", "atomic_save"]


def _stale_temporaries(path: str) -> list[str]:
    folder, name = os.path.split(os.path.abspath(path))
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp"))


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, fsync it, then ``os.replace`` it onto ``path``.

    An ``OSError`` on the way (no space, I/O error, the folder gone) raises ``WriteError`` naming the file and
    the cause; any failure (also Ctrl-C) removes the temporary file and leaves ``path`` as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for stale in _stale_temporaries(path):  # left by a process killed while writing this file
        try:
            os.remove(stale)
        except OSError:
            pass


def atomic_write_json(obj: Any, path: str) -> None:
    """``obj`` as indented JSON at ``path``, atomically (see ``atomic_write``)."""
    text = json.dumps(obj, indent=1)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_save(obj: Any, path: str) -> None:
    """``paddle.save(obj, path)``, atomically (see ``atomic_write``)."""
    atomic_write(path, lambda tmp: paddle.save(obj, tmp))
