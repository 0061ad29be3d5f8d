"""Where the scripts run: device selection, mixed precision (``paddle.amp``) and the data-parallel process group.

CPU, one GPU, or several GPUs (or CPU processes over gloo) started by ``python -m paddle.distributed.launch``.
Paddle 3.3.1's ``paddle.amp.auto_cast`` only acts on CUDA/XPU/custom devices (on CPU it warns and does nothing),
so ``--amp`` other than ``off`` needs a GPU; asking for it on CPU is an error rather than a silent fp32 run.
On the CPU, ``select_device`` also applies ``runtime.tune_cpu_runtime`` (MKL's AVX2 path on AMD, malloc that
keeps freed memory): same numbers up to float rounding, faster kernels.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Sequence

import numpy as np
import paddle
import paddle.distributed as dist

from .cli import fail
from .runtime import tune_cpu_runtime

__all__ = ["DEVICES", "AMP_MODES", "select_device", "amp_context", "make_grad_scaler", "world_size", "rank",
           "is_main_process", "init_distributed", "all_reduce_sum"]

DEVICES = ("auto", "cpu", "gpu")
AMP_MODES = ("off", "fp16", "bf16")
_AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def _gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def select_device(name: str) -> str:
    """``paddle.set_device`` for ``name`` ('auto': the GPU when Paddle has CUDA and sees one, else the CPU);
    return the device string Paddle reports ('cpu', 'gpu:0', ...). Under ``paddle.distributed.launch``, 'gpu'
    is the GPU the launcher assigned to this process. On the CPU, before any matmul runs, the process settings
    of ``runtime.py`` are applied."""
    if name not in DEVICES:
        fail(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "gpu" and not _gpu_available():
        why = "sees no GPU" if paddle.is_compiled_with_cuda() else "is the CPU build (see README: GPU)"
        fail(f"--device gpu asked for, but this Paddle {why}; use --device cpu or auto")
    paddle.set_device("gpu" if name == "gpu" or (name == "auto" and _gpu_available()) else "cpu")
    device = paddle.device.get_device()
    if device == "cpu":
        tune_cpu_runtime()
    return device


def _check_amp(amp: str, device: str) -> None:
    if amp not in AMP_MODES:
        fail(f"unknown --amp {amp!r}: choose one of {', '.join(AMP_MODES)}")
    if amp != "off" and not device.startswith("gpu"):
        fail(f"--amp {amp} needs a GPU: Paddle {paddle.__version__} has no {amp} autocast on {device} "
             "(paddle.amp.auto_cast is a no-op there); use --amp off")


def amp_context(amp: str, device: str) -> ContextManager:
    """The forward pass's autocast: a no-op for 'off', ``paddle.amp.auto_cast`` at level O1 in float16 or
    bfloat16 otherwise (GPU only, see module doc)."""
    _check_amp(amp, device)
    if amp == "off":
        return contextlib.nullcontext()
    return paddle.amp.auto_cast(enable=True, level="O1", dtype=_AMP_DTYPES[amp])


def make_grad_scaler(amp: str, device: str) -> paddle.amp.GradScaler | None:
    """Dynamic loss scaling for fp16 (its range is too narrow for small gradients); None for bf16 and off,
    which have float32's exponent range and need none."""
    _check_amp(amp, device)
    return paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15) if amp == "fp16" else None


def world_size() -> int:
    """Number of data-parallel processes (1 without ``paddle.distributed.launch``)."""
    return dist.get_world_size()


def rank() -> int:
    """This process's rank (0 without ``paddle.distributed.launch``)."""
    return dist.get_rank()


def is_main_process() -> bool:
    """Rank 0: the process that prints progress and writes files."""
    return rank() == 0


def init_distributed() -> None:
    """Join the launcher's process group (NCCL on GPU, gloo on CPU) when there is more than one process."""
    if world_size() > 1:
        dist.init_parallel_env()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (unchanged in a single process)."""
    if world_size() == 1:
        return [float(v) for v in values]
    tensor = paddle.to_tensor(np.asarray(values, dtype=np.float64))
    dist.all_reduce(tensor)
    return tensor.numpy().tolist()
