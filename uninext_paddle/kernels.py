"""The project's C++ CPU kernels (``csrc/cpu_kernels.cc``, built by install.sh as the module
``uninext_cpu_kernels``): whether they can run here, and the operators themselves.

Paddle 3.3.1's CPU build runs LayerNorm and GELU, forward and backward, on one thread in several passes over the
tensor (LayerNorm's backward alone was a sixth of a UniNeXt-T train step at 32x32), and applies Adam's L2 weight
decay as two operators per parameter. These kernels do each in one pass on the threads of Paddle's math library
(BENCHMARKS.md: "Training step vs PyTorch"). LayerNorm and GELU give the same numbers to float rounding; the L2
decay is Paddle's, bit for bit.

They are used only where they were built from this checkout's source, for a CPU with AVX2 and FMA (the build's
``-march=x86-64-v3``); elsewhere ``unavailable_reason`` says why, for the scripts' one-line note, and Paddle's own
kernels run.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import warnings
from types import ModuleType

import paddle

from .runtime import cpu_field, read_cpuinfo

__all__ = ["MODULE", "SOURCE", "available", "unavailable_reason", "layer_norm", "gelu", "transpose", "l2_decay"]

MODULE = "uninext_cpu_kernels"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "cpu_kernels.cc")
_NEEDED_CPU_FLAGS = {"avx2", "fma"}


def _source_version() -> str:
    """The version ``csrc/setup.py`` gives a build of this checkout's source."""
    with open(SOURCE, "rb") as f:
        return "1.0+" + hashlib.sha256(f.read()).hexdigest()[:16]


@functools.cache
def _loaded() -> tuple[ModuleType | None, str | None]:
    """(the kernels' module, None), or (None, why they cannot run here)."""
    rebuild = "bash install.sh builds them"
    missing = _NEEDED_CPU_FLAGS - set(cpu_field(read_cpuinfo(), "flags").split())
    if missing:
        return None, f"this CPU lacks {' and '.join(sorted(missing))}, which they are built for"
    try:
        built = importlib.metadata.version(MODULE)
    except importlib.metadata.PackageNotFoundError:
        return None, f"they are not built (install.sh builds them where a C++ compiler exists); {rebuild}"
    if built != _source_version():
        return None, f"they were built from another version of {os.path.relpath(SOURCE)}; {rebuild}"
    with warnings.catch_warnings():  # the module Paddle generates imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(MODULE), None
        except (ImportError, OSError, RuntimeError) as err:
            return None, f"they do not load ({type(err).__name__}: {err}); {rebuild}"


def available() -> bool:
    """Whether the C++ kernels can run in this process."""
    return _loaded()[0] is not None


def unavailable_reason() -> str | None:
    """Why the C++ kernels cannot run here (one clause), or None when they can."""
    return _loaded()[1]


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
    """LayerNorm over the last axis of a float32 CPU tensor x [..., C] with weight and bias [C]."""
    return _loaded()[0].uninext_layer_norm(x, weight, bias, epsilon)[0]


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """The exact (erf) GELU of a float32 CPU tensor."""
    return _loaded()[0].uninext_gelu(x)


def transpose(x: paddle.Tensor, perm: list[int]) -> paddle.Tensor:
    """``x.transpose(perm)`` of a float32 CPU tensor, on the math library's threads (its gradient too)."""
    return _loaded()[0].uninext_transpose(x, perm)


def l2_decay(grads: list[paddle.Tensor], params: list[paddle.Tensor], coeff: float) -> list[paddle.Tensor]:
    """``grad + param * coeff`` for every pair of float32 CPU tensors, in place: Paddle's ``L2Decay`` (scale, then
    add_n), bit for bit, in one call. Returns ``grads``."""
    _loaded()[0].uninext_l2_decay(grads, params, coeff)
    return grads
