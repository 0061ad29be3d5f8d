"""export.py: the Paddle inference model and the ONNX model of a tiny UniNeXt load back (paddle.jit.load, a stock
onnxruntime session), keep the batch dimension dynamic, give the eager logits, and their checks catch a file that
predicts other classes than the checkpoint."""
from __future__ import annotations

import types

import numpy as np
import onnx
import onnxruntime
import paddle
import pytest

import uninext_paddle as up
from tests.conftest import TINY
from uninext_paddle.errors import CheckpointError
from uninext_paddle.export import (ONNX_FILE, ONNX_OPSET, check_export, check_onnx_export, export_model,
                                   export_onnx)

SIZE = 32


@pytest.fixture
def model() -> up.UniNeXt:
    paddle.seed(1)
    model = up.UniNeXt(num_classes=10, **TINY)
    model.eval()
    return model


def images(batch: int, seed: int = 0) -> paddle.Tensor:
    return paddle.to_tensor(np.random.RandomState(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32))


def flip_head(model: up.UniNeXt) -> None:
    """Negate the classifier: the checkpoint and a file exported before now predict different classes."""
    with paddle.no_grad():
        model.head.weight.set_value(-model.head.weight)
        model.head.bias.set_value(-model.head.bias)


def test_paddle_export_round_trip_predicts_what_the_dynamic_model_predicts(model, tmp_path):
    prefix = export_model(model, str(tmp_path / "export"), SIZE)
    assert isinstance(model.forward, types.MethodType)  # still the dynamic model: to_static converted a copy
    program = open(prefix + ".json").read()
    assert "depthwise_conv2d" in program and "addmm" not in program  # Paddle's ops, not the CPU fast paths
    exported = paddle.jit.load(prefix)
    exported.eval()
    for batch in (images(1), images(7)):  # the batch dimension stays dynamic
        expected, got = model(batch).numpy(), exported(batch).numpy()
        assert np.array_equal(got.argmax(-1), expected.argmax(-1))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert check_export(prefix, model, images(8)) < 1e-4
    flip_head(model)
    with pytest.raises(CheckpointError, match="the exported model at .* predicts other classes than the checkpoint"):
        check_export(prefix, model, images(8))


def test_onnx_file_loads_with_onnxruntime_and_gives_the_eager_logits(model, tmp_path):
    path = export_onnx(model, str(tmp_path / "onnx"), SIZE)
    assert path == str(tmp_path / "onnx" / ONNX_FILE)
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [ONNX_FILE]  # no temporary left behind
    assert {e.domain: e.version for e in onnx.load(path).opset_import}[""] == ONNX_OPSET
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])  # as a deployment loads it
    (source,) = session.get_inputs()
    assert source.shape[1:] == [3, SIZE, SIZE] and not isinstance(source.shape[0], int)  # any batch size
    for batch in (images(1), images(5)):
        expected = model(batch).numpy()
        got = session.run(None, {source.name: batch.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert check_onnx_export(path, model, images(8)) < 1e-4
    flip_head(model)
    with pytest.raises(CheckpointError, match="the ONNX model at .* predicts other classes than the checkpoint"):
        check_onnx_export(path, model, images(8))
