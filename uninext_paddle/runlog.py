"""A run's log file: what a script prints to stdout and stderr, also appended to a file (PaddleClas and the
notebook's users look for ``train.log`` next to the checkpoints). Progress bars go to the console only.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, TextIO

__all__ = ["Tee", "console_stderr", "tee_to_file"]


class Tee:
    """A text stream that writes to ``console`` and to ``log``. If the log cannot be written (full disk), the
    console keeps working and logging stops: the checkpoints' own writes report the problem."""

    def __init__(self, console: TextIO, log: IO[str]) -> None:
        self.console, self._log = console, log

    def write(self, text: str) -> int:
        if self._log is not None:
            try:
                self._log.write(text)
                self._log.flush()
            except OSError:
                self._log = None
        return self.console.write(text)

    def flush(self) -> None:
        self.console.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str) -> object:  # encoding, fileno, ... of the console
        return getattr(self.console, name)


def console_stderr() -> TextIO:
    """Where progress bars go: the terminal's stderr, also while ``tee_to_file`` copies stderr to a log."""
    return sys.stderr.console if isinstance(sys.stderr, Tee) else sys.stderr


@contextlib.contextmanager
def tee_to_file(path: str) -> Iterator[IO[str]]:
    """Inside the block, ``sys.stdout`` and ``sys.stderr`` also append to ``path`` (created if absent); the block
    gets the log file itself, for lines meant for the log alone."""
    with open(path, "a", encoding="utf-8") as log:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stdout, sys.stderr = saved
