"""UniNeXt weight files: writing and reading them, the file names train.py writes, matching weights to a variant,
loading a model, and the class names that travel with the weights.

Model files are plain ``state_dict``s saved with ``paddle.save``, the notebook's format (``best_model.pdparams``
and friends), so files written by the notebook and by this project are interchangeable; or the same arrays as a
``.safetensors`` file (``WEIGHTS_FORMATS``). Either is read without running anything (``safe_load.py``), and its
values must be float arrays of the model's shapes. The class names of a model trained on other data go in a
small sidecar next to it (``best_model.classes.json``: a JSON list); weights without one are CIFAR-10's when
their head has 10 classes (the notebook's). The resumable training state (``last.pdckpt``) has its own owner,
``train_state.py``; its ``model`` entry is read here too.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import paddle

from .data import CIFAR10_CLASSES
from .errors import CheckpointError
from .fileio import atomic_save, atomic_write_json
from .model import VARIANTS, UniNeXt, create_model
from .safe_load import SAFETENSORS_SUFFIX, load_weights_file, save_safetensors

__all__ = ["BEST_MODEL", "BEST_MODEL_EMA", "BEST_OPTIMIZER", "FINAL_MODEL", "FINAL_OPTIMIZER", "WEIGHTS_FORMATS",
           "weights_file", "save_weights", "is_float_array", "model_state_of", "infer_variant", "check_state_dict",
           "load_weights", "load_model", "class_names_path", "save_class_names", "load_class_names", "load_backbone"]

# The notebook's file names (written by train.py into its work folder).
BEST_MODEL, BEST_OPTIMIZER = "best_model.pdparams", "best_optimizer.pdopt"
BEST_MODEL_EMA = "best_model_ema.pdparams"  # with --ema: the best EMA of the weights, in the same format
FINAL_MODEL, FINAL_OPTIMIZER = "final_model.pdparams", "final_optimizer.pdopt"
# How train.py writes weights: the notebook's pickled state_dict, or the same arrays as safetensors.
WEIGHTS_FORMATS = {"pdparams": ".pdparams", "safetensors": SAFETENSORS_SUFFIX}


def weights_file(name: str, weights_format: str) -> str:
    """``name`` (e.g. ``BEST_MODEL``) with the file suffix of ``weights_format`` (a ``WEIGHTS_FORMATS`` key)."""
    return os.path.splitext(name)[0] + WEIGHTS_FORMATS[weights_format]


def save_weights(state: dict[str, Any], path: str, classes: list[str]) -> None:
    """A model ``state_dict`` at ``path``, atomically, in the format its suffix names (``.safetensors``, else the
    notebook's ``paddle.save`` pickle); the class names beside it unless they are CIFAR-10's (which weights
    without names are taken to be)."""
    if classes != list(CIFAR10_CLASSES):
        save_class_names(path, classes)
    if path.endswith(SAFETENSORS_SUFFIX):
        save_safetensors(state, path)
    else:
        atomic_save(state, path)


def is_float_array(value: Any) -> bool:
    """Whether ``value`` is a NumPy array or Paddle tensor of floats (what weights and optimizer states hold)."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f"
    return isinstance(value, paddle.Tensor) and value.is_floating_point()


def _described(value: Any) -> str:
    if isinstance(value, (np.ndarray, paddle.Tensor)):
        return f"an array of {str(value.dtype).replace('paddle.', '')}"
    return f"a {type(value).__name__}"


def _check_float_arrays(state: dict[str, Any], names: list[str], path: str) -> None:
    """``CheckpointError`` naming the first of ``names`` whose value in ``state`` is not an array of floats."""
    bad = next((name for name in names if name in state and not is_float_array(state[name])), None)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} is {_described(state[bad])}, not an array of floats: these are not "
                              "UniNeXt weights")


def model_state_of(obj: Any, path: str) -> dict[str, Any]:
    """The model ``state_dict`` in a loaded file: a plain state_dict (notebook, best/final files) or the
    ``model`` entry of a resumable training checkpoint."""
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "head.weight" not in state or "merge0.conv.weight" not in state:
        raise CheckpointError(f"{path} does not hold UniNeXt weights (no head.weight / merge0.conv.weight)")
    _check_float_arrays(state, ["merge0.conv.weight", "head.weight"], path)
    return state


