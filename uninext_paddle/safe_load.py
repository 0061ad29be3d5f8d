"""Reading weights and checkpoint files that come from elsewhere, without letting them run anything.

``paddle.load`` is ``pickle.load``: a pickle can name any importable function and have it called while the file
is read (``os.system`` with a command, say). Every file the project reads that Paddle pickled (``.pdparams``
weights, ``.pdopt`` optimizer states, the resumable ``last.pdckpt``, and the random-generator blobs inside
older ones) goes through ``load_pickled``, whose unpickler admits only what such files hold:

- plain values and containers: numbers, strings, bytes, None, lists, tuples, dicts, sets, ``OrderedDict``;
- NumPy arrays, dtypes and scalars (of NumPy 1.x and 2.x);
- bytes as protocol 2 spells them (``_codecs.encode`` of latin-1 text, and nothing else);
- the two forms ``paddle.save`` gives tensors: ``(name, array)`` tuples (Paddle 2.1 and later) and Paddle 2.x's
  ``eval("data", {"data": array})`` for DenseTensors, whose only admitted call returns the array;
- Paddle's CPU/GPU random-generator state (``GeneratorState``, in training states of format 1 and 2), read as
  its plain numbers: no Paddle object is built from the file.

Anything else (a function, a class, any other module's object) is refused with a ``CheckpointError`` naming the
file and the object, before it is called. What comes back is what ``paddle.load(path, return_numpy=True)``
returns for such a file: tensors as NumPy arrays, big parameters that Paddle split reassembled, Paddle 2.0's
``StructuredToParameterName@@`` table dropped. ``.safetensors`` files (the ``safetensors`` package, which cannot
hold code) are read by ``load_weights_file`` too.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any

import numpy as np

from .errors import CheckpointError
from .fileio import atomic_write

__all__ = ["SAFETENSORS_SUFFIX", "GeneratorStateRecord", "load_pickled", "loads_pickled", "load_weights_file",
           "save_safetensors"]

SAFETENSORS_SUFFIX = ".safetensors"
_NAME_TABLE = "StructuredToParameterName@@"  # Paddle 2.0's structured name -> parameter name table
_BIG_PARAMETERS = "UnpackBigParamInfor@@"  # Paddle's record of parameters saved in slices (typo is Paddle's)


class GeneratorStateRecord:
    """Paddle's ``GeneratorState`` as read from a pickle: its state tuple (device, seed, offset, the engine's
    state as character codes), kept as plain data. ``train_state.restore_rng`` builds the generator state
    from it."""

    def __init__(self) -> None:
        self.state: tuple = ()

    def __setstate__(self, state: tuple) -> None:
        self.state = tuple(state)


def _dense_tensor(*args: Any) -> Any:
    """Paddle 2.x pickled a DenseTensor as ``eval("data", {"data": array})``: that call, and only that one."""
    if len(args) == 2 and args[0] == "data" and isinstance(args[1], dict) and set(args[1]) == {"data"}:
        return args[1]["data"]
    raise pickle.UnpicklingError(f"builtins.eval called with {str(args[0] if args else '')[:60]!r}")


def _latin1_bytes(*args: Any) -> bytes:
    """Protocol 2 pickles written by Python 3 spell bytes (an array's data) as ``_codecs.encode(text, "latin1")``:
    that call, and only that one."""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise pickle.UnpicklingError("refused _codecs.encode of something other than latin-1 text")


def _numpy_objects() -> dict[tuple[str, str], Any]:
    """NumPy's pickling entry points under the module names of NumPy 1.x (``numpy.core``) and 2.x
    (``numpy._core``)."""
    from numpy._core import multiarray, numeric

    objects: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        objects[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        objects[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        objects[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return objects


_ADMITTED: dict[tuple[str, str], Any] = {
    **{(module, kind.__name__): kind for module in ("builtins", "__builtin__")
       for kind in (tuple, list, dict, set, frozenset, bytearray, complex)},
    ("builtins", "eval"): _dense_tensor, ("__builtin__", "eval"): _dense_tensor,
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **_numpy_objects(),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose globals are only the ``_ADMITTED`` objects (and Paddle's GeneratorState, as a record)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ADMITTED:
            return _ADMITTED[(module, name)]
        if name == "GeneratorState" and (module == "paddle" or module.startswith("paddle.")):
            return GeneratorStateRecord
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def loads_pickled(blob: bytes, where: str) -> Any:
    """The data in pickle ``blob`` (read from ``where``, for messages), admitting only what ``_DataOnlyUnpickler``
    admits. ``CheckpointError`` naming the first object it would not build (before anything is called), or
    saying that the pickle is damaged."""
    unpickler = _DataOnlyUnpickler(io.BytesIO(blob), encoding="latin1")  # Paddle's encoding (Python 2 pickles)
    try:
        return unpickler.load()
    except pickle.UnpicklingError as err:
        message = str(err)
        if message.startswith(("refused ", "builtins.eval called")):
            raise CheckpointError(f"{where} holds {message.removeprefix('refused ')}, which loading would call: "
                                  "refused (weights and checkpoint files hold only arrays, numbers, strings and "
                                  "plain containers; see the README on files from elsewhere)") from None
        problem: Exception = err
    except Exception as err:  # a damaged pickle raises many types (EOFError, ValueError, MemoryError, ...)
        problem = err
    raise CheckpointError(f"{where} is not a readable Paddle file ({type(problem).__name__}: {problem}); is it "
                          "truncated?") from problem


def _as_numpy(obj: Any) -> Any:
    """``obj`` with Paddle's ``(name, array)`` tensor tuples replaced by their arrays, as ``paddle.load(...,
    return_numpy=True)`` gives them."""
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return obj[1]
    if isinstance(obj, dict):
        converted = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        for key, value in obj.items():
            converted[key] = _as_numpy(value)
        return converted
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_numpy(value) for value in obj)
    return obj


def _reassembled(obj: Any) -> Any:
    """A state dict with the parameters that ``paddle.save`` split into slices put back together (Paddle's
    ``_pack_loaded_dict``) and Paddle 2.0's name table dropped."""
    if not isinstance(obj, dict):
        return obj
    if _BIG_PARAMETERS in obj:
        for key, info in obj[_BIG_PARAMETERS].items():
            obj[key] = np.concatenate([obj.pop(part) for part in info["slices"]]).reshape(info["OriginShape"])
        del obj[_BIG_PARAMETERS]
    obj.pop(_NAME_TABLE, None)
    return obj


