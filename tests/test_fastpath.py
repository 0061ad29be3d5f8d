"""The CPU formulations (uninext_paddle/fastpath.py) against the ops they replace: outputs and gradients; chosen
once per model (install), with the layers still Paddle's own types, called as layers."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

import uninext_paddle as up
from tests.conftest import TINY, rel_err
from tests.notebook_init import build_pair
from uninext_paddle import fastpath


def on_cpu(layer: nn.Layer, disabled: tuple[str, ...] = ()) -> nn.Layer:
    """``layer`` with the CPU formulations installed (as a model built on the CPU has them)."""
    fastpath.install(layer, cpu=True, disabled=disabled)
    return layer


def conv_reference(conv: nn.Conv2D, x: paddle.Tensor, H: int, W: int) -> paddle.Tensor:
    """Paddle's own conv on the image, as the notebook runs it: [B, H*W, C] -> [B, H*W, C]."""
    C = x.shape[-1]
    image = x.transpose([0, 2, 1]).reshape([-1, C, H, W])
    return F.conv2d(image, conv.weight, conv.bias, padding=1, groups=C).flatten(2).transpose([0, 2, 1])


@pytest.mark.parametrize("H,W,batch", [(1, 1, 5), (2, 2, 5), (3, 3, 5), (4, 4, 5), (1, 3, 5), (2, 4, 5),
                                         (8, 8, 64), (7, 7, 64), (7, 7, 2), (5, 9, 3)])
def test_small_map_depthwise_equals_paddles_conv_forward_and_backward(H, W, batch):
    assert fastpath.matmul_form(H, W, batch)  # these all take the fast path
    paddle.seed(H * 10 + W)
    conv = on_cpu(nn.Conv2D(24, 24, 3, 1, 1, groups=24))
    nn.initializer.Normal()(conv.bias)  # a nonzero bias, unlike the init
    x = paddle.randn([batch, H * W, 24])
    x.stop_gradient = False
    upstream = paddle.randn([batch, H * W, 24])
    got = fastpath.depthwise3x3(conv, x, H, W)
    expected = conv_reference(conv, x, H, W)
    # The same products: bitwise equal output on 1x1 and 2x2 maps (stages 3-4 at 32x32 input); elsewhere,
    # and in the gradients, the sums may run in another order (float rounding).
    if H == W and H <= 2:
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    else:
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    grads = paddle.grad(got, [x, conv.weight, conv.bias], upstream)
    ref_grads = paddle.grad(expected, [x, conv.weight, conv.bias], upstream)
    # Relative to each gradient's scale: the weights' and the bias's are sums of batch * H * W terms (3136 at 7x7,
    # batch 64), which float32 rounds by ~1e-6 of their scale in either order (both within 1.6e-6 of the float64
    # sum there).
    for g, r in zip(grads, ref_grads):
        assert rel_err(r.numpy(), g.numpy()) < 1e-5


def test_one_by_one_map_is_the_centre_tap():
    conv = on_cpu(nn.Conv2D(8, 8, 3, 1, 1, groups=8))
    x = paddle.randn([3, 1, 8])
    expected = x * conv.weight[:, 0, 1, 1] + conv.bias
    np.testing.assert_array_equal(fastpath.depthwise3x3(conv, x, 1, 1).numpy(), expected.numpy())


def test_large_maps_and_uninstalled_formulations_use_paddles_ops():
    # 7x7 maps take the matmul from a batch of 2, 9x9 maps never
    assert not fastpath.matmul_form(7, 7, 1) and not fastpath.matmul_form(9, 9, 256)
    conv = on_cpu(nn.Conv2D(8, 8, 3, 1, 1, groups=8))
    nn.initializer.Normal()(conv.bias)
    x = paddle.randn([1, 49, 8])
    np.testing.assert_array_equal(fastpath.depthwise3x3(conv, x, 7, 7).numpy(), conv_reference(conv, x, 7, 7).numpy())
    small = x[:, :4]
    assert rel_err(conv_reference(conv, small, 2, 2), fastpath.depthwise3x3(conv, small, 2, 2)) < 1e-6
    for choice in (dict(cpu=False), dict(cpu=True, disabled=fastpath.FORMULATIONS)):
        assert fastpath.install(conv, **choice) == []  # nothing installed: Paddle's own conv, bitwise
        np.testing.assert_array_equal(fastpath.depthwise3x3(conv, small, 2, 2).numpy(),
                                      conv_reference(conv, small, 2, 2).numpy())


