"""What runs the forward passes of evaluate.py and visualize.py: the backends, and the choice among them.

- ``eager``: the dynamic model (on the GPU: cuDNN).
- ``onednn``: the exported program (``export.export_model``) run by Paddle Inference with oneDNN on the CPU:
  fused GEMMs and oneDNN's depthwise conv instead of Paddle's eager kernels, 2-3x faster than eager there.
- ``onnxruntime``: the exported program converted to ONNX by paddle2onnx (``export.onnx_model_bytes``) and run by
  ONNX Runtime's CPU provider, faster again than oneDNN on this model (BENCHMARKS.md).

A compiled backend is checked against the eager model on a seeded probe batch before it is used. ``auto`` takes,
on the CPU, the first of onnxruntime and onednn that builds and passes, else the eager model, with a note on
stderr saying why each was skipped; on the GPU it is the eager model. Naming a compiled backend insists on it:
``DeviceError`` where it cannot run or does not match.
"""
from __future__ import annotations

import sys
import tempfile
from typing import TYPE_CHECKING, Callable

import numpy as np
import paddle

from .errors import ConfigError, DeviceError, UninextError
from .export import export_model, native_output_silenced, onnx_model_bytes, onnxruntime_session

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["BACKENDS", "BACKENDS_HELP", "ONNXRUNTIME_THREADS", "ONNXRUNTIME_SPINNING", "OneDNNModel", "compile_onednn",
           "OnnxRuntimeModel", "compile_onnxruntime", "probe_difference", "select_backend"]

BACKENDS = ("auto", "eager", "onednn", "onnxruntime")
BACKENDS_HELP = ("what runs the forward passes: eager (the dynamic model), onednn (Paddle Inference with oneDNN, "
                 "CPU), onnxruntime (the model converted to ONNX, run by ONNX Runtime, CPU); auto: on the CPU the "
                 "first of onnxruntime and onednn that matches the eager model, else eager")
# Paddle 3.3.1's oneDNN fusion passes that break this model: matmul -> transpose -> reshape miscomputes the
# attention of maps that pad to one window (at 32x32 input, stages 2-4: logits off by ~0.3), and folding a reshape
# into the op before it leaves the window transpose's 5 axes on a 4-D tensor (the predictor does not build).
# Without them the program matches the eager model, at no measurable cost at 224.
_BROKEN_ONEDNN_PASSES = ("matmul_transpose_reshape_fuse_pass", "operator_reshape_onednn_fuse_pass")
# ONNX Runtime's threads: one per physical core (its own default; 0), which at 224x224 is 1.7x one thread on a
# 2-core machine, and idle threads sleep instead of spinning: spinning threads take the cycles the DataLoader
# workers and other processes need, and with the other core busy 2 spinning threads ran at half the speed of
# 2 sleeping ones (BENCHMARKS.md).
ONNXRUNTIME_THREADS, ONNXRUNTIME_SPINNING = 0, False
_PROBE_BATCH = 2
_PROBE_RTOL = 1e-4  # largest logit difference allowed, relative to the largest logit: float rounding, no more


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
    with native_output_silenced(), tempfile.TemporaryDirectory(prefix="uninext-onednn-") as folder:
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


class OnnxRuntimeModel(paddle.nn.Layer):
    """An ONNX Runtime session called like the model: [B, 3, S, S] float32 -> logits [B, classes].
    Inference only: no parameters, no gradients."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        super().__init__()
        self._session = session
        self._input = session.get_inputs()[0].name

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logits = self._session.run(None, {self._input: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return paddle.to_tensor(logits)


def compile_onnxruntime(model: paddle.nn.Layer, image_size: int) -> OnnxRuntimeModel:
    """``model`` converted to ONNX for ``image_size`` inputs (``onnx_model_bytes``, in memory) and loaded by ONNX
    Runtime on the CPU (``ONNXRUNTIME_THREADS``, ``ONNXRUNTIME_SPINNING``), run once on one image. ``DeviceError``
    when paddle2onnx or onnxruntime is missing or fails."""
    session = onnxruntime_session(onnx_model_bytes(model, image_size), ONNXRUNTIME_THREADS, ONNXRUNTIME_SPINNING)
    compiled = OnnxRuntimeModel(session)
    compiled(paddle.zeros([1, 3, image_size, image_size]))
    return compiled


# backend name -> (what it is called in notes and errors, how it is built); auto tries them in this order
_COMPILED: dict[str, tuple[str, Callable[[paddle.nn.Layer, int], paddle.nn.Layer]]] = {
    "onnxruntime": ("ONNX Runtime", compile_onnxruntime),
    "onednn": ("Paddle Inference with oneDNN", compile_onednn),
}


@paddle.no_grad()
def probe_difference(model: paddle.nn.Layer, compiled: paddle.nn.Layer, image_size: int) -> tuple[float, bool]:
    """(largest logit difference, within float rounding?) of ``compiled`` against the eager ``model`` on a seeded
    random probe batch [2, 3, ``image_size``, ``image_size``]."""
    probe = paddle.to_tensor(np.random.RandomState(0).standard_normal(
        (_PROBE_BATCH, 3, image_size, image_size)).astype(np.float32))
    expected, got = model(probe).numpy(), compiled(probe).numpy()
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    return diff, diff <= _PROBE_RTOL * float(np.abs(expected).max())


def _compiled_or_problem(name: str, model: paddle.nn.Layer, image_size: int) -> tuple[paddle.nn.Layer | None, str]:
    """(the compiled model, '') or (None, why it cannot be used): it fails to build or run, or its logits on the
    probe batch differ from the eager model's by more than float rounding."""
    title, compile_fn = _COMPILED[name]
    try:
        compiled = compile_fn(model, image_size)
        diff, close = probe_difference(model, compiled, image_size)
    except UninextError as err:  # a package missing, a conversion that failed: said in the project's words
        return None, str(err)
    except Exception as err:  # any other failure of a compiled backend means: not this one (eager is exact)
        return None, f"{title} failed ({type(err).__name__}: {str(err).strip() or 'no message'})"
    if not close:
        return None, f"{title} gives other logits than the model (largest difference {diff:.3g})"
    return compiled, ""


def select_backend(model: paddle.nn.Layer, backend: str, device: str,
                   image_size: int) -> tuple[paddle.nn.Layer, str]:
    """(what runs the forward passes, its backend name) for ``backend`` (one of ``BACKENDS``) on ``device``.

    'auto': on the CPU the first of onnxruntime, onednn that builds and matches the eager model, else ``eager``,
    with one note on stderr saying why each was skipped; on the GPU ``eager``. 'onednn'/'onnxruntime' raise
    ``DeviceError`` in one line where they cannot run or do not match.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "eager" or (backend == "auto" and device != "cpu"):
        return model, "eager"
    if device != "cpu":
        raise DeviceError(f"the {backend} backend runs on the CPU, not on {device}")
    skipped = []
    for name in (_COMPILED if backend == "auto" else (backend,)):
        compiled, problem = _compiled_or_problem(name, model, image_size)
        if compiled is not None:
            if skipped:
                print(f"note: running {name}; skipped {'; '.join(skipped)}", file=sys.stderr)
            return compiled, name
        if backend != "auto":
            raise DeviceError(problem)
        skipped.append(f"{name}: {problem}")
    print(f"note: running the eager model; skipped {'; '.join(skipped)}", file=sys.stderr)
    return model, "eager"