def load_pickled(path: str, what: str = "checkpoint") -> Any:
    """The data in the Paddle-pickled file at ``path`` (``what`` it is, for messages), NumPy arrays for tensors;
    nothing in the file is run. ``CheckpointError`` when it is missing, unreadable, or holds anything but data
    (naming the object it would have called, e.g. ``posix.system``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as err:
        raise CheckpointError(f"cannot read {what} {path}: {err.strerror or err}") from err
    obj = loads_pickled(blob, f"{what} {path}")
    try:
        return _reassembled(_as_numpy(obj))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{what} {path} has damaged split parameters ({type(err).__name__}: {err})") from err


def load_weights_file(path: str, what: str = "checkpoint") -> Any:
    """The contents of a weights or training-state file: a ``.safetensors`` file (a flat dict of arrays) or a
    Paddle-pickled one (``load_pickled``). ``CheckpointError`` when missing, unreadable or refused."""
    if not path.endswith(SAFETENSORS_SUFFIX):
        return load_pickled(path, what)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    from safetensors.numpy import load_file  # imported when needed: the package is small but optional here

    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError, OSError, ...
        raise CheckpointError(f"{what} {path} is not a readable safetensors file ({type(err).__name__}: "
                              f"{err})") from err


def save_safetensors(state: dict[str, Any], path: str) -> None:
    """``state`` (name -> tensor or array) as a ``.safetensors`` file at ``path``, atomically."""
    from safetensors.numpy import save_file

    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in state.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp))
