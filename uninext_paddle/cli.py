"""What the command-line scripts share: the flags they have in common, their value checks, their start on a
device, and errors as one line.

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
from dataclasses import dataclass
from typing import Callable, NoReturn

from . import kernels
from .backends import BACKENDS, BACKENDS_HELP
from .data import DEFAULT_DATA
from .device import AMP_MODES, DEVICES, cpu_build_on_gpu_machine_note, select_device
from .errors import UninextError
from .model import VARIANTS
from .runtime import OPT_OUT_VARIABLE, tune_cpu_runtime

__all__ = ["CliError", "fail", "about", "run_cli", "ArgumentParser", "check_writable", "check_ranges",
           "MIN_IMAGE_SIZE", "check_inference_image_size", "add_data_flags", "add_loader_flags", "add_device_flag",
           "add_amp_flag", "add_checkpoint_flags", "add_backend_flag", "add_progress_flag", "progress_wanted",
           "DeviceStart", "select_device_and_tune"]

MIN_IMAGE_SIZE = 16  # UniNeXt downsamples 16x before its last stage


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


def check_ranges(args: argparse.Namespace, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """One line for the first of the ``positive`` flags (by ``args`` attribute) that is not > 0, or of the
    ``non_negative`` ones that is < 0: the values argparse's types let through."""
    for names, wrong, rule in ((positive, lambda v: v <= 0, "must be positive"),
                               (non_negative, lambda v: v < 0, "must not be negative")):
        bad = next((name for name in names if wrong(getattr(args, name))), None)
        if bad is not None:
            fail(f"--{bad.replace('_', '-')} {rule}, got {getattr(args, bad)}")


def check_inference_image_size(image_size: int) -> None:
    """One line for an ``--image-size`` the inference scripts cannot use (below ``MIN_IMAGE_SIZE``)."""
    if image_size < MIN_IMAGE_SIZE:
        fail(f"--image-size {image_size} is too small: UniNeXt downsamples 16x before its last stage")


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


def add_loader_flags(p: argparse.ArgumentParser, batch_help: str) -> None:
    """``--batch-size`` (the notebook's 128) and ``--num-workers`` (the notebook's 4)."""
    p.add_argument("--batch-size", type=int, default=128, help=batch_help)
    p.add_argument("--num-workers", type=int, default=4,
                   help="data loader worker processes (0: load in the main process)")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|gpu``."""
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: the GPU when Paddle sees one")


def add_amp_flag(p: argparse.ArgumentParser) -> None:
    """``--amp off|fp16|bf16``."""
    p.add_argument("--amp", default="off", choices=AMP_MODES, help="mixed precision (paddle.amp O1), GPU")


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


@dataclass
class DeviceStart:
    """The device a script runs on, and the lines it prints about it at start-up."""

    device: str
    gpu_note: str | None  # the machine has an NVIDIA GPU that this Paddle build cannot use
    cpu_settings: str | None  # on the CPU: the process settings applied, and the C++ kernels when they run
    kernels_note: str | None = None  # on the CPU: why the C++ kernels do not run

    def report(self) -> None:
        """Print the start-up lines: the notes on stderr, the CPU settings on stdout."""
        for note in (self.gpu_note, self.kernels_note):
            if note:
                print(f"note: {note}", file=sys.stderr)
        if self.cpu_settings is not None:
            print(f"CPU settings: {self.cpu_settings}")


def select_device_and_tune(name: str, user_omp_threads: str | None) -> DeviceStart:
    """What every script does first: select the device for ``--device name`` and, on the CPU, apply this
    process's CPU settings (``runtime.tune_cpu_runtime``: process-wide, before the first matmul), given the
    user's ``OMP_NUM_THREADS`` as the script read it before importing Paddle."""
    with about("--device"):
        device = select_device(name)
    gpu_note = cpu_build_on_gpu_machine_note()
    if device != "cpu":
        return DeviceStart(device, gpu_note, None)
    applied = tune_cpu_runtime(user_omp_threads)
    if kernels.available():
        applied.append("C++ kernels for LayerNorm, GELU, transposes and Adam's L2 decay")
        note = None
    else:
        note = (f"the C++ CPU kernels do not run ({kernels.unavailable_reason()}): LayerNorm, GELU, transposes "
                "and Adam's L2 decay take Paddle's own, slower kernels")
    return DeviceStart(device, gpu_note, "; ".join(applied) or f"none ({OPT_OUT_VARIABLE}=0)", note)