@pytest.mark.parametrize("size, batch", [(32, 2), (64, 2), (32, 64)])
def test_model_with_and_without_fast_paths_matches_the_notebook(nb, size, batch):
    # 32: stages 2-4 on 4x4, 2x2 and 1x1 maps, and stage 1's 8x8 too at batch 64; 64: 8x8 (Paddle's conv at
    # batch 2), 4x4, 2x2. Fast path on, then off.
    reference, port = build_pair(seed=2, num_classes=10, **TINY)
    reference.eval(), port.eval()
    x = paddle.randn([batch, 3, size, size])
    assert "small_map_dwconv" in port.cpu_formulations  # built on the CPU
    with paddle.no_grad():
        expected = reference(x)
        fast = port(x)
        fastpath.install(port, cpu=False)
        slow = port(x)
    assert rel_err(expected, fast) <= 1e-5
    assert rel_err(expected, slow) <= 1e-5


@pytest.mark.parametrize("batch", [3, 64])  # 64: stage 1's 8x8 maps take the matmul too
def test_train_step_gradients_match_the_notebook(nb, batch):
    reference, port = build_pair(seed=4, num_classes=10, **TINY)
    x, y = paddle.randn([batch, 3, 32, 32]), paddle.randint(0, 10, [batch])
    for model, loss_fn in ((reference, nb.LabelSmoothingCrossEntropy()), (port, up.LabelSmoothingCrossEntropy())):
        loss_fn(model(x), y).backward()
    theirs = dict(reference.named_parameters())
    for name, p in port.named_parameters():
        ref = theirs[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), ref, rtol=1e-4, atol=1e-6 * max(np.abs(ref).max(), 1e-3),
                                   err_msg=name)


def test_layers_watched_by_hooks_are_called_as_layers():
    # paddle.summary and paddle.flops count layers through forward hooks: a watched conv must really be called
    conv = on_cpu(nn.Conv2D(8, 8, 3, 1, 1, groups=8))
    nn.initializer.Normal()(conv.bias)
    tokens, image = paddle.randn([2, 4, 8]), paddle.randn([2, 8, 5, 5])
    unwatched = fastpath.depthwise3x3(conv, tokens, 2, 2), fastpath.conv_channels_last(conv, image)
    calls = []
    handle = conv.register_forward_post_hook(lambda layer, inputs, output: calls.append(output.shape))
    assert fastpath.watched(conv)
    watched = fastpath.depthwise3x3(conv, tokens, 2, 2), fastpath.conv_channels_last(conv, image)
    handle.remove()
    assert calls == [[2, 8, 2, 2], [2, 8, 5, 5]] and not fastpath.watched(conv)
    for fast, called in zip(unwatched, watched):  # the same numbers either way (2x2 and the bias: bitwise)
        np.testing.assert_array_equal(fast.numpy(), called.numpy())
    layer = on_cpu(nn.Linear(8, 3))  # its forward is the formulation's: hooks see a Linear called as a layer
    assert type(layer) is nn.Linear and "forward" in layer.__dict__
    handle = layer.register_forward_post_hook(lambda layer, inputs, output: calls.append(output.shape))
    layer(tokens)
    handle.remove()
    assert calls[-1] == [2, 4, 3]


def paddles_conv_channels_last(conv: nn.Conv2D, image: paddle.Tensor) -> paddle.Tensor:
    """Paddle's own conv with its bias, as the notebook runs it: [B, Cin, H, W] -> [B, H', W', Cout]."""
    return conv(image).transpose([0, 2, 3, 1])


@pytest.mark.parametrize("H,W,stride,batch", [(2, 2, 2, 5), (4, 4, 2, 3), (8, 8, 2, 2), (1, 1, 2, 4), (3, 5, 2, 2),
                                              (4, 4, 1, 2), (7, 7, 1, 3)])
