"""The resumable training state (``last.pdckpt``): what a run holds as it goes (``RunState``), the snapshot
train.py saves after every epoch, at a stop and when the data fails (``snapshot``), and how a run is put back
from it (``restore``), side by side with the file's format.

The file is one dict (nanoGPT style) written with ``paddle.save``: ``version``, the model's ``state_dict`` (the
notebook's format), the optimizer's keyed by structured parameter names (``portable_optimizer_state``), the LR
scheduler, the fp16 grad scaler, ``epoch`` (the epoch in progress) with ``meter`` (its running sums;
``meter["step"]`` batches of it are done), ``best_acc``, the records, the random generators of every process,
the run's config and ``extras`` (optional parts such as an EMA of the weights, keyed by name).

It is read by ``safe_load.load_pickled``, which runs nothing from the file. Format 3 stores the random
generators as arrays and numbers (``capture_rng``). Formats 1 (before ``version`` existed) and 2 still load:
they held the generators as a pickled blob, which is read by the same safe loader.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle

from .checkpoint import is_float_array, load_weights
from .device import world_size
from .ema import ModelEma
from .engine import EpochMeter, TrainStep
from .errors import CheckpointError
from .fileio import atomic_save
from .records import Records
from .safe_load import load_pickled, loads_pickled

__all__ = ["LAST_CHECKPOINT", "FORMAT_VERSION", "TrainingState", "RunState", "snapshot", "restore", "capture_rng",
           "restore_rng", "cuda_generators", "portable_optimizer_state", "restore_optimizer_state"]

LAST_CHECKPOINT = "last.pdckpt"
FORMAT_VERSION = 3
_V1_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "meter", "best_acc", "records", "rng", "config")
_KEYS = ("version", "model", "optimizer", "scheduler", "scaler", "epoch", "meter", "best_acc", "records", "rng",
         "config", "extras")  # formats 2 and 3
_OPTIMIZER_TABLES = ("LR_Scheduler", "master_weights")  # the optimizer state's entries that are not accumulators


# ---------------------------------------------------------------------------------------------------------------
# random generators, as arrays and numbers

def cuda_generators() -> list[Any]:
    """Paddle's CUDA generators, one per visible GPU (none on a CPU build or machine)."""
    if not paddle.is_compiled_with_cuda():
        return []
    core = paddle.base.core
    return [core.default_cuda_generator(i) for i in range(core.get_cuda_device_count())]


def _generator_data(state: tuple) -> dict[str, Any]:
    """A Paddle ``GeneratorState``'s state tuple (device, seed, offset, the engine's text as character codes)."""
    device, seed, offset, engine = state
    return {"device": int(device), "seed": int(seed), "offset": int(offset), "engine": np.asarray(engine, np.uint8)}


def _generator_state(data: dict[str, Any]) -> Any:
    """The Paddle ``GeneratorState`` of ``_generator_data``, built as unpickling builds it."""
    kind = paddle.base.core.GeneratorState
    state = kind.__new__(kind)
    state.__setstate__((int(data["device"]), int(data["seed"]), int(data["offset"]),
                        np.asarray(data["engine"], np.uint8).tolist()))
    return state