def infer_variant(state: dict[str, Any], path: str = "checkpoint") -> tuple[str, int]:
    """(variant, num_classes) of UniNeXt weights, from stage 1's width and the head's shape."""
    embed_dim = int(state["merge0.conv.weight"].shape[0])
    variant = next((name for name, cfg in VARIANTS.items() if cfg["embed_dim"] == embed_dim), None)
    if variant is None:
        widths = ", ".join(f"{name}: {cfg['embed_dim']}" for name, cfg in VARIANTS.items())
        raise CheckpointError(f"{path} has embed_dim {embed_dim}, which is no UniNeXt variant ({widths})")
    return variant, int(state["head.weight"].shape[1])


def check_state_dict(model: paddle.nn.Layer, state: dict[str, Any], path: str, variant: str) -> None:
    """``CheckpointError`` naming what does not match unless ``state`` fits ``model`` key for key, shape for
    shape, every value an array of floats."""
    expected = {name: list(value.shape) for name, value in model.state_dict().items()}
    _check_float_arrays(state, list(expected), path)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    mismatched = [f"{name} {list(state[name].shape)} vs {shape}" for name, shape in expected.items()
                  if name in state and list(state[name].shape) != shape]
    if missing or unexpected or mismatched:
        problems = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                    f"{len(mismatched)} of another shape (e.g. {mismatched[0]})" if mismatched else ""]
        raise CheckpointError(f"{path} does not fit UniNeXt-{variant}: " + ", ".join(p for p in problems if p)
                              + "; pick the variant it was trained with or another checkpoint")


def load_weights(model: paddle.nn.Layer, state: dict[str, Any], path: str, variant: str) -> None:
    """Check ``state`` against ``model`` (see ``check_state_dict``), then load it."""
    check_state_dict(model, state, path, variant)
    model.set_state_dict(state)


def load_model(path: str, variant: str | None = None) -> tuple[UniNeXt, str]:
    """(model in eval mode, variant) from a ``train.py`` or notebook checkpoint at ``path``.

    ``variant`` None: inferred from the weights' shapes. The class count always comes from the head's shape.
    Weights that do not fit raise ``CheckpointError`` naming what does not match.
    """
    state = model_state_of(load_weights_file(path), path)
    if variant is None:
        variant, num_classes = infer_variant(state, path)
    else:
        num_classes = int(state["head.weight"].shape[1])
    model = create_model(variant, num_classes=num_classes)
    load_weights(model, state, path, variant)
    model.eval()
    return model, variant


def class_names_path(weights_path: str) -> str:
    """The class-names sidecar of a weights file: ``.../best_model.pdparams`` -> ``.../best_model.classes.json``."""
    return os.path.splitext(weights_path)[0] + ".classes.json"


def save_class_names(weights_path: str, names: list[str]) -> None:
    """Write ``names`` next to ``weights_path`` (see ``class_names_path``), atomically."""
    atomic_write_json(list(names), class_names_path(weights_path))


def load_class_names(weights_path: str, num_classes: int) -> list[str]:
    """The class names of the weights at ``weights_path`` with a ``num_classes`` head: from the sidecar when there
    is one, else CIFAR-10's for 10 classes, else "0", "1", ... ``CheckpointError`` for a sidecar that is not a
    list of ``num_classes`` strings."""
    sidecar = class_names_path(weights_path)
    if not os.path.isfile(sidecar):
        return list(CIFAR10_CLASSES) if num_classes == len(CIFAR10_CLASSES) else [str(i) for i in range(num_classes)]
    try:
        with open(sidecar, encoding="utf-8") as f:
            names = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"class names {sidecar} are not readable JSON ({type(err).__name__}: {err})") from err
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"class names {sidecar} are not a list of {num_classes} names (the head's classes)")
    return names


def load_backbone(model: UniNeXt, path: str, variant: str) -> bool:
    """Start ``model`` from the weights in ``path`` (a notebook or train.py file, or a training state) for
    fine-tuning. Returns whether its head was kept: when the class counts differ the head stays ``model``'s own,
    freshly initialised one. ``CheckpointError`` for weights of another variant or that do not fit otherwise."""
    state = model_state_of(load_weights_file(path, "initial weights"), path)
    trained, _ = infer_variant(state, path)
    if trained != variant:
        raise CheckpointError(f"{path} holds UniNeXt-{trained} weights, not UniNeXt-{variant}")
    head_fits = list(state["head.weight"].shape) == list(model.head.weight.shape)
    if not head_fits:
        state = {name: value for name, value in state.items() if not name.startswith("head.")}
        state.update({name: value for name, value in model.state_dict().items() if name.startswith("head.")})
    load_weights(model, state, path, variant)
    return head_fits
