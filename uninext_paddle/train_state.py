"""The resumable training state (``last.pdckpt``): what train.py saves after every epoch and at a stop, and how it
is put back. Saving and restoring live side by side here, with a format version.

The file is one dict (nanoGPT style) written with ``paddle.save``: ``version``, the model's ``state_dict`` (the
notebook's format), the optimizer's keyed by structured parameter names (``portable_optimizer_state``), the LR
scheduler, the fp16 grad scaler, ``epoch`` (the
epoch in progress) with ``meter`` (its running sums; ``meter["step"]`` batches of it are done), ``best_acc``, the
records, the random generators of every process, the run's config and ``extras`` (optional parts such as an EMA
of the weights, keyed by name). Version 1 is the layout before ``version`` existed; it still loads.
"""
from __future__ import annotations

import pickle
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from .errors import CheckpointError
from .fileio import atomic_save, load_paddle_file

__all__ = ["LAST_CHECKPOINT", "FORMAT_VERSION", "TrainingState", "capture_rng", "restore_rng", "cuda_generators",
           "portable_optimizer_state", "restore_optimizer_state"]

LAST_CHECKPOINT = "last.pdckpt"
FORMAT_VERSION = 2
_V1_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "meter", "best_acc", "records", "rng", "config")
_V2_KEYS = ("version", "model", "optimizer", "scheduler", "scaler", "epoch", "meter", "best_acc", "records", "rng",
            "config", "extras")


def cuda_generators() -> list[Any]:
    """Paddle's CUDA generators, one per visible GPU (none on a CPU build or machine)."""
    if not paddle.is_compiled_with_cuda():
        return []
    core = paddle.base.core
    return [core.default_cuda_generator(i) for i in range(core.get_cuda_device_count())]


def capture_rng() -> dict[str, Any]:
    """This process's random generators: Paddle's CPU generator and every CUDA generator apart (their count
    depends on the GPUs visible), NumPy's and Python's global states."""
    return {"cpu": paddle.get_rng_state("cpu")[0], "cuda": [g.get_state() for g in cuda_generators()],
            "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(states: dict[str, Any]) -> str | None:
    """Put back what ``capture_rng`` captured, as far as it fits this machine: the CPU, NumPy and Python states
    always; the CUDA states of the GPUs both machines have. Returns what could not be restored (for one line in
    the log), or None when everything was."""
    paddle.set_rng_state([states["cpu"]], "cpu")
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    generators, saved = cuda_generators(), states["cuda"]
    for generator, state in zip(generators, saved):
        generator.set_state(state)
    if len(saved) == len(generators):
        return None
    return (f"the random generators of {len(saved)} GPU(s) were saved and {len(generators)} are visible: "
            f"{abs(len(saved) - len(generators))} could not be restored, so drop-path masks on them differ from "
            "the uninterrupted run")


def _renamed(state: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``state`` with every key ``<old>_<accumulator>`` of a parameter ``old`` in ``names`` renamed to
    ``<names[old]>_<accumulator>`` (longest names first: ``conv2d_7.w_0`` must not claim ``conv2d_79.w_0_...``)."""
    ordered = sorted(names, key=len, reverse=True)
    renamed = {}
    for key, value in state.items():
        old = next((name for name in ordered if key.startswith(name + "_")), None)
        renamed[key if old is None else names[old] + key[len(old):]] = value
    return renamed


def portable_optimizer_state(optimizer: paddle.optimizer.Optimizer, model: paddle.nn.Layer) -> dict[str, Any]:
    """``optimizer.state_dict()`` keyed by the model's structured parameter names (``stage1.0.qkv.weight_moment1_0``)
    instead of Paddle's process-wide unique names (``linear_12.w_0_moment1_0``), which depend on how many layers the
    process built before: the state then restores in any process (``restore_optimizer_state``)."""
    return _renamed(optimizer.state_dict(), {p.name: name for name, p in model.named_parameters()})


def restore_optimizer_state(optimizer: paddle.optimizer.Optimizer, model: paddle.nn.Layer,
                            state: dict[str, Any]) -> None:
    """Load a ``portable_optimizer_state`` (or a version-1 state keyed by unique names) into ``optimizer``."""
    optimizer.set_state_dict(_renamed(state, {name: p.name for name, p in model.named_parameters()}))


def _pickled(obj: Any) -> np.ndarray:
    # generator states are not tensors: a uint8 array is the form paddle.save/paddle.load keep unchanged
    return np.frombuffer(pickle.dumps(obj), dtype=np.uint8)


def _unpickled(blob: Any) -> Any:
    return pickle.loads(np.asarray(blob, dtype=np.uint8).tobytes())


@dataclass
class TrainingState:
    """Everything a run needs to continue where it stopped (see the module doc for the fields' meaning).

    ``rng`` holds one ``capture_rng`` dict per process, indexed by rank: every process continues its own
    random streams (drop-path masks differ per process)."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    epoch: int
    meter: dict[str, Any]
    best_acc: float
    records: dict[str, Any]
    rng: list[dict[str, Any]]
    config: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str) -> None:
        """Write the state to ``path`` atomically (``fileio.atomic_save``)."""
        atomic_save({"version": FORMAT_VERSION, "model": self.model, "optimizer": self.optimizer,
                     "scheduler": self.scheduler, "scaler": self.scaler, "epoch": self.epoch, "meter": self.meter,
                     "best_acc": self.best_acc, "records": self.records, "rng": _pickled(self.rng),
                     "config": self.config, "extras": self.extras}, path)

    @classmethod
    def load(cls, path: str) -> TrainingState:
        """The state in ``path``. Tensors come back as NumPy arrays in host memory, so loading never holds a copy
        of the weights on the GPU. ``CheckpointError`` for a file that is not a training state or has a format
        version this code does not know."""
        obj = load_paddle_file(path, "training checkpoint", return_numpy=True)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} is not a resumable training checkpoint; train.py writes one as "
                                  f"{LAST_CHECKPOINT} in its work folder")
        version = obj.get("version", 1)
        if version not in (1, FORMAT_VERSION):
            raise CheckpointError(f"{path} is a training checkpoint of format version {version}; this code reads "
                                  f"versions 1 to {FORMAT_VERSION} (a newer uninext-paddle wrote it?)")
        missing = [key for key in (_V1_KEYS if version == 1 else _V2_KEYS) if key not in obj]
        if missing:
            raise CheckpointError(f"{path} is not a resumable training checkpoint (no {', '.join(missing)}); "
                                  f"train.py writes one as {LAST_CHECKPOINT} in its work folder")
        try:
            return cls._from_dict(obj, version)
        except (KeyError, TypeError, ValueError, AttributeError, EOFError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"{path} is a damaged training checkpoint ({type(err).__name__}: {err})") from err

    @classmethod
    def _from_dict(cls, obj: dict[str, Any], version: int) -> TrainingState:
        if version == 1:  # one RNG state of the current device, which was the CPU where version 1 ran
            old = _unpickled(obj["rng"])
            rng = [{"cpu": old["paddle"][0], "cuda": [], "numpy": old["numpy"], "python": old["python"]}]
        else:
            rng = _unpickled(obj["rng"])
        return cls(model=obj["model"], optimizer=obj["optimizer"], scheduler=obj["scheduler"],
                   scaler=obj.get("scaler"), epoch=int(obj["epoch"]), meter=dict(obj["meter"]),
                   best_acc=float(obj["best_acc"]), records=obj["records"], rng=rng, config=dict(obj["config"]),
                   extras=obj.get("extras") or {})

    def variant(self) -> str:
        """The UniNeXt variant the state was trained as."""
        return str(self.config.get("variant"))
