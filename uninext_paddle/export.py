"""Exporting a UniNeXt for deployment: a Paddle inference model (``paddle.jit.to_static`` + ``paddle.jit.save``)
and an ONNX model (that program converted by paddle2onnx), each with a check that it predicts what the dynamic
model predicts.

The model needs no change to export: it keeps map sizes as Python ints derived from the static input side and
reshapes with a ``-1`` batch, so one ``InputSpec([None, 3, size, size])`` gives a graph for any batch size (the
ONNX model keeps that batch dimension dynamic).

paddle2onnx and onnxruntime are imported only when an ONNX model is made or checked (``onnx_modules``), so the
rest of the package works without them.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import importlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import paddle

from . import fastpath
from .errors import CheckpointError, DeviceError, WriteError
from .fileio import atomic_write

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["EXPORT_PREFIX", "ONNX_FILE", "ONNX_OPSET", "native_output_silenced", "export_model", "check_export",
           "onnx_modules", "onnx_program_bytes", "onnx_model_bytes", "export_onnx", "onnxruntime_session",
           "check_onnx_export"]

EXPORT_PREFIX = "inference"  # files: inference.json (the PIR program) and inference.pdiparams
ONNX_FILE = "model.onnx"
# ONNX Runtime 1.16+ runs opset 17 (LayerNormalization as one op); logits within 2e-6 of the eager model's.
ONNX_OPSET = 17


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Send the process's stdout and stderr to /dev/null inside the block: Paddle's and paddle2onnx's C++ sides
    print pass diagnostics and progress there while they export, convert and compile ("Paddle static graph(PIR)
    not support input out tensor", "[Paddle2ONNX] Start parsing ..."), which would end up in the scripts'
    reports. Errors still arrive as exceptions."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1), os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)  # C stdio's buffers, before the descriptors point back
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def export_model(model: paddle.nn.Layer, folder: str, image_size: int) -> str:
    """Save ``model`` as a Paddle inference model for [any batch, 3, ``image_size``, ``image_size``] float32
    inputs in ``folder``; return the path prefix (``paddle.jit.load`` / Paddle Inference take it).
    ``WriteError`` when the folder cannot be written."""
    prefix = os.path.join(folder, EXPORT_PREFIX)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", "x")]
    # to_static replaces a layer's forward in place; converting a copy leaves ``model`` dynamic (and fast).
    # The copy has Paddle's own ops rather than the CPU formulations: the file may be deployed on any device, and
    # Paddle Inference's fusion passes and paddle2onnx recognise those ops.
    portable = copy.deepcopy(model).eval()
    fastpath.install(portable, cpu=False)
    # full_graph: the AST converter, which yields one whole program that jit.save can write (SOT may fall back).
    static_model = paddle.jit.to_static(portable, input_spec=spec, full_graph=True)
    try:
        os.makedirs(folder, exist_ok=True)
        with native_output_silenced():
            paddle.jit.save(static_model, prefix)
    except OSError as err:
        raise WriteError(f"cannot write the exported model to {folder}: {err.strerror or err}") from err
    return prefix


def _check_predictions(expected: np.ndarray, got: np.ndarray, what: str) -> float:
    """The largest absolute difference of two [B, classes] logit arrays; ``CheckpointError`` naming ``what``
    unless both predict the same classes."""
    diff = float(np.abs(expected - got).max())
    if not np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)):
        raise CheckpointError(f"{what} predicts other classes than the checkpoint (largest logit difference "
                              f"{diff:.3g})")
    return diff


@paddle.no_grad()
def check_export(prefix: str, model: paddle.nn.Layer, images: paddle.Tensor) -> float:
    """Load the exported model at ``prefix`` back and run it on ``images`` [B, 3, S, S]: ``CheckpointError``
    unless it predicts the classes the dynamic ``model`` predicts; return the largest absolute logit
    difference."""
    with native_output_silenced():  # the program's first run logs the executor it picks
        exported = paddle.jit.load(prefix)
        exported.eval()
        got = exported(images).numpy()
    return _check_predictions(model(images).numpy(), got, f"the exported model at {prefix}")


def onnx_modules() -> tuple[ModuleType, ModuleType]:
    """(paddle2onnx, onnxruntime), imported; ``DeviceError`` naming the missing one (requirements.txt pins
    both)."""
    modules = []
    for name in ("paddle2onnx", "onnxruntime"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError as err:
            raise DeviceError(f"{name} is not installed ({err}); pip install -r requirements.txt") from err
    return modules[0], modules[1]


def onnx_program_bytes(prefix: str) -> bytes:
    """The exported program at ``prefix`` (``export_model``) as a serialised ONNX model (opset ``ONNX_OPSET``),
    converted by paddle2onnx in this process. ``DeviceError`` when paddle2onnx is missing or cannot convert it."""
    paddle2onnx, _ = onnx_modules()
    try:
        # save_file=None: the bytes come back, without paddle2onnx's optional Polygraphy pass (which sets
        # POLYGRAPHY_AUTOINSTALL_DEPS=1 in os.environ and may pip-install packages); ONNX Runtime folds the
        # constants itself when it loads the model.
        log = io.StringIO()
        with native_output_silenced(), contextlib.redirect_stdout(log):
            blob = paddle2onnx.export(f"{prefix}.json", f"{prefix}.pdiparams", save_file=None,
                                      opset_version=ONNX_OPSET)
    except (Exception, SystemExit) as err:  # paddle2onnx prints "[ERROR]\t<cause>" in colour, then sys.exit(-1)
        causes = [line.partition("[ERROR]")[2].replace("\033[0m", "").strip()
                  for line in log.getvalue().splitlines() if "[ERROR]" in line]
        raise DeviceError(f"paddle2onnx {paddle2onnx.__version__} cannot convert the model "
                          f"({next(filter(None, causes), f'{type(err).__name__}: {err}')})") from err
    if not isinstance(blob, bytes) or not blob:
        raise DeviceError(f"paddle2onnx {paddle2onnx.__version__} returned no ONNX model")
    return blob


def onnx_model_bytes(model: paddle.nn.Layer, image_size: int) -> bytes:
    """``model`` as a serialised ONNX model for [any batch, 3, ``image_size``, ``image_size``] float32 inputs:
    exported with ``export_model`` to a temporary folder and converted (``onnx_program_bytes``)."""
    with tempfile.TemporaryDirectory(prefix="uninext-onnx-") as folder:
        return onnx_program_bytes(export_model(model, folder, image_size))


def export_onnx(model: paddle.nn.Layer, folder: str, image_size: int) -> str:
    """Write ``model`` as ``folder``/model.onnx (see ``onnx_model_bytes``), atomically; return its path."""
    blob = onnx_model_bytes(model, image_size)
    path = os.path.join(folder, ONNX_FILE)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(blob)

    atomic_write(path, write)
    return path


def onnxruntime_session(source: bytes | str, threads: int = 0, spinning: bool = True) -> onnxruntime.InferenceSession:
    """An ``onnxruntime.InferenceSession`` on the CPU for an ONNX model (serialised bytes or a file path), with
    ``threads`` intra-op threads (0: ONNX Runtime's default, one per physical core), whose idle threads spin
    (``spinning``, ONNX Runtime's default) or sleep while they wait for work, and only errors logged (paddle2onnx
    leaves unused constants that the loader would list one warning each). ``DeviceError`` when onnxruntime is
    missing or cannot load the model."""
    _, onnxruntime = onnx_modules()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's errors (Fail, InvalidGraph, ...) derive from Exception only
        what = source if isinstance(source, str) else "the converted model"
        raise DeviceError(f"onnxruntime {onnxruntime.__version__} cannot load {what} "
                          f"({type(err).__name__}: {err})") from err


@paddle.no_grad()
def check_onnx_export(path: str, model: paddle.nn.Layer, images: paddle.Tensor) -> float:
    """Load the ONNX model at ``path`` into an onnxruntime session with default settings, as a deployment would,
    and run it on ``images`` [B, 3, S, S]: ``CheckpointError`` unless it predicts the classes the dynamic
    ``model`` predicts; return the largest absolute logit difference."""
    session = onnxruntime_session(path)
    got = session.run(None, {session.get_inputs()[0].name: images.numpy().astype(np.float32)})[0]
    return _check_predictions(model(images).numpy(), got, f"the ONNX model at {path}")
