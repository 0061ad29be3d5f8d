"""Inference-side helpers for evaluate.py and visualize.py: a model from a checkpoint, the model-only throughput
timer, the static export (``paddle.jit.to_static`` + ``paddle.jit.save``) with its round-trip check, and the
backend that runs the forward passes.

Backends: ``eager`` is the dynamic model. ``onednn`` is the exported program run by Paddle Inference with oneDNN
on the CPU, 2-3x faster than the eager model there (BENCHMARKS.md): fused GEMMs and oneDNN's depthwise conv
instead of Paddle's eager kernels. It is checked against the eager model on a probe batch before it is used;
``auto`` takes it on the CPU when it passes and the eager model otherwise (and always on the GPU, where the eager
model runs on cuDNN).

The model needs no change to export: it keeps map sizes as Python ints derived from the static input side and
reshapes with a ``-1`` batch, so one ``InputSpec([None, 3, size, size])`` gives a graph for any batch size.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import paddle

from . import fastpath
from .checkpoint import infer_variant, load_file, load_weights, model_state_of
from .cli import fail
from .device import amp_context
from .model import VARIANTS, UniNeXt, create_model

__all__ = ["load_model", "model_throughput", "export_model", "check_export", "EXPORT_PREFIX", "BACKENDS",
           "OneDNNModel", "compile_onednn", "select_backend"]

EXPORT_PREFIX = "inference"  # files: inference.json (the PIR program) and inference.pdiparams
BACKENDS = ("auto", "eager", "onednn")
# Paddle 3.3.1's oneDNN fusion passes that break this model: matmul -> transpose -> reshape miscomputes the
# attention of maps that pad to one window (at 32x32 input, stages 2-4: logits off by ~0.3), and folding a reshape
# into the op before it leaves the window transpose's 5 axes on a 4-D tensor (the predictor does not build).
# Without them the program matches the eager model, at no measurable cost at 224.
_BROKEN_ONEDNN_PASSES = ("matmul_transpose_reshape_fuse_pass", "operator_reshape_onednn_fuse_pass")
_PROBE_BATCH = 2
_PROBE_RTOL = 1e-4  # largest logit difference allowed, relative to the largest logit: float rounding, no more


def load_model(path: str, variant: str | None = None) -> tuple[UniNeXt, str]:
    """(model in eval mode, variant) from a ``train.py`` or notebook checkpoint at ``path``.

    ``variant`` None: inferred from the weights' shapes. The class count always comes from the head's shape.
    Weights that do not fit fail with one line naming what does not match.
    """
    state = model_state_of(load_file(path), path)
    if variant is None:
        variant, num_classes = infer_variant(state, path)
    elif variant not in VARIANTS:
        fail(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    else:
        num_classes = int(state["head.weight"].shape[1])
    model = create_model(variant, num_classes=num_classes)
    load_weights(model, state, path, variant)
    model.eval()
    return model, variant


@paddle.no_grad()
def model_throughput(model: paddle.nn.Layer, images: paddle.Tensor, device: str, amp: str = "off",
                     warmup: int = 3, batches: int = 10) -> float:
    """Images per second of the forward pass alone, on ``images`` already on the device: ``warmup`` untimed
    batches (kernel selection, allocator, caches), then ``batches`` timed ones, synchronised on GPU so the
    clock sees finished work rather than queued kernels."""
    model.eval()
    images = images.to(device)  # outside the clock: a copy at most

    def forward() -> None:
        with amp_context(amp, device):
            model(images)

    for _ in range(warmup):
        forward()
    if device.startswith("gpu"):
        paddle.device.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        forward()
    if device.startswith("gpu"):
        paddle.device.synchronize()
    return images.shape[0] * batches / (time.perf_counter() - start)


def export_model(model: paddle.nn.Layer, folder: str, image_size: int) -> str:
    """Save ``model`` as a Paddle inference model for [any batch, 3, ``image_size``, ``image_size``] float32
    inputs in ``folder``; return the path prefix (``paddle.jit.load`` / Paddle Inference take it)."""
    prefix = os.path.join(folder, EXPORT_PREFIX)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", "x")]
    # to_static replaces a layer's forward in place; converting a copy leaves ``model`` dynamic (and fast).
    # full_graph: the AST converter, which yields one whole program that jit.save can write (SOT may fall back).
    static_model = paddle.jit.to_static(copy.deepcopy(model).eval(), input_spec=spec, full_graph=True)
    try:
        os.makedirs(folder, exist_ok=True)
        # Traced with Paddle's own conv and Linear ops rather than the CPU fast paths: the file may be deployed
        # on any device, and Paddle Inference's fusion passes recognise those ops.
        with fastpath.disabled():
            paddle.jit.save(static_model, prefix)
    except OSError as err:
        fail(f"cannot write the exported model to {folder}: {err.strerror or err}")
    return prefix


@paddle.no_grad()
def check_export(prefix: str, model: paddle.nn.Layer, images: paddle.Tensor) -> float:
    """Load the exported model at ``prefix`` back and run it on ``images``: fail unless it predicts the classes
    the dynamic ``model`` predicts; return the largest absolute logit difference."""
    exported = paddle.jit.load(prefix)
    exported.eval()
    expected, got = model(images).numpy(), exported(images).numpy()
    if not np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)):
        fail(f"the exported model at {prefix} predicts other classes than the checkpoint "
             f"(largest logit difference {np.abs(expected - got).max():.3g})")
    return float(np.abs(expected - got).max())


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send the process's stdout and stderr to /dev/null inside the block: Paddle's C++ side prints pass
    diagnostics there while it exports and compiles ("ReduceMeanCheckIfOneDNNSupport", glog warnings), which
    would end up in the scripts' reports. Errors still arrive as exceptions."""
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


