"""Where the scripts run: device selection, mixed precision (``paddle.amp``) and the data-parallel process group.

CPU, one GPU, or several GPUs (or CPU processes over gloo) started by ``python -m paddle.distributed.launch``.
Where Paddle 3.3.1 would quietly run somewhere else than asked, this module raises ``DeviceError`` instead:
``paddle.amp.auto_cast`` only acts on CUDA/XPU/custom devices (on the CPU it warns and does nothing) and runs
float32 on GPUs too old for the chosen precision; ``init_parallel_env`` on a CUDA build moves every process to
its GPU unless the backend is gloo. A CPU build on a machine with an NVIDIA GPU gets a one-line note.
The CPU's process settings (``runtime.py``) are the scripts' to apply, not this module's.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from typing import ContextManager, Sequence

import numpy as np
import paddle
import paddle.distributed as dist

from .errors import ConfigError, DeviceError

__all__ = ["DEVICES", "AMP_MODES", "select_device", "cpu_build_on_gpu_machine_note", "amp_context",
           "make_grad_scaler", "world_size", "rank", "is_main_process", "init_distributed", "all_reduce_sum"]

DEVICES = ("auto", "cpu", "gpu")
AMP_MODES = ("off", "fp16", "bf16")
_AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
# The compute capability (major) below which Paddle 3.3.1's autocast on a CUDA GPU warns and runs float32
# (amp/auto_cast.py: _is_gpu_float16_supported, _is_gpu_bfloat16_supported; bf16 there also wants CUDA 11, which
# every Paddle 3.3.1 GPU build has). ROCm builds are exempt there, so here too.
_AMP_MIN_CAPABILITY = {"fp16": 7, "bf16": 8}


def _gpu_available() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def select_device(name: str) -> str:
    """``paddle.set_device`` for ``name`` ('auto': the GPU when Paddle has CUDA and sees one, else the CPU);
    return the device string Paddle reports ('cpu', 'gpu:0', ...). Under ``paddle.distributed.launch``, 'gpu'
    is the GPU the launcher assigned to this process."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "gpu" and not _gpu_available():
        why = "sees no GPU" if paddle.is_compiled_with_cuda() else "is the CPU build (see README: GPU)"
        raise DeviceError(f"a GPU was asked for, but this Paddle {why}; use the CPU")
    paddle.set_device("gpu" if name == "gpu" or (name == "auto" and _gpu_available()) else "cpu")
    return paddle.device.get_device()


def _nvidia_gpus() -> list[str]:
    """The names of the GPUs ``nvidia-smi -L`` lists ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-...)"); empty
    without nvidia-smi or when it fails (no driver loaded, no device)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?$", listing, flags=re.MULTILINE)


def cpu_build_on_gpu_machine_note() -> str | None:
    """One line for the scripts to print at start-up when nvidia-smi answers with a GPU but this Paddle is the
    CPU build (so everything runs on the CPU), with the command that installs the GPU build; None otherwise."""
    if paddle.is_compiled_with_cuda():
        return None
    gpus = _nvidia_gpus()
    if not gpus:
        return None
    count = "an NVIDIA GPU" if len(gpus) == 1 else f"{len(gpus)} NVIDIA GPUs"
    return (f"this machine has {count} ({', '.join(dict.fromkeys(gpus))}), but Paddle {paddle.__version__} is "
            "the CPU build and runs on the CPU only; `bash install.sh` installs the GPU build for its driver")


def _check_amp(amp: str, device: str) -> None:
    if amp not in AMP_MODES:
        raise ConfigError(f"unknown mixed precision {amp!r}: choose one of {', '.join(AMP_MODES)}")
    if amp != "off" and not device.startswith("gpu"):
        raise DeviceError(f"mixed precision {amp} needs a GPU: Paddle {paddle.__version__} has no {amp} autocast "
                          f"on {device} (paddle.amp.auto_cast is a no-op there); use off")
    if amp != "off" and not paddle.is_compiled_with_rocm():
        # the query Paddle's autocast makes on each call, for the device it runs on
        major, minor = paddle.device.cuda.get_device_capability(device)
        if major < _AMP_MIN_CAPABILITY[amp]:
            raise DeviceError(f"mixed precision {amp} needs a GPU of compute capability "
                              f"{_AMP_MIN_CAPABILITY[amp]}.0 or newer, and {device} "
                              f"({paddle.device.cuda.get_device_name(device)}) is {major}.{minor}: Paddle "
                              f"{paddle.__version__}'s autocast would run float32 there; use "
                              f"{'fp16 or off' if major >= _AMP_MIN_CAPABILITY['fp16'] else 'off'}")


def amp_context(amp: str, device: str) -> ContextManager:
    """The forward pass's autocast: a no-op for 'off', ``paddle.amp.auto_cast`` at level O1 in float16 or
    bfloat16 otherwise (a GPU of compute capability 7.0 for fp16, 8.0 for bf16: see module doc)."""
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


def init_distributed(device: str) -> None:
    """Join the launcher's process group when there is more than one process: NCCL on GPUs, gloo on the CPU.

    ``device`` is what ``select_device`` returned. Paddle 3.3.1's ``init_parallel_env`` reads its backend from
    ``PADDLE_DISTRI_BACKEND`` (the launcher sets 'gloo' only when it assigned no GPU); with 'auto' on a CUDA
    build it picks NCCL and makes this process's GPU the default place, whatever ``paddle.set_device`` said, so a
    CPU run on a GPU machine would train on the GPU. The CPU therefore asks for gloo, and the place afterwards
    must still be ``device``."""
    if world_size() == 1:
        return
    if device == "cpu":
        os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"
    dist.init_parallel_env()
    placed = paddle.device.get_device()
    if placed != device:
        backend = os.environ.get("PADDLE_DISTRI_BACKEND", "auto")
        raise DeviceError(f"the process group put this process on {placed}, not on the selected {device} "
                          f"(PADDLE_DISTRI_BACKEND={backend}: gloo runs on the CPU, auto and nccl on the GPU)")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (unchanged in a single process)."""
    if world_size() == 1:
        return [float(v) for v in values]
    tensor = paddle.to_tensor(np.asarray(values, dtype=np.float64))
    dist.all_reduce(tensor)
    return tensor.numpy().tolist()
