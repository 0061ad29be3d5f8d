"""CPU process settings that make Paddle's eager CPU kernels faster without touching the model's math.

Four costs outside the model code dominate Paddle 3.3.1's CPU runs (measurements: BENCHMARKS.md, "Why the
fast paths exist" and "Training step vs PyTorch"):

- **MKL's vendor dispatch.** Paddle's CPU wheel does its GEMMs in Intel MKL (``libmklml_intel.so``), which
  on AMD processors takes a generic SSE code path, much slower than its AVX2 path on the same core.
  ``MKL_DEBUG_CPU_TYPE=5`` makes this MKL (older than 2020.1, which still reads it) take the AVX2 path.
  Paddle loads MKL on the first GEMM, so the variable works when set before that, even after ``import
  paddle``. Only set on AMD processors that have AVX2 and FMA (elsewhere it would pick instructions the
  processor lacks), and never over a value the user set.
- **Page faults of fresh tensors.** Paddle's CPU allocator hands every tensor's buffer to ``malloc``, and
  glibc serves large requests with a new ``mmap`` and unmaps them on free, so every activation of a forward
  pass is faulted in page by page again. With ``mallopt(M_MMAP_MAX, 0)`` and a high ``M_TRIM_THRESHOLD``
  freed buffers stay in the heap for reuse; the price is that the process keeps its peak memory.
- **Lazy transposes.** With ``FLAGS_use_stride_kernel`` (Paddle's default) a transpose returns a strided view
  and the next op copies it through a generic strided-copy kernel, far slower than a plain copy; with the
  flag off, transposes copy at once through Paddle's transpose kernel (fast up to 6 dims, which is why the
  model's window transposes have at most 5). Views then no longer share memory with their source, which
  nothing here relies on.
- **One math thread.** Paddle runs its math library (MKL, through Intel's OpenMP) on one thread unless told
  otherwise: importing Paddle sets ``OMP_NUM_THREADS=1`` when it is unset. PyTorch takes every core.
  ``math_threads`` picks the CPUs this process may use, shared among the training processes of this machine, or
  the user's own ``OMP_NUM_THREADS``, which the scripts read before they import Paddle (``import paddle`` would
  hide it). OpenMP's idle threads wait 1 ms (``KMP_BLOCKTIME=1``) rather than its default 200 ms spinning: on a
  machine whose cores other processes also use (data loader workers, other jobs), spinning threads steal the
  time the working ones need.

Different GEMM kernels and thread counts sum in another order: logits move by float rounding (~1e-7), no more.
The scripts apply these on the CPU (``tune_cpu_runtime(...)`` after selecting the device); set
``UNINEXT_CPU_TUNING=0`` to run Paddle as is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import paddle

__all__ = ["OPT_OUT_VARIABLE", "read_cpuinfo", "cpu_field", "usable_cpus", "mkl_avx2_wanted", "keep_freed_memory",
           "math_threads", "tune_cpu_runtime"]

OPT_OUT_VARIABLE = "UNINEXT_CPU_TUNING"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_TRIM_THRESHOLD_BYTES = 1 << 30  # mallopt takes an int: the largest power of two under 2**31


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_field(cpuinfo: str, name: str) -> str:
    """The first processor's ``name`` field ("vendor_id", "flags", ...) in /proc/cpuinfo's text, "" if absent."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def mkl_avx2_wanted(cpuinfo: str, environ: dict[str, str] | os._Environ) -> bool:
    """Whether to set ``MKL_DEBUG_CPU_TYPE=5``: an AMD processor (``cpuinfo``: /proc/cpuinfo's text) with AVX2
    and FMA, and the user has not set the variable."""
    if "MKL_DEBUG_CPU_TYPE" in environ:
        return False
    return (cpu_field(cpuinfo, "vendor_id") == "AuthenticAMD"
            and {"avx2", "fma"} <= set(cpu_field(cpuinfo, "flags").split()))


def keep_freed_memory() -> bool:
    """glibc only: serve every allocation from the heap and never trim it, so freed tensors' pages are reused
    instead of unmapped and faulted in again. Returns whether it applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


def math_threads(user_omp_threads: str | None, environ: dict[str, str] | os._Environ, usable_cpus: int) -> int:
    """How many threads Paddle's math library should use: the user's ``OMP_NUM_THREADS`` (``user_omp_threads``,
    read before Paddle was imported) when it is a positive number, else the ``usable_cpus`` (those this process
    may run on) divided among the training processes of this machine (``PADDLE_LOCAL_SIZE``, set by
    ``paddle.distributed.launch``); at least 1. The launcher's processes inherit the launcher's own
    ``OMP_NUM_THREADS=1`` (its import of Paddle set it), so under the launcher 1 counts as unset."""
    try:
        local_size = max(1, int(environ.get("PADDLE_LOCAL_SIZE", "1")))
    except ValueError:
        local_size = 1
    try:
        wanted = int(user_omp_threads or "")
    except ValueError:
        wanted = 0
    if wanted > 1 or (wanted == 1 and "PADDLE_LOCAL_SIZE" not in environ):
        return wanted
    return max(1, usable_cpus // local_size)


def tune_cpu_runtime(user_omp_threads: str | None) -> list[str]:
    """Apply the settings above unless ``UNINEXT_CPU_TUNING=0``; return what was applied (for the log).

    ``user_omp_threads``: the ``OMP_NUM_THREADS`` the user set, read before Paddle was imported (None: unset).
    Call before the first matmul of the process (the scripts do, after selecting the device); later, the MKL
    and OpenMP waiting settings no longer take effect (harmless) and the others still do.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return []
    applied = []
    if mkl_avx2_wanted(read_cpuinfo(), os.environ):
        os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
        applied.append("MKL AVX2 path on AMD (MKL_DEBUG_CPU_TYPE=5)")
    if keep_freed_memory():
        applied.append("glibc malloc keeps freed memory (no mmap, no trim)")
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    applied.append("transposes copy at once (FLAGS_use_stride_kernel=False)")
    threads = math_threads(user_omp_threads, os.environ, usable_cpus())
    if threads > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read when OpenMP starts, at the first GEMM
        os.environ.setdefault("KMP_BLOCKTIME", "1")
        paddle.base.core.set_num_threads(threads)
        applied.append(f"{threads} math threads (KMP_BLOCKTIME={os.environ['KMP_BLOCKTIME']})")
    return applied
