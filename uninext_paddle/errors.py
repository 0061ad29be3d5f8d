"""The project's exceptions: one base, a few kinds, messages about data and files (never about flags).

Library code raises these; the scripts (``cli.run_cli``) print ``error: <message>`` in one line and exit 2,
adding the flag to blame where there is one (``cli.about``). From a notebook they are ordinary exceptions.
"""
from __future__ import annotations

__all__ = ["UninextError", "DataError", "CheckpointError", "ConfigError", "DeviceError", "WriteError",
           "DivergedError"]


class UninextError(Exception):
    """A problem the user can fix: bad data, a checkpoint that does not fit, an unwritable place, ..."""


class DataError(UninextError):
    """A data set that is missing, unreadable or not what it claims to be (names the file and the problem)."""


class CheckpointError(UninextError):
    """A weights or training-state file that is missing, unreadable or does not fit the model."""


class ConfigError(UninextError, ValueError):
    """A setting out of range or of the wrong kind (also a ``ValueError``, for callers that expect one)."""


class DeviceError(UninextError):
    """A device, precision or process-group setting this machine or this Paddle build cannot honour."""


class WriteError(UninextError, OSError):
    """A file could not be written (full disk, I/O error, missing folder); the previous file is intact."""


class DivergedError(UninextError, ArithmeticError):
    """Training diverged: a non-finite loss or non-finite weights."""
