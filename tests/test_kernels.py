"""The C++ CPU kernels (uninext_paddle/kernels.py, csrc/cpu_kernels.cc) against Paddle's own ops: LayerNorm and
GELU forward and backward to float rounding, transposes and the L2-decayed Adam bit for bit; built by install.sh
wherever a compiler exists, and refused with one clause of why where they cannot run."""
from __future__ import annotations

import shutil

import numpy as np
import paddle
import pytest

import uninext_paddle as up
from tests.conftest import TINY, rel_err
from uninext_paddle import kernels
from uninext_paddle.cli import select_device_and_tune
from uninext_paddle.optim import Adam, build_optimizer

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"{kernels.unavailable_reason()}")


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_install_built_the_kernels_here():
    assert kernels.available(), kernels.unavailable_reason()


def value_and_grads(fn, x: paddle.Tensor, params: list[paddle.Tensor], upstream: paddle.Tensor) -> list[np.ndarray]:
    y = fn(x)
    return [y.numpy(), *(g.numpy() for g in paddle.grad(y, [x, *params], upstream))]


@needs_kernels
@pytest.mark.parametrize("shape", [(64, 64, 256), (3, 5, 7, 32), (1, 1, 3)])
def test_layer_norm_and_gelu_are_paddles_to_float_rounding(shape):
    paddle.seed(0)
    x = paddle.randn(shape) * 3
    x.stop_gradient = False
    norm = paddle.nn.LayerNorm(shape[-1])
    norm.weight.set_value(paddle.rand([shape[-1]]) + 0.5), norm.bias.set_value(paddle.randn([shape[-1]]))
    upstream = paddle.randn(shape)
    ours = value_and_grads(lambda t: kernels.layer_norm(t, norm.weight, norm.bias, norm._epsilon), x,
                           [norm.weight, norm.bias], upstream)
    theirs = value_and_grads(norm, x, [norm.weight, norm.bias], upstream)
    for a, b in zip(theirs, ours):  # the weight and bias gradients are sums over every row: ~1e-6 of their scale
        assert rel_err(a, b) < 1e-5
    ours = value_and_grads(kernels.gelu, x, [], upstream)
    theirs = value_and_grads(paddle.nn.functional.gelu, x, [], upstream)
    for a, b in zip(theirs, ours):
        assert rel_err(a, b) < 1e-6


@needs_kernels
@pytest.mark.parametrize("shape, perm", [((64, 64, 256), [2, 1, 0]), ((4, 49, 2, 32), [0, 2, 1, 3]),
                                         ((2, 2, 7, 2, 7 * 8), [0, 1, 3, 2, 4]), ((3, 4, 5, 6), [3, 1, 2, 0]),
                                         ((5,), [0]), ((0, 3), [1, 0])])
def test_transposes_are_exact_and_so_are_their_gradients(shape, perm):
    x = paddle.randn(shape)
    x.stop_gradient = False
    y = kernels.transpose(x, perm)
    assert np.array_equal(y.numpy(), x.numpy().transpose(perm))
    upstream = paddle.randn(y.shape)
    (grad,) = paddle.grad(y, [x], upstream)
    assert np.array_equal(grad.numpy(), upstream.numpy().transpose(np.argsort(perm)))


@needs_kernels
def test_adam_with_the_l2_decay_in_one_call_is_paddles_adam_bit_for_bit():
    weights = []
    for kind in (paddle.optimizer.Adam, Adam):
        paddle.seed(0)
        model = up.UniNeXt(num_classes=10, **TINY)
        scheduler = paddle.optimizer.lr.CosineAnnealingDecay(1e-3, 10)
        optimizer = kind(parameters=model.parameters(), learning_rate=scheduler, weight_decay=1e-2)
        paddle.seed(1)
        for _ in range(3):
            model(paddle.randn([4, 3, 32, 32])).mean().backward()
            optimizer.step(), scheduler.step(), optimizer.clear_grad()
        weights.append({name: value.numpy() for name, value in model.state_dict().items()})
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])
    model = up.UniNeXt(num_classes=10, **TINY)  # built on the CPU, with the kernels: build_optimizer takes it
    assert type(build_optimizer("adam", model, scheduler, 1e-5)) is Adam


def test_without_the_kernels_the_reason_is_one_clause(monkeypatch):
    monkeypatch.setattr(kernels, "read_cpuinfo", lambda: "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2\n")
    kernels._loaded.cache_clear()
    try:
        assert not kernels.available()
        assert kernels.unavailable_reason() == "this CPU lacks avx2 and fma, which they are built for"
        model = up.UniNeXt(num_classes=10, **TINY)  # Paddle's own LayerNorm and GELU there
        assert "cpp_kernels" not in model.cpu_formulations and "forward" not in model.norm.__dict__
        assert type(build_optimizer("adam", model, 1e-3, 1e-5)) is paddle.optimizer.Adam
        start = select_device_and_tune("cpu", None)  # what every script prints at start-up
        assert start.kernels_note == ("the C++ CPU kernels do not run (this CPU lacks avx2 and fma, which they are "
                                      "built for): LayerNorm, GELU, transposes and Adam's L2 decay take Paddle's "
                                      "own, slower kernels")
        monkeypatch.undo()
        monkeypatch.setattr(kernels, "_source_version", lambda: "1.0+another")
        kernels._loaded.cache_clear()
        assert kernels.unavailable_reason() == ("they were built from another version of "
                                                "uninext_paddle/csrc/cpu_kernels.cc; bash install.sh builds them")
    finally:
        monkeypatch.undo()
        kernels._loaded.cache_clear()