class OneDNNModel(paddle.nn.Layer):
    """A Paddle Inference predictor (CPU, oneDNN) called like the model: [B, 3, S, S] float32 -> logits [B, classes].
    Inference only: no parameters, no gradients."""

    def __init__(self, predictor: paddle.inference.Predictor) -> None:
        super().__init__()
        self._predictor = predictor
        self._input = predictor.get_input_handle(predictor.get_input_names()[0])
        self._output = predictor.get_output_handle(predictor.get_output_names()[0])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        self._input.copy_from_cpu(np.ascontiguousarray(x.numpy(), dtype=np.float32))
        self._predictor.run()
        return paddle.to_tensor(self._output.copy_to_cpu())


def compile_onednn(model: paddle.nn.Layer, image_size: int) -> OneDNNModel:
    """``model`` exported for ``image_size`` inputs (``export_model``, to a temporary folder) and loaded by Paddle
    Inference with oneDNN, one math thread (as Paddle's eager CPU kernels use by default), run once on one
    image, quietly (Paddle's C++ side prints pass diagnostics while it compiles and on the first run)."""
    with _native_output_silenced(), tempfile.TemporaryDirectory(prefix="uninext-onednn-") as folder:
        prefix = export_model(model, folder, image_size)
        config = paddle.inference.Config(f"{prefix}.json", f"{prefix}.pdiparams")
        config.disable_gpu()
        config.enable_onednn()
        for name in _BROKEN_ONEDNN_PASSES:
            config.delete_pass(name)
        config.set_cpu_math_library_num_threads(1)
        config.disable_glog_info()
        compiled = OneDNNModel(paddle.inference.create_predictor(config))  # reads the files
        compiled(paddle.zeros([1, 3, image_size, image_size]))
    return compiled


@paddle.no_grad()
def _onednn_problem(model: paddle.nn.Layer, image_size: int) -> tuple[OneDNNModel | None, str]:
    """(the compiled model, '') or (None, why it cannot be used): it fails to build or run, or its logits on a
    seeded random probe batch differ from the eager model's by more than float rounding."""
    probe = paddle.to_tensor(np.random.RandomState(0).standard_normal(
        (_PROBE_BATCH, 3, image_size, image_size)).astype(np.float32))
    try:
        compiled = compile_onednn(model, image_size)
        got = compiled(probe).numpy()
    except (RuntimeError, ValueError, OSError) as err:
        return None, f"Paddle Inference with oneDNN failed ({type(err).__name__}: {str(err).strip() or 'no message'})"
    expected = model(probe).numpy()
    diff = float(np.abs(got - expected).max())
    if not diff <= _PROBE_RTOL * float(np.abs(expected).max()):
        return None, f"Paddle Inference with oneDNN gives other logits than the model (largest difference {diff:.3g})"
    return compiled, ""


def select_backend(model: paddle.nn.Layer, backend: str, device: str,
                   image_size: int) -> tuple[paddle.nn.Layer, str]:
    """(what runs the forward passes, its backend name) for ``backend`` (one of ``BACKENDS``) on ``device``.

    'auto': ``onednn`` on the CPU when it builds and matches the eager model, else ``eager`` (with a note on
    stderr why). 'onednn' fails with one line where it cannot run or does not match.
    """
    if backend not in BACKENDS:
        fail(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "eager" or (backend == "auto" and device != "cpu"):
        return model, "eager"
    if device != "cpu":
        fail(f"--backend onednn runs on the CPU, not {device}; use --device cpu, or --backend auto/eager")
    compiled, problem = _onednn_problem(model, image_size)
    if compiled is not None:
        return compiled, "onednn"
    if backend == "onednn":
        fail(f"{problem}; use --backend eager")
    print(f"note: {problem}; running the eager model", file=sys.stderr)
    return model, "eager"