def capture_rng() -> dict[str, Any]:
    """This process's random generators as arrays and numbers: Paddle's CPU generator and every CUDA generator
    apart (their count depends on the GPUs visible), NumPy's and Python's global states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"cpu": _generator_data(paddle.get_rng_state("cpu")[0].__getstate__()),
            "cuda": [_generator_data(g.get_state().__getstate__()) for g in cuda_generators()],
            "numpy": {"kind": kind, "keys": np.asarray(keys), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": int(version), "internal": np.asarray(internal, np.int64), "gauss_next": gauss_next}}


def restore_rng(states: dict[str, Any]) -> str | None:
    """Put back what ``capture_rng`` captured, as far as it fits this machine: the CPU, NumPy and Python states
    always; the CUDA states of the GPUs both machines have. Returns what could not be restored (for one line in
    the log), or None when everything was."""
    paddle.set_rng_state([_generator_state(states["cpu"])], "cpu")
    mt = states["numpy"]
    np.random.set_state((str(mt["kind"]), np.asarray(mt["keys"], np.uint32), int(mt["pos"]), int(mt["has_gauss"]),
                         float(mt["cached_gaussian"])))
    py = states["python"]
    gauss_next = None if py["gauss_next"] is None else float(py["gauss_next"])
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), gauss_next))
    generators, saved = cuda_generators(), states["cuda"]
    for generator, state in zip(generators, saved):
        generator.set_state(_generator_state(state))
    if len(saved) == len(generators):
        return None
    return (f"the random generators of {len(saved)} GPU(s) were saved and {len(generators)} are visible: "
            f"{abs(len(saved) - len(generators))} could not be restored, so drop-path masks on them differ from "
            "the uninterrupted run")


def _rng_of_format_2(old: dict[str, Any]) -> dict[str, Any]:
    """A format-2 process's generators (GeneratorState records and NumPy's and Python's state tuples) as
    ``capture_rng`` captures them."""
    kind, keys, pos, has_gauss, cached = old["numpy"]
    version, internal, gauss_next = old["python"]
    return {"cpu": _generator_data(old["cpu"].state), "cuda": [_generator_data(g.state) for g in old["cuda"]],
            "numpy": {"kind": kind, "keys": keys, "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached},
            "python": {"version": version, "internal": np.asarray(internal, np.int64), "gauss_next": gauss_next},
            "mixing": old.get("mixing")}


def _old_rng(blob: Any, version: int, where: str) -> list[dict[str, Any]]:
    """The generators of every process in a format 1 or 2 file, whose pickled ``blob`` is read safely."""
    old = loads_pickled(np.asarray(blob, dtype=np.uint8).tobytes(), where)
    if version == 1:  # one process, one Paddle generator: the CPU's, where format 1 ran
        return [_rng_of_format_2({"cpu": old["paddle"][0], "cuda": [], "numpy": old["numpy"],
                                  "python": old["python"]})]
    return [_rng_of_format_2(process) for process in old]


# ---------------------------------------------------------------------------------------------------------------
# the optimizer's state, portable between processes

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
    """Load a ``portable_optimizer_state`` (or a format-1 state keyed by unique names) into ``optimizer``;
    ``CheckpointError`` naming the first accumulator that is not an array of floats."""
    bad = next((key for key, value in state.items() if key not in _OPTIMIZER_TABLES and
                not is_float_array(value)), None)
    if bad is not None:
        raise CheckpointError(f"the optimizer state's {bad} is not an array of floats")
    optimizer.set_state_dict(_renamed(state, {name: p.name for name, p in model.named_parameters()}))


# ---------------------------------------------------------------------------------------------------------------
# the file

@dataclass
class TrainingState:
    """Everything a run needs to continue where it stopped (see the module doc for the fields' meaning).

    ``rng`` holds one ``capture_rng`` dict per process, indexed by rank (with the process's Mixup/CutMix
    generator under "mixing"): every process continues its own random streams."""

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
                     "best_acc": self.best_acc, "records": self.records, "rng": self.rng, "config": self.config,
                     "extras": self.extras}, path)

    @classmethod
    def load(cls, path: str) -> TrainingState:
        """The state in ``path``, read without running anything from it; arrays come back as NumPy arrays in
        host memory, so loading never holds a copy of the weights on the GPU. ``CheckpointError`` for a file that
        is not a training state, is damaged or has a format version this code does not know."""
        what = "training checkpoint"
        obj = load_pickled(path, what)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path} is not a resumable training checkpoint; train.py writes one as "
                                  f"{LAST_CHECKPOINT} in its work folder")
        version = obj.get("version", 1)
        if version not in (1, 2, FORMAT_VERSION):
            raise CheckpointError(f"{path} is a training checkpoint of format version {version}; this code reads "
                                  f"versions 1 to {FORMAT_VERSION} (a newer uninext-paddle wrote it?)")
        missing = [key for key in (_V1_KEYS if version == 1 else _KEYS) if key not in obj]
        if missing:
            raise CheckpointError(f"{path} is not a resumable training checkpoint (no {', '.join(missing)}); "
                                  f"train.py writes one as {LAST_CHECKPOINT} in its work folder")
        try:
            rng = obj["rng"] if version == FORMAT_VERSION else _old_rng(obj["rng"], version, f"{what} {path}")
            return cls(model=obj["model"], optimizer=obj["optimizer"], scheduler=obj["scheduler"],
                       scaler=obj.get("scaler"), epoch=int(obj["epoch"]), meter=dict(obj["meter"]),
                       best_acc=float(obj["best_acc"]), records=obj["records"], rng=list(rng),
                       config=dict(obj["config"]), extras=obj.get("extras") or {})
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, EOFError) as err:
            raise CheckpointError(f"{path} is a damaged training checkpoint ({type(err).__name__}: {err})") from err

    def variant(self) -> str:
        """The UniNeXt variant the state was trained as."""
        return str(self.config.get("variant"))


# ---------------------------------------------------------------------------------------------------------------
# the run: what it holds, its snapshot and its restoration

@dataclass
class RunState:
    """What a training run holds and changes as it goes, in one place.

    ``model`` runs the forward passes: the model, or its ``paddle.DataParallel`` wrapper in data-parallel runs;
    ``model_without_ddp`` is the bare model, whose ``state_dict`` keys are the notebook's (what is saved and
    averaged). ``step`` holds the optimizer, the scheduler, the fp16 scaler, the mixer and how a step runs.
    """

    model: paddle.nn.Layer
    model_without_ddp: paddle.nn.Layer
    step: TrainStep
    ema: ModelEma | None
    records: Records
    config: dict[str, Any]
    best_acc: float = 0.0
    best_ema_acc: float = 0.0


def _gather_rng(run: RunState) -> list[dict[str, Any]]:
    """Every process's random generators (the mixer's too), indexed by rank (a collective call)."""
    mine = {**capture_rng(), "mixing": None if run.step.mixer is None else run.step.mixer.get_state()}
    if world_size() == 1:
        return [mine]
    states: list[dict[str, Any]] = []
    paddle.distributed.all_gather_object(states, mine)
    return states


def snapshot(run: RunState, epoch: int, meter: EpochMeter) -> TrainingState:
    """The run at ``epoch`` with ``meter``'s batches of it done, as ``TrainingState`` (to ``save`` on the main
    process). A collective call in data-parallel runs: every process makes it."""
    extras = {} if run.ema is None else {"ema": run.ema.state_dict(), "best_ema_acc": run.best_ema_acc}
    scaler = run.step.scaler
    return TrainingState(model=run.model_without_ddp.state_dict(),
                         optimizer=portable_optimizer_state(run.step.optimizer, run.model_without_ddp),
                         scheduler=run.step.scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                         epoch=epoch, meter=meter.state_dict(), best_acc=run.best_acc,
                         records=run.records.state_dict(), rng=_gather_rng(run), config=run.config, extras=extras)


def restore(run: RunState, state: TrainingState, path: str, rank: int = 0) -> tuple[int, EpochMeter, str | None]:
    """Put ``run`` back to ``state`` (read from ``path``) for process ``rank``: weights, optimizer, scheduler,
    scaler, records, best accuracies, EMA, this process's random generators. Returns (epoch, meter) to continue
    from and what of the random generators could not be restored (see ``restore_rng``).
    ``CheckpointError`` for a state that does not fit the run or holds values of the wrong kind."""
    load_weights(run.model_without_ddp, state.model, path, str(run.config.get("variant")))
    try:
        restore_optimizer_state(run.step.optimizer, run.model_without_ddp, state.optimizer)
        run.step.scheduler.set_state_dict(state.scheduler)
        if run.step.scaler is not None and state.scaler:
            run.step.scaler.load_state_dict(state.scaler)
        run.records, run.best_acc = Records(state.records), float(state.best_acc)
        run.best_ema_acc = float(state.extras.get("best_ema_acc", 0.0))
        if run.ema is not None and state.extras.get("ema"):
            run.ema.set_state_dict(state.extras["ema"])
        elif run.ema is not None:  # an EMA asked for on resuming: it starts from the restored weights
            run.ema = ModelEma(run.model_without_ddp, run.ema.decay, run.ema.warmup)
        mine = state.rng[rank]
        if run.step.mixer is not None and mine.get("mixing"):
            run.step.mixer.set_state(mine["mixing"])
        meter = EpochMeter(**state.meter)
        return int(state.epoch), meter, restore_rng(mine)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{path} is a damaged training checkpoint ({type(err).__name__}: {err})") from err
