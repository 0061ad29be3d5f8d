"""Inference-side helpers for evaluate.py and visualize.py: a model from a checkpoint, the model-only throughput
timer and the static export (``paddle.jit.to_static`` + ``paddle.jit.save``) with its round-trip check.

The model needs no change to export: it keeps map sizes as Python ints derived from the static input side and
reshapes with a ``-1`` batch, so one ``InputSpec([None, 3, size, size])`` gives a graph for any batch size.
"""
from __future__ import annotations

import copy
import os
import time

import numpy as np
import paddle

from . import fastpath
from .checkpoint import infer_variant, load_file, load_weights, model_state_of
from .cli import fail
from .device import amp_context
from .model import VARIANTS, UniNeXt, create_model

__all__ = ["load_model", "model_throughput", "export_model", "check_export", "EXPORT_PREFIX"]

EXPORT_PREFIX = "inference"  # files: inference.json (the PIR program) and inference.pdiparams


def load_model(path: str, variant: str | None = None) -> tuple[UniNeXt, str]:
    """(model in eval mode, variant) from a ``train.py`` or notebook checkpoint at ``path``.

    ``variant`` None: inferred from the weights' shapes. The class count always comes from the head's shape.
    Weights that do not fit fail with one line naming what does not match.
    """
    state = model_state_of(load_file(path), path)
    if variant is None:
        variant, num_classes = infer_variant(state, path)
    elif variant not in VARIANTS:
        fail(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    else:
        num_classes = int(state["head.weight"].shape[1])
    model = create_model(variant, num_classes=num_classes)
    load_weights(model, state, path, variant)
    model.eval()
    return model, variant


@paddle.no_grad()
def model_throughput(model: paddle.nn.Layer, images: paddle.Tensor, device: str, amp: str = "off",
                     warmup: int = 3, batches: int = 10) -> float:
    """Images per second of the forward pass alone, on ``images`` already on the device: ``warmup`` untimed
    batches (kernel selection, allocator, caches), then ``batches`` timed ones, synchronised on GPU so the
    clock sees finished work rather than queued kernels."""
    model.eval()
    images = images.to(device)  # outside the clock: a copy at most

    def forward() -> None:
        with amp_context(amp, device):
            model(images)

    for _ in range(warmup):
        forward()
    if device.startswith("gpu"):
        paddle.device.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        forward()
    if device.startswith("gpu"):
        paddle.device.synchronize()
    return images.shape[0] * batches / (time.perf_counter() - start)


def export_model(model: paddle.nn.Layer, folder: str, image_size: int) -> str:
    """Save ``model`` as a Paddle inference model for [any batch, 3, ``image_size``, ``image_size``] float32
    inputs in ``folder``; return the path prefix (``paddle.jit.load`` / Paddle Inference take it)."""
    prefix = os.path.join(folder, EXPORT_PREFIX)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", "x")]
    # to_static replaces a layer's forward in place; converting a copy leaves ``model`` dynamic (and fast).
    # full_graph: the AST converter, which yields one whole program that jit.save can write (SOT may fall back).
    static_model = paddle.jit.to_static(copy.deepcopy(model).eval(), input_spec=spec, full_graph=True)
    try:
        os.makedirs(folder, exist_ok=True)
        # Traced with Paddle's own conv and Linear ops rather than the CPU fast paths: the file may be deployed
        # on any device, and Paddle Inference's fusion passes recognise those ops.
        with fastpath.disabled():
            paddle.jit.save(static_model, prefix)
    except OSError as err:
        fail(f"cannot write the exported model to {folder}: {err.strerror or err}")
    return prefix


@paddle.no_grad()
def check_export(prefix: str, model: paddle.nn.Layer, images: paddle.Tensor) -> float:
    """Load the exported model at ``prefix`` back and run it on ``images``: fail unless it predicts the classes
    the dynamic ``model`` predicts; return the largest absolute logit difference."""
    exported = paddle.jit.load(prefix)
    exported.eval()
    expected, got = model(images).numpy(), exported(images).numpy()
    if not np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)):
        fail(f"the exported model at {prefix} predicts other classes than the checkpoint "
             f"(largest logit difference {np.abs(expected - got).max():.3g})")
    return float(np.abs(expected - got).max())
