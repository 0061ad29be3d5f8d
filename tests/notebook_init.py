"""The notebook's code initialised as on the Paddle it ran on (2.x), for seed-for-seed comparisons with the port.

The notebook's ``_init_weights`` calls ``nn.initializer.TruncatedNormal(std=.02)``. On Paddle 2.x that cut at
2 standard deviations; since Paddle 2.6 ``a``/``b`` are absolute bounds with defaults -2/2, so on this Paddle the
same line cuts nothing. ``notebook_init`` restores the 2.x meaning while the notebook's model is built.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import paddle
import pytest

from tests.conftest import build_pair as build_pair_unpatched
from tests.notebook import notebook_model

TruncatedNormal = paddle.nn.initializer.TruncatedNormal


def paddle2_truncated_normal(mean: float = 0.0, std: float = 1.0) -> TruncatedNormal:
    """``TruncatedNormal(mean, std)`` as Paddle 2.x drew it: cut at 2 standard deviations around the mean."""
    return TruncatedNormal(mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)


@contextmanager
def notebook_init() -> Iterator[None]:
    """Inside the block the notebook's ``nn.initializer.TruncatedNormal`` (which is ``paddle.nn.initializer``'s)
    is Paddle 2.x's; the port's initialiser, made when ``uninext_paddle.model`` was imported, is unaffected."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(notebook_model.nn.initializer, "TruncatedNormal", paddle2_truncated_normal)
        yield


def build_pair(seed: int = 0, **kwargs):
    """``conftest.build_pair`` with the notebook's model initialised as on Paddle 2.x: the same initial weights."""
    with notebook_init():
        return build_pair_unpatched(seed, **kwargs)
