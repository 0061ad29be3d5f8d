"""The oneDNN backend of evaluate.py and visualize.py (inference.select_backend): Paddle Inference's program
gives the eager model's logits, including on maps that pad to one window, where Paddle 3.3.1 fusion passes
miscompute them or fail, and a compiled model that disagrees or fails is never used."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import uninext_paddle as up
from tests.conftest import TINY, rel_err
from uninext_paddle import inference
from uninext_paddle.cli import CliError


def tiny_model(seed: int = 0) -> up.UniNeXt:
    paddle.seed(seed)
    model = up.UniNeXt(num_classes=10, **TINY)
    model.eval()
    return model


@pytest.mark.parametrize("size", [32, 56])  # 32: stages 2-4 pad to one window; 56: 14, 7, 4, 2 maps
def test_onednn_gives_the_eager_logits_for_any_batch(size):
    model = tiny_model()
    runner, backend = inference.select_backend(model, "auto", "cpu", size)
    assert backend == "onednn" and isinstance(runner, inference.OneDNNModel)
    for batch in (1, 5):  # the exported batch dimension is dynamic
        x = paddle.randn([batch, 3, size, size])
        with paddle.no_grad():
            expected, got = model(x), runner(x)
        assert got.shape == [batch, 10]
        assert rel_err(expected.numpy(), got.numpy()) < 1e-5


def test_a_compiled_model_that_disagrees_or_fails_is_not_used(monkeypatch, capsys):
    # select_backend removes two of Paddle 3.3.1's oneDNN fusion passes. With the matmul one back, the program
    # gets the one-window attention wrong: the probe check must catch that.
    monkeypatch.setattr(inference, "_BROKEN_ONEDNN_PASSES", ("operator_reshape_onednn_fuse_pass",))
    model = tiny_model()
    runner, backend = inference.select_backend(model, "auto", "cpu", 32)
    assert runner is model and backend == "eager"
    assert "gives other logits than the model" in capsys.readouterr().err
    with pytest.raises(CliError, match="gives other logits than the model.*; use --backend eager"):
        inference.select_backend(model, "onednn", "cpu", 32)
    # with the reshape one back too, the predictor does not even build (a 5-axis transpose of a 4-D tensor)
    monkeypatch.setattr(inference, "_BROKEN_ONEDNN_PASSES", ())
    assert inference.select_backend(model, "auto", "cpu", 32) == (model, "eager")
    assert "Paddle Inference with oneDNN failed (ValueError" in capsys.readouterr().err


def test_eager_and_gpu_choices():
    model = tiny_model()
    assert inference.select_backend(model, "eager", "cpu", 32) == (model, "eager")
    assert inference.select_backend(model, "auto", "gpu:0", 32) == (model, "eager")  # cuDNN there
    with pytest.raises(CliError, match="--backend onednn runs on the CPU, not gpu:0"):
        inference.select_backend(model, "onednn", "gpu:0", 32)
    with pytest.raises(CliError, match="unknown backend 'tensorrt'"):
        inference.select_backend(model, "tensorrt", "cpu", 32)
