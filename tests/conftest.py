"""Shared fixtures: the notebook's own model code (the parity reference) and tiny CIFAR-format data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.notebook import notebook_model  # the notebook's sections 2.3.1-2.3.3, verbatim

ROOT = Path(__file__).resolve().parents[1]  # pytest puts it on sys.path (pyproject.toml: pythonpath)
paddle.set_device("cpu")
# The scripts' CPU tuning changes process-wide settings (malloc, a Paddle flag): the tests that call a script's
# main() in this process must not leave them behind for the others, and the scripts run as child processes
# inherit this too. tests/test_runtime.py tests the tuning itself, in child processes of its own.
os.environ["UNINEXT_CPU_TUNING"] = "0"

# A UniNeXt small enough for fast CPU tests, with every code path of T (4 stages, windows, padding).
TINY = dict(embed_dim=16, depth=[1, 1, 2, 1], ws=[7, 7, 7, 7], num_heads=[1, 2, 4, 8], mlp_ratio=4.)


@pytest.fixture(scope="session")
def nb():
    """The notebook's model module."""
    return notebook_model


def build_pair(seed: int = 0, **kwargs):
    """(notebook model, port model) built from the same seed, so with the same initial weights."""
    from uninext_paddle import UniNeXt

    paddle.seed(seed)
    reference = notebook_model.UniNeXt(**kwargs)
    paddle.seed(seed)
    port = UniNeXt(**kwargs)
    return reference, port


def rel_err(a: paddle.Tensor, b: paddle.Tensor) -> float:
    """max |a - b| relative to the scale of a."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