def test_small_map_conv_equals_paddles_conv_forward_and_backward(H, W, stride, batch):
    # The Merge_Blocks at 32x32 input: 8x8 -> 4x4, 4x4 -> 2x2, 2x2 -> 1x1 (stride 2); and stride 1, non-square.
    paddle.seed(H * 10 + W + stride)
    conv = on_cpu(nn.Conv2D(6, 10, 3, stride, 1))
    nn.initializer.Normal()(conv.bias)
    image = paddle.randn([batch, 6, H, W])
    image.stop_gradient = False
    assert fastpath._conv_as_matmul_applies(conv, image)
    got = fastpath.conv_channels_last(conv, image)
    expected = paddles_conv_channels_last(conv, image)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)  # the same sums, reordered
    upstream = paddle.randn(expected.shape)
    grads = paddle.grad(got, [image, conv.weight, conv.bias], upstream)
    ref_grads = paddle.grad(expected, [image, conv.weight, conv.bias], upstream)
    for g, r in zip(grads, ref_grads):
        assert rel_err(r.numpy(), g.numpy()) < 1e-5


def test_large_maps_grouped_and_disabled_convs_are_paddles_own():
    conv, depthwise = on_cpu(nn.Conv2D(4, 8, 3, 2, 1)), nn.Conv2D(4, 4, 3, 1, 1, groups=4)
    nn.initializer.Normal()(conv.bias)
    small, large = paddle.randn([2, 4, 8, 8]), paddle.randn([2, 4, 9, 9])  # 64 tokens: the limit; 81: above it
    assert fastpath._conv_as_matmul_applies(conv, small) and not fastpath._conv_as_matmul_applies(conv, large)
    assert not fastpath._conv_as_matmul_applies(depthwise, small)
    np.testing.assert_allclose(fastpath.conv_channels_last(conv, large).numpy(),  # the bias added channels-last
                               paddles_conv_channels_last(conv, large).numpy(), rtol=1e-6, atol=1e-6)
    on_cpu(conv, disabled=("small_map_conv",))
    np.testing.assert_array_equal(fastpath.conv_channels_last(conv, small).numpy(),
                                  paddles_conv_channels_last(conv, small).numpy())


def test_linear_and_bias_gradients_by_matmul_equal_paddles_linear():
    paddle.seed(3)
    layer = nn.Linear(12, 20)
    nn.initializer.Normal()(layer.bias)
    x = paddle.randn([4, 9, 12])
    x.stop_gradient = False
    upstream = paddle.randn([4, 9, 20])
    assert fastpath._bias_gets_a_gradient(layer.bias)
    expected = layer(x)  # Paddle's Linear
    got = on_cpu(layer)(x)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())  # the forward is Paddle's matmul plus add
    grads = paddle.grad(got, [x, layer.weight, layer.bias], upstream)
    ref_grads = paddle.grad(expected, [x, layer.weight, layer.bias], upstream)
    np.testing.assert_array_equal(grads[0].numpy(), ref_grads[0].numpy())
    np.testing.assert_array_equal(grads[1].numpy(), ref_grads[1].numpy())
    np.testing.assert_allclose(grads[2].numpy(), upstream.numpy().sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    assert rel_err(ref_grads[2].numpy(), grads[2].numpy()) < 1e-6
    # a gradient asked for the input only (paddle.grad leaves the parameters out): no error, the same gradient
    np.testing.assert_array_equal(paddle.grad(layer(x), x, upstream)[0].numpy(), ref_grads[0].numpy())


def test_bias_is_added_plainly_without_gradients():
    x, bias = paddle.randn([3, 5]), paddle.randn([5])
    bias.stop_gradient = False
    assert fastpath._bias_gets_a_gradient(bias)
    with paddle.no_grad():
        assert not fastpath._bias_gets_a_gradient(bias)
    bias.stop_gradient = True
    assert not fastpath._bias_gets_a_gradient(bias)
    np.testing.assert_array_equal(fastpath.add_bias(x, bias).numpy(), (x + bias).numpy())


def test_the_choice_is_made_once_per_model_and_follows_its_device():
    model = up.UniNeXt(num_classes=10, **TINY)
    assert set(model.cpu_formulations) >= {"bias_grad_matmul", "small_map_dwconv", "small_map_conv"}
    linear = model.stage1[0].qkv
    assert type(linear) is nn.Linear and linear.forward.__func__ is fastpath._linear_forward
    portable = fastpath.install(model, cpu=False)
    assert portable == [] and "forward" not in linear.__dict__ and model.stage1[0].cpe.cpu_formulations == frozenset()
    model.to(device="cpu")  # moved (back) to the CPU: chosen again for it
    assert linear.forward.__func__ is fastpath._linear_forward and model.cpu_formulations
