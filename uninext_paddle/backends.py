"""What runs the forward passes of evaluate.py and visualize.py: the backends, and the choice among them.

- ``eager``: the dynamic model (on the GPU: cuDNN).
- ``onednn``: the exported program (``export.export_model``) run by Paddle Inference with oneDNN on the CPU.
- ``onnxruntime``: that program converted to ONNX by paddle2onnx and run by ONNX Runtime's CPU provider, in one of
  two layouts: one session on every core, or one single-threaded session per core (up to ``ORT_MAX_SESSIONS``),
  each running its share of a batch at the same time (``OnnxRuntimeModel``). Which is faster depends on the CPU
  and the model's shapes: many small operators keep one session's threads waiting on each other.

A compiled backend is checked against the eager model on a seeded probe batch before it is used. On the CPU,
``auto`` builds every compiled backend (from one export), keeps those that match the eager model, times each on
a few images of the size they will run, and runs the fastest; ``onnxruntime`` does the same between its two
layouts. One line on stderr says what runs, its speed against the others', and why any was skipped. On the GPU,
``auto`` is the eager model. Naming a compiled backend insists on it: ``DeviceError`` where it cannot run or does
not match.
"""
from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import paddle

from .errors import ConfigError, DeviceError, UninextError
from .export import export_model, native_output_silenced, onnx_program_bytes, onnxruntime_session
from .runtime import usable_cpus

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["BACKENDS", "BACKENDS_HELP", "ORT_MAX_SESSIONS", "OneDNNModel", "compile_onednn", "OnnxRuntimeModel",
           "compile_onnxruntime", "probe_difference", "select_backend"]

BACKENDS = ("auto", "eager", "onednn", "onnxruntime")
BACKENDS_HELP = ("what runs the forward passes: eager (the dynamic model), onednn (Paddle Inference with oneDNN, "
                 "CPU), onnxruntime (the model converted to ONNX, run by ONNX Runtime, CPU); auto: on the CPU the "
                 "fastest compiled backend that matches the eager model here, else eager")
# Paddle 3.3.1's oneDNN fusion passes that break this model: matmul -> transpose -> reshape miscomputes the
# attention of maps that pad to one window (at 32x32 input, stages 2-4: logits off by ~0.3), and folding a reshape
# into the op before it leaves the window transpose's 5 axes on a 4-D tensor (the predictor does not build).
# Without them the program matches the eager model, at no measurable cost at 224.
_BROKEN_ONEDNN_PASSES = ("matmul_transpose_reshape_fuse_pass", "operator_reshape_onednn_fuse_pass")
# Sessions of the per-core layout: each holds its own copy of the weights, so many-core machines get a few sessions
# of several threads each rather than one per core.
ORT_MAX_SESSIONS = 4
_PROBE_BATCH = 2
_PROBE_RTOL = 1e-4  # largest logit difference allowed, relative to the largest logit: float rounding, no more
_TIMED_RUNS = 2  # timed forward passes per candidate (after one untimed), on 2 images per session of the fastest


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


def compile_onednn(model: paddle.nn.Layer, image_size: int, prefix: str | None = None) -> OneDNNModel:
    """``model`` exported for ``image_size`` inputs (``export_model``, to a temporary folder, unless ``prefix``
    names an export of it) and loaded by Paddle Inference with oneDNN on the usable CPUs, run once on one image,
    quietly (Paddle's C++ side prints pass diagnostics while it compiles and on the first run)."""
    with native_output_silenced(), tempfile.TemporaryDirectory(prefix="uninext-onednn-") as folder:
        prefix = prefix or export_model(model, folder, image_size)
        config = paddle.inference.Config(f"{prefix}.json", f"{prefix}.pdiparams")
        config.disable_gpu()
        config.enable_onednn()
        for name in _BROKEN_ONEDNN_PASSES:
            config.delete_pass(name)
        config.set_cpu_math_library_num_threads(usable_cpus())
        config.disable_glog_info()
        compiled = OneDNNModel(paddle.inference.create_predictor(config))  # reads the files
        compiled(paddle.zeros([1, 3, image_size, image_size]))
    return compiled


class OnnxRuntimeModel(paddle.nn.Layer):
    """ONNX Runtime sessions called like the model: [B, 3, S, S] float32 -> logits [B, classes]. With several
    sessions a batch is split into as many parts, run at the same time (ONNX Runtime releases the GIL); the logits
    of an image do not depend on the rest of its batch. Inference only: no parameters, no gradients."""

    def __init__(self, sessions: list[onnxruntime.InferenceSession]) -> None:
        super().__init__()
        self._sessions = sessions
        self._input = sessions[0].get_inputs()[0].name
        self._pool = ThreadPoolExecutor(len(sessions)) if len(sessions) > 1 else None

    @property
    def layout(self) -> str:
        """"1 session x 2 threads", "2 sessions x 1 thread", ..."""
        threads = self._sessions[0].get_session_options().intra_op_num_threads or "all"
        count = len(self._sessions)
        return f"{count} session{'s' * (count > 1)} x {threads} thread{'s' * (threads != 1)}"

    def _run(self, session: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
        return session.run(None, {self._input: images})[0]

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        images = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if self._pool is None or len(images) < 2:
            return paddle.to_tensor(self._run(self._sessions[0], images))
        parts = np.array_split(images, min(len(self._sessions), len(images)))
        return paddle.to_tensor(np.concatenate(list(self._pool.map(self._run, self._sessions, parts))))


def compile_onnxruntime(model: paddle.nn.Layer, image_size: int, sessions: int = 1,
                        onnx: bytes | None = None) -> OnnxRuntimeModel:
    """``model`` as ONNX for ``image_size`` inputs (``onnx``, else converted in memory) loaded into ``sessions``
    ONNX Runtime sessions on the CPU: 1 on every core (ONNX Runtime's default threads, which sleep when idle: the
    data loader's workers need the cores), or several sharing the usable CPUs, each run once on one image.
    ``DeviceError`` when paddle2onnx or onnxruntime is missing or fails."""
    if onnx is None:
        with tempfile.TemporaryDirectory(prefix="uninext-onnx-") as folder:
            onnx = onnx_program_bytes(export_model(model, folder, image_size))
    threads = 0 if sessions == 1 else max(1, usable_cpus() // sessions)
    compiled = OnnxRuntimeModel([onnxruntime_session(onnx, threads, spinning=False) for _ in range(sessions)])
    compiled(paddle.zeros([1, 3, image_size, image_size]))
    return compiled


@paddle.no_grad()
def probe_difference(model: paddle.nn.Layer, compiled: paddle.nn.Layer, image_size: int) -> tuple[float, bool]:
    """(largest logit difference, within float rounding?) of ``compiled`` against the eager ``model`` on a seeded
    random probe batch [2, 3, ``image_size``, ``image_size``]."""
    probe = paddle.to_tensor(np.random.RandomState(0).standard_normal(
        (_PROBE_BATCH, 3, image_size, image_size)).astype(np.float32))
    expected, got = model(probe).numpy(), compiled(probe).numpy()
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    return diff, diff <= _PROBE_RTOL * float(np.abs(expected).max())


@paddle.no_grad()
def _images_per_second(runner: paddle.nn.Layer, image_size: int, batch: int) -> float:
    """The best of ``_TIMED_RUNS`` forward passes of ``runner`` on ``batch`` images, after an untimed one."""
    images = paddle.to_tensor(np.random.RandomState(1).standard_normal(
        (batch, 3, image_size, image_size)).astype(np.float32))
    runner(images)
    best = float("inf")
    for _ in range(_TIMED_RUNS):
        start = time.perf_counter()
        runner(images)
        best = min(best, time.perf_counter() - start)
    return batch / best


class _Candidates:
    """The compiled backends of one model and image size, built on demand from one export (and one ONNX
    conversion): (name, title, build) triples in the order they are tried."""

    def __init__(self, model: paddle.nn.Layer, image_size: int, folder: str) -> None:
        self.model, self.image_size, self.folder = model, image_size, folder
        self._prefix: str | None = None
        self._onnx: bytes | None = None

    def prefix(self) -> str:
        if self._prefix is None:
            self._prefix = export_model(self.model, self.folder, self.image_size)
        return self._prefix

    def onnx(self) -> bytes:
        if self._onnx is None:
            self._onnx = onnx_program_bytes(self.prefix())
        return self._onnx

    def of(self, backend: str) -> list[tuple[str, str, Callable[[], paddle.nn.Layer]]]:
        """The candidates of ``backend`` ("auto": all of them)."""
        layouts = sorted({1, min(ORT_MAX_SESSIONS, usable_cpus())})
        onnxruntime = [("onnxruntime", "ONNX Runtime", lambda n=n: compile_onnxruntime(
            self.model, self.image_size, n, self.onnx())) for n in layouts]
        onednn = [("onednn", "Paddle Inference with oneDNN",
                   lambda: compile_onednn(self.model, self.image_size, self.prefix()))]
        return {"auto": onnxruntime + onednn, "onnxruntime": onnxruntime, "onednn": onednn}[backend]


def _label(name: str, runner: paddle.nn.Layer) -> str:
    return f"{name} ({runner.layout})" if isinstance(runner, OnnxRuntimeModel) else name


def _built_and_checked(model: paddle.nn.Layer, image_size: int, title: str,
                       build: Callable[[], paddle.nn.Layer]) -> tuple[paddle.nn.Layer | None, str]:
    """(the compiled model, '') or (None, why it cannot be used): it fails to build or run, or its logits on the
    probe batch differ from the eager model's by more than float rounding."""
    try:
        compiled = build()
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

    'auto': on the CPU the fastest compiled backend that builds and matches the eager model (timed here), else
    ``eager``, with one note on stderr; on the GPU ``eager``. 'onednn'/'onnxruntime' raise ``DeviceError`` in one
    line where they cannot run or do not match.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "eager" or (backend == "auto" and device != "cpu"):
        return model, "eager"
    if device != "cpu":
        raise DeviceError(f"the {backend} backend runs on the CPU, not on {device}")
    usable, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="uninext-export-") as folder:
        for name, title, build in _Candidates(model, image_size, folder).of(backend):
            if name in skipped:  # another layout of a backend that failed to build
                continue
            compiled, problem = _built_and_checked(model, image_size, title, build)
            if compiled is None:
                skipped[name] = problem
            else:
                usable.append((name, compiled))
    if not usable:
        if backend != "auto":
            raise DeviceError(next(iter(skipped.values())))
        print(f"note: running the eager model; skipped {'; '.join(f'{n}: {p}' for n, p in skipped.items())}",
              file=sys.stderr)
        return model, "eager"
    timing_batch = _PROBE_BATCH * min(ORT_MAX_SESSIONS, usable_cpus())
    speeds = [(_images_per_second(compiled, image_size, timing_batch) if len(usable) > 1 else 0.0, name, compiled)
              for name, compiled in usable]
    speeds.sort(key=lambda entry: -entry[0])
    _, name, compiled = speeds[0]
    _say_which(speeds, skipped, timing_batch, image_size)
    return compiled, name


def _say_which(speeds: list[tuple[float, str, paddle.nn.Layer]], skipped: dict[str, str], batch: int,
               image_size: int) -> None:
    """The one line on what runs and why: its speed against the others' (when several matched) and what was
    skipped."""
    best, name, compiled = speeds[0]
    parts = [f"running {_label(name, compiled)}"]
    if len(speeds) > 1:
        others = ", ".join(f"{_label(n, c)} {s:.1f}" for s, n, c in speeds[1:])
        parts.append(f"the fastest that matches the eager model here: {best:.1f} images/s on {batch} "
                     f"{image_size}x{image_size} images ({others})")
    if skipped:
        parts.append("skipped " + "; ".join(f"{n}: {p}" for n, p in skipped.items()))
    if len(parts) > 1:
        print("note: " + "; ".join(parts), file=sys.stderr)
