"""What the command-line scripts share: user-facing errors as one line and a non-zero exit."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Callable, NoReturn

__all__ = ["CliError", "fail", "run_cli", "ArgumentParser", "check_writable"]


class CliError(Exception):
    """A problem the user can fix (bad flag, missing file, ...). Its message says what and how."""


def fail(message: str) -> NoReturn:
    """Raise a ``CliError`` with ``message``."""
    raise CliError(message)


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a ``CliError`` becomes ``error: <message>`` on stderr and exit status 2, Ctrl-C status 130."""
    try:
        main()
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def check_writable(folder: str, what: str) -> None:
    """Create ``folder`` if needed and fail with one line naming ``what`` (e.g. "--out") unless a file can be
    written there: scripts call it before long work rather than fail at its end."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        fail(f"cannot write to {what} {folder}: {err.strerror or err}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown flag, bad choice, not a number) are the project's one-line errors,
    pointing at ``--help`` instead of dumping the usage."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")
