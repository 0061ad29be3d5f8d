"""What the command-line scripts share: the flags they have in common, and errors as one line.

Library code raises ``errors.UninextError``; ``run_cli`` prints it as ``error: <message>`` and exits 2. The
scripts name the flag to blame with ``about``; flag mistakes argparse finds are one line too.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Callable, NoReturn

from .backends import BACKENDS, BACKENDS_HELP
from .data import DEFAULT_DATA
from .device import DEVICES
from .errors import UninextError
from .model import VARIANTS

__all__ = ["CliError", "fail", "about", "run_cli", "ArgumentParser", "check_writable", "add_data_flags",
           "add_device_flag", "add_checkpoint_flags", "add_backend_flag", "add_progress_flag", "progress_wanted"]


class CliError(UninextError):
    """A mistake on the command line (bad flag value, unwritable output folder, ...)."""


def fail(message: str) -> NoReturn:
    """Raise a ``CliError`` with ``message``."""
    raise CliError(message)


@contextlib.contextmanager
def about(flag: str) -> Iterator[None]:
    """Inside the block, a library ``UninextError`` becomes a ``CliError`` that starts with ``flag``
    (``--data: data/x.tar.gz is not ...``), so the user knows which flag to change."""
    try:
        yield
    except CliError:
        raise
    except UninextError as err:
        raise CliError(f"{flag}: {err}") from err


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; an ``UninextError`` becomes ``error: <message>`` on stderr and exit status 2, Ctrl-C
    status 130."""
    try:
        main()
    except UninextError as err:
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


def add_data_flags(p: argparse.ArgumentParser, data_help: str = "CIFAR-10 python tarball",
                   image_size_help: str = "side the images are resized to") -> None:
    """``--data`` and ``--image-size`` (the notebook's 224)."""
    p.add_argument("--data", default=DEFAULT_DATA, help=data_help)
    p.add_argument("--image-size", type=int, default=224, help=image_size_help)


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|gpu``."""
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: the GPU when Paddle sees one")


def add_checkpoint_flags(p: argparse.ArgumentParser, default_ckpt: str) -> None:
    """``--ckpt`` and ``--variant`` (inferred from the weights unless given) of the inference scripts."""
    p.add_argument("--ckpt", default=default_ckpt,
                   help="model weights: a train.py checkpoint or the notebook's state_dict")
    p.add_argument("--variant", default=None, choices=list(VARIANTS),
                   help="UniNeXt variant; None: inferred from the weights' shapes")


def add_backend_flag(p: argparse.ArgumentParser) -> None:
    """``--backend``: what runs the inference scripts' forward passes (``backends.select_backend``)."""
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=BACKENDS_HELP)


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    """``--progress/--no-progress``: progress bars on stderr; by default only when stderr is a terminal, so a
    log file reads like the notebook's output."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="draw progress bars (default: only when stderr is a terminal)")


def progress_wanted(flag: bool | None) -> bool:
    """The ``--progress`` decision: the flag when given, else whether stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag
