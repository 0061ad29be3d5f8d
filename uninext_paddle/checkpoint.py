"""Checkpoint files: atomic writes, loading with clear errors, and matching weights to a UniNeXt variant.

Model files are plain ``state_dict``s saved with ``paddle.save``, the notebook's format (``best_model.pdparams``
and friends), so files written by the notebook and by this project are interchangeable.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from typing import Any, Callable

import numpy as np
import paddle

from .cli import fail
from .model import VARIANTS

__all__ = ["atomic_write", "atomic_write_json", "atomic_save", "load_file", "model_state_of", "infer_variant",
           "check_state_dict",
           "load_weights", "LAST_CHECKPOINT", "TRAINING_KEYS", "rng_states", "restore_rng_states",
           "load_training_checkpoint"]


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then ``os.replace`` it onto ``path``: a crash, kill or
    Ctrl-C while writing leaves the previous file (or none), never a truncated one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(obj: Any, path: str) -> None:
    """``obj`` as indented JSON at ``path``, atomically (see ``atomic_write``)."""
    text = json.dumps(obj, indent=1)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_save(obj: Any, path: str) -> None:
    """``paddle.save(obj, path)``, atomically (see ``atomic_write``)."""
    atomic_write(path, lambda tmp: paddle.save(obj, tmp))


def load_file(path: str, what: str = "checkpoint") -> Any:
    """``paddle.load(path)``, with one clear line when the file is missing or unreadable."""
    if not os.path.isfile(path):
        fail(f"{what} not found: {path}")
    try:
        return paddle.load(path)
    except Exception as err:  # paddle.load raises pickle, EOF, ValueError, RuntimeError... on a damaged file
        fail(f"{what} {path} is not a readable Paddle file ({type(err).__name__}: {err}); is it truncated?")


def model_state_of(obj: Any, path: str) -> dict[str, Any]:
    """The model ``state_dict`` in a loaded file: a plain state_dict (notebook, best/final files) or the
    ``model`` entry of a resumable training checkpoint."""
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "head.weight" not in state or "merge0.conv.weight" not in state:
        fail(f"{path} does not hold UniNeXt weights (no head.weight / merge0.conv.weight)")
    return state


def infer_variant(state: dict[str, Any], path: str = "checkpoint") -> tuple[str, int]:
    """(variant, num_classes) of UniNeXt weights, from stage 1's width and the head's shape."""
    embed_dim = int(state["merge0.conv.weight"].shape[0])
    variant = next((name for name, cfg in VARIANTS.items() if cfg["embed_dim"] == embed_dim), None)
    if variant is None:
        widths = ", ".join(f"{name}: {cfg['embed_dim']}" for name, cfg in VARIANTS.items())
        fail(f"{path} has embed_dim {embed_dim}, which is no UniNeXt variant ({widths})")
    return variant, int(state["head.weight"].shape[1])


def check_state_dict(model: paddle.nn.Layer, state: dict[str, Any], path: str, variant: str) -> None:
    """Fail with one line naming what does not match unless ``state`` fits ``model`` key for key, shape for shape."""
    expected = {name: list(value.shape) for name, value in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    mismatched = [f"{name} {list(state[name].shape)} vs {shape}" for name, shape in expected.items()
                  if name in state and list(state[name].shape) != shape]
    if missing or unexpected or mismatched:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(mismatched)} of another shape (e.g. {mismatched[0]})" if mismatched else ""]
        fail(f"{path} does not fit UniNeXt-{variant}: " + ", ".join(p for p in problems if p)
             + "; pick the variant it was trained with (--variant) or another checkpoint")


def load_weights(model: paddle.nn.Layer, state: dict[str, Any], path: str, variant: str) -> None:
    """Check ``state`` against ``model`` (see ``check_state_dict``), then load it."""
    check_state_dict(model, state, path, variant)
    model.set_state_dict(state)


LAST_CHECKPOINT = "last.pdckpt"
# What train.py's resumable checkpoint holds (nanoGPT-style, one dict): "epoch" is the epoch in progress and
# "step" the batches of it already done (0 at an epoch boundary), "meter" that epoch's running sums.
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "meter", "best_acc", "records", "rng", "config")


def rng_states() -> np.ndarray:
    """Paddle's (current device), NumPy's and Python's global RNG states, pickled into a uint8 array: the one
    form that goes through ``paddle.save``/``paddle.load`` unchanged (they reject bytes and uint32 arrays)."""
    states = {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    return np.frombuffer(pickle.dumps(states), dtype=np.uint8)


def restore_rng_states(blob: Any) -> None:
    """Set the global RNGs to what ``rng_states`` captured."""
    states = pickle.loads(np.asarray(blob, dtype=np.uint8).tobytes())
    paddle.set_rng_state(states["paddle"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def load_training_checkpoint(path: str, variant: str) -> dict[str, Any]:
    """A resumable checkpoint written by train.py, checked to be one and to be of ``variant``."""
    obj = load_file(path, "resume checkpoint")
    missing = [key for key in TRAINING_KEYS if not isinstance(obj, dict) or key not in obj]
    if missing:
        fail(f"{path} is not a resumable training checkpoint (no {', '.join(missing)}); "
             f"--resume takes the {LAST_CHECKPOINT} that train.py writes in --work-dir")
    trained = obj["config"].get("variant")
    if trained != variant:
        fail(f"{path} is a UniNeXt-{trained} checkpoint but --variant is {variant}; "
             f"resume it with --variant {trained}")
    return obj
