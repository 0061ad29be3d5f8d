"""The backends of evaluate.py and visualize.py (backends.select_backend): Paddle Inference with oneDNN and ONNX
Runtime (one session, or a session per core each running its share of a batch) give the eager model's logits,
including on maps that pad to one window, where Paddle 3.3.1 fusion passes miscompute them or fail; a compiled
model that disagrees or fails is never used; ``auto`` times the ones that match and runs the fastest, else the
eager model, and says in one line what runs and why it skipped any."""
from __future__ import annotations

import sys

import numpy as np
import paddle
import pytest

import uninext_paddle as up
from tests.conftest import TINY, rel_err
from uninext_paddle import backends
from uninext_paddle.errors import ConfigError, DeviceError


def tiny_model(seed: int = 0) -> up.UniNeXt:
    paddle.seed(seed)
    model = up.UniNeXt(num_classes=10, **TINY)
    model.eval()
    return model


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """onnxruntime as if it were not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


@pytest.fixture
def broken_onednn(monkeypatch):
    """Paddle Inference with oneDNN with one of the fusion passes select_backend removes put back: the program then
    gets the one-window attention at 32x32 wrong, by ~0.3 in the logits."""
    monkeypatch.setattr(backends, "_BROKEN_ONEDNN_PASSES", ("operator_reshape_onednn_fuse_pass",))


def assert_gives_eager_logits(model: up.UniNeXt, runner: paddle.nn.Layer, size: int) -> None:
    for batch in (1, 5):  # the exported batch dimension is dynamic
        x = paddle.randn([batch, 3, size, size])
        with paddle.no_grad():
            expected, got = model(x), runner(x)
        assert got.shape == [batch, 10]
        assert rel_err(expected.numpy(), got.numpy()) < 1e-5


@pytest.mark.parametrize("size", [32, 56])  # 32: stages 2-4 pad to one window; 56: 14, 7, 4, 2 maps
def test_auto_runs_the_fastest_that_gives_the_eager_logits_for_any_batch(size, capsys, monkeypatch):
    model = tiny_model()
    # timed as they come: ONNX Runtime's layouts, then oneDNN; here the last one is made the fastest
    speeds = iter([10.0, 20.0, 30.0])
    monkeypatch.setattr(backends, "_images_per_second", lambda runner, size, batch: next(speeds))
    runner, backend = backends.select_backend(model, "auto", "cpu", size)
    assert backend == "onednn" and isinstance(runner, backends.OneDNNModel)
    err = capsys.readouterr().err
    assert err.startswith("note: running onednn; the fastest that matches the eager model here: 30.0 images/s on ")
    assert "onnxruntime (1 session x all threads) 10.0" in err and err.count("\n") == 1
    assert_gives_eager_logits(model, runner, size)
    speeds = iter([10.0, 20.0, 5.0])
    runner, backend = backends.select_backend(model, "auto", "cpu", size)
    assert backend == "onnxruntime" and isinstance(runner, backends.OnnxRuntimeModel)
    assert_gives_eager_logits(model, runner, size)


@pytest.mark.parametrize("size", [32, 56])
def test_onednn_gives_the_eager_logits_for_any_batch(size):
    model = tiny_model()
    runner, backend = backends.select_backend(model, "onednn", "cpu", size)
    assert backend == "onednn" and isinstance(runner, backends.OneDNNModel)
    assert_gives_eager_logits(model, runner, size)


def test_auto_falls_back_to_onednn_without_onnxruntime(no_onnxruntime, capsys):
    model = tiny_model()
    runner, backend = backends.select_backend(model, "auto", "cpu", 32)
    assert backend == "onednn" and isinstance(runner, backends.OneDNNModel)
    err = capsys.readouterr().err
    assert err.startswith("note: running onednn; skipped onnxruntime: onnxruntime is not installed")
    assert err.count("\n") == 1


def test_a_model_paddle2onnx_cannot_convert_falls_back_to_onednn(monkeypatch, capsys):
    import paddle2onnx.convert

    def unsupported(*args: object) -> bytes:
        raise RuntimeError("no converter for pd_op.fancy")

    monkeypatch.setattr(paddle2onnx.convert.c_p2o, "export", unsupported)
    model = tiny_model()
    runner, backend = backends.select_backend(model, "auto", "cpu", 32)
    assert backend == "onednn"
    assert capsys.readouterr().err == ("note: running onednn; skipped onnxruntime: paddle2onnx 2.1.0 cannot convert "
                                       "the model (Failed to convert PaddlePaddle model: no converter for "
                                       "pd_op.fancy.)\n")


def test_a_compiled_model_that_disagrees_is_not_used(monkeypatch, broken_onednn, capsys):
    model = tiny_model()
    with pytest.raises(DeviceError, match="Paddle Inference with oneDNN gives other logits than the model"):
        backends.select_backend(model, "onednn", "cpu", 32)
    # ONNX Runtime's runner made to answer wrong logits: the probe check catches it too
    right = backends.OnnxRuntimeModel.forward
    monkeypatch.setattr(backends.OnnxRuntimeModel, "forward", lambda self, x: right(self, x) * 1.01)
    with pytest.raises(DeviceError, match=r"ONNX Runtime gives other logits than the model \(largest difference"):
        backends.select_backend(model, "onnxruntime", "cpu", 32)
    # so auto, after both, runs the eager model, and says in one line why it skipped each
    assert backends.select_backend(model, "auto", "cpu", 32) == (model, "eager")
    err = capsys.readouterr().err
    assert err.startswith("note: running the eager model; skipped onnxruntime: ONNX Runtime gives other logits")
    assert "; onednn: Paddle Inference with oneDNN gives other logits" in err and err.count("\n") == 1


def test_a_compiled_model_that_fails_is_not_used(monkeypatch, no_onnxruntime, capsys):
    # with the reshape fusion pass back too, the predictor does not even build (a 5-axis transpose of a 4-D tensor)
    monkeypatch.setattr(backends, "_BROKEN_ONEDNN_PASSES", ())
    model = tiny_model()
    assert backends.select_backend(model, "auto", "cpu", 32) == (model, "eager")
    assert "onednn: Paddle Inference with oneDNN failed (ValueError" in capsys.readouterr().err
    with pytest.raises(DeviceError, match="^onnxruntime is not installed .*; pip install -r requirements.txt$"):
        backends.select_backend(model, "onnxruntime", "cpu", 32)


def test_probe_difference_measures_the_largest_logit_difference():
    model = tiny_model()
    assert backends.probe_difference(model, model, 32) == (0.0, True)
    shifted = tiny_model()
    with paddle.no_grad():
        shifted.head.bias.set_value(shifted.head.bias + 0.5)  # every logit moves by exactly 0.5
    diff, close = backends.probe_difference(model, shifted, 32)
    assert diff == pytest.approx(0.5, rel=1e-6) and not close


def test_eager_and_gpu_choices():
    model = tiny_model()
    assert backends.select_backend(model, "eager", "cpu", 32) == (model, "eager")
    assert backends.select_backend(model, "auto", "gpu:0", 32) == (model, "eager")  # cuDNN there
    for backend in ("onednn", "onnxruntime"):
        with pytest.raises(DeviceError, match=f"the {backend} backend runs on the CPU, not on gpu:0"):
            backends.select_backend(model, backend, "gpu:0", 32)
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        backends.select_backend(model, "tensorrt", "cpu", 32)


def test_the_onnxruntime_runner_is_called_like_the_model_in_either_layout():
    model = tiny_model()
    one, two = backends.compile_onnxruntime(model, 32), backends.compile_onnxruntime(model, 32, sessions=2)
    x = paddle.to_tensor(np.random.RandomState(1).standard_normal((3, 3, 32, 32)).astype(np.float32))
    logits = one(x)
    assert isinstance(logits, paddle.Tensor) and logits.dtype == paddle.float32 and logits.shape == [3, 10]
    assert np.array_equal(two(x).numpy(), logits.numpy())  # each image's logits, whatever its batch's split
    options = one._sessions[0].get_session_options()
    assert options.intra_op_num_threads == 0 and one.layout == "1 session x all threads"  # one per physical core
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle threads sleep
    assert two.layout.startswith("2 sessions x ")
