"""The port's UniNeXt against the notebook's own code: parameters, logits, training step, quirks."""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

import uninext_paddle as up
from tests.conftest import TINY, rel_err
from tests.notebook_init import build_pair, notebook_init
from uninext_paddle.errors import ConfigError


def n_params(model: paddle.nn.Layer) -> int:
    return sum(int(p.numel()) for p in model.parameters())


@pytest.mark.parametrize("builder,count", [("UniNeXt_T", 23_021_386), ("UniNeXt_S", 51_425_002),
                                           ("UniNeXt_B", 91_090_570)])
def test_parameter_counts_and_names_equal_the_notebook(nb, builder, count):
    port = getattr(up, builder)()
    reference = getattr(nb, builder)()
    assert n_params(port) == count
    ours, theirs = port.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert {k: list(v.shape) for k, v in ours.items()} == {k: list(v.shape) for k, v in theirs.items()}


def test_builders_take_num_classes_and_pass_kwargs_through():
    model = up.UniNeXt_T(num_classes=100, drop_path_rate=0.2)
    assert model.head.weight.shape == [512, 100]
    assert isinstance(model.stage4[-1].drop_path, up.DropPath)
    assert model.stage4[-1].drop_path.drop_prob == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="unknown UniNeXt variant 'XL': choose one of T, S, B"):
        up.create_model("XL")


def test_variants_table_holds_every_builder_argument_of_the_notebook():
    # The notebook's builders: UniNeXt(embed_dim=64, depth=[2,2,18,2], num_classes=num_classes,
    # ws=[7,7,7,7], num_heads=[2,4,8,16], mlp_ratio=4.) and the same for S (96) and B (128).
    for name, embed_dim, heads in (("T", 64, (2, 4, 8, 16)), ("S", 96, (3, 6, 12, 24)), ("B", 128, (4, 8, 16, 32))):
        assert up.VARIANTS[name] == dict(embed_dim=embed_dim, depth=(2, 2, 18, 2), num_heads=heads, ws=(7, 7, 7, 7),
                                         mlp_ratio=4.)
    paper = up.create_model("T", ws=(7, 7, 5, 7), paper_stage3_heads=True)  # kwargs override the table
    assert paper.stage3[0].attns.ws == 5 and up.VARIANTS["T"]["ws"] == (7, 7, 7, 7)


def test_uninext_defaults_build_a_working_model_and_a_scalar_num_heads_is_a_clear_error():
    paddle.seed(0)
    model = up.UniNeXt(num_classes=3)  # embed_dim 96, depth (2, 2, 6, 2), heads (3, 6, 12, 24)
    assert [b.attns.num_heads for b in model.stage4] == [24, 24]
    assert [b.attns.num_heads for b in model.stage3] == [6] * 6  # stage 3 reads heads[1], as in the notebook
    model.eval()
    with paddle.no_grad():
        assert model(paddle.randn([1, 3, 32, 32])).shape == [1, 3]
    with pytest.raises(ConfigError, match="num_heads needs one value for each of its 4 stages, got 12"):
        up.UniNeXt(num_heads=12)  # the notebook's default
    with pytest.raises(ConfigError, match="depth needs one value"):
        up.UniNeXt(depth=(2, 2, 6))


def test_num_features_is_the_width_of_the_pooled_features():
    model = up.UniNeXt(num_classes=0, **TINY)  # embed_dim 16: stage 4 has 128 channels
    model.eval()
    with paddle.no_grad():
        features = model(paddle.randn([2, 3, 32, 32]))
    assert model.embed_dim == 16 and model.num_features == 128 and features.shape == [2, 128]
    model.reset_classifier(5)
    assert model.head.weight.shape == [128, 5]


def test_linear_init_is_truncated_at_two_standard_deviations_as_on_the_notebooks_paddle():
    # Paddle 2.x's TruncatedNormal(std=.02) cut at +-2 std; Paddle >= 2.6 takes absolute bounds (default +-2),
    # which would leave std 0.0200 and |w| up to ~0.1 here.
    paddle.seed(0)
    layer = paddle.nn.Linear(512, 512)
    up.UniNeXt(num_classes=10, **TINY)._init_weights(layer)
    w = layer.weight.numpy()
    assert np.abs(w).max() <= 0.04
    # std of N(0, s) truncated to +-2s: s * sqrt(1 - 2 * 2 * pdf(2) / (cdf(2) - cdf(-2))) = 0.017592
    pdf2 = math.exp(-2) / math.sqrt(2 * math.pi)
    expected = 0.02 * math.sqrt(1 - 4 * pdf2 / math.erf(2 / math.sqrt(2)))
    assert abs(w.std() - expected) < 2e-4  # the sample std of 262144 draws is within ~3e-5 of it
    assert float(np.abs(layer.bias.numpy()).max()) == 0.0


def test_same_seed_gives_the_notebooks_initial_weights(nb):
    # The reference is the notebook's code with its TruncatedNormal(std=.02) cut at +-2 std as on the Paddle 2.x
    # it ran on (tests/notebook_init.py patches the initializer its _init_weights looks up, for the build only);
    # the port has these bounds itself.
    paddle.seed(7)
    with notebook_init():
        reference = nb.UniNeXt(num_classes=10, **TINY)
    paddle.seed(7)
    port = up.UniNeXt(num_classes=10, **TINY)
    theirs = reference.state_dict()
    for name, value in port.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), theirs[name].numpy(), err_msg=name)
    # Unpatched, the notebook's line draws uncut weights on this Paddle: not the notebook's, and not the port's.
    paddle.seed(7)
    uncut = nb.UniNeXt(num_classes=10, **TINY)
    assert np.abs(uncut.head.weight.numpy()).max() > 0.04
    assert not np.array_equal(uncut.head.weight.numpy(), port.head.weight.numpy())


def test_checkpoints_load_both_ways_without_missing_or_unexpected_keys(nb, tmp_path):
    paddle.seed(1)
    reference = nb.UniNeXt_T()
    path = str(tmp_path / "best_model.pdparams")
    paddle.save(reference.state_dict(), path)
    port = up.UniNeXt_T()
    missing, unexpected = port.set_state_dict(paddle.load(path))
    assert (missing, unexpected) == ([], [])
    np.testing.assert_array_equal(port.head.weight.numpy(), reference.head.weight.numpy())

    paddle.save(port.state_dict(), path)
    fresh = nb.UniNeXt_T()
    missing, unexpected = fresh.set_state_dict(paddle.load(path))
    assert (missing, unexpected) == ([], [])
    np.testing.assert_array_equal(fresh.stage3[5].qkv.weight.numpy(), reference.stage3[5].qkv.weight.numpy())


@pytest.mark.parametrize("size,batch", [(224, 1), (32, 4), (64, 2), (96, 2)])
def test_same_weights_give_the_notebooks_logits(nb, size, batch):
    # 32: every stage pads its windows; 64 and 96: maps of 16/8/4/2 and 24/12/6/3, not multiples of 7.
    reference = nb.UniNeXt_T()
    port = up.UniNeXt_T()
    port.set_state_dict(reference.state_dict())
    reference.eval(), port.eval()
    x = paddle.randn([batch, 3, size, size])
    with paddle.no_grad():
        expected, got = reference(x), port(x)
    assert got.shape == [batch, 10]
    assert rel_err(expected, got) <= 1e-5


def test_train_mode_with_droppath_matches_under_the_same_seed():
    reference, port = build_pair(seed=3, num_classes=10, drop_path_rate=0.5, drop_rate=0.1, **TINY)
    x = paddle.randn([8, 3, 32, 32])
    outputs = []
    for model in (reference, port):
        model.train()
        paddle.seed(11)
        outputs.append(model(x))
    assert rel_err(outputs[0], outputs[1]) <= 1e-5
    paddle.seed(12)  # a different draw drops other samples: the match above is not trivial
    assert rel_err(outputs[0], port(x)) > 1e-3


def test_one_adam_step_gives_the_notebooks_gradients_and_parameters(nb):
    reference, port = build_pair(seed=5, num_classes=10, drop_path_rate=0.1, **TINY)
    lr, eps, weight_decay = 1e-4, 1e-8, 1e-5  # paddle.optimizer.Adam's epsilon
    initial = {name: p.numpy().copy() for name, p in port.named_parameters()}
    x, y = paddle.randn([4, 3, 32, 32]), paddle.to_tensor([1, 3, 5, 7])
    grads = []
    for model, loss_fn in ((reference, nb.LabelSmoothingCrossEntropy()), (port, up.LabelSmoothingCrossEntropy())):
        model.train()
        opt = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=lr, weight_decay=weight_decay)
        paddle.seed(21)
        loss_fn(model(x), y).backward()
        grads.append({name: p.grad.numpy().copy() for name, p in model.named_parameters()})
        opt.step()
    tolerance = {name: 1e-5 * np.abs(expected).max() + 1e-12 for name, expected in grads[0].items()}
    for name, expected in grads[0].items():
        assert np.abs(grads[1][name] - expected).max() <= tolerance[name], name
    # Adam's first step moves a parameter by lr * g / (|g| + eps) (the bias corrections cancel; g includes the L2
    # weight decay), whose slope lr * eps / (|g| + eps)^2 reaches lr / eps = 1e4 at g = 0. So a gradient held to d
    # above may move the step by up to lr * d * eps / (max(|g| - d, 0) + eps)^2, never more than 2 lr: nothing for
    # a resolved gradient, a good part of lr for one within rounding of zero (e.g. where the decay cancels it).
    # On top of that slack the parameters are held to 1e-5 relative, or 1% of one learning-rate step.
    theirs = reference.state_dict()
    for name, value in port.state_dict().items():
        g, d = np.abs(grads[0][name] + weight_decay * initial[name]), tolerance[name]
        slack = np.minimum(2 * lr, lr * d * eps / (np.maximum(g - d, 0) + eps) ** 2)
        expected = theirs[name].numpy()
        assert (np.abs(value.numpy() - expected) <= 1e-5 * np.abs(expected) + 1e-2 * lr + slack).all(), name
        assert np.abs(expected - initial[name]).max() > 0.5 * lr, name  # every tensor moved by about one step


def test_stage3_reads_stage2_heads_unless_the_paper_layout_is_asked_for():
    heads = [2, 4, 8, 16]
    quirk = up.UniNeXt_T()
    assert [b.attns.num_heads for b in quirk.stage3] == [heads[1]] * 18
    paper = up.UniNeXt_T(paper_stage3_heads=True, ws=[7, 7, 5, 7])
    assert [(b.attns.num_heads, b.attns.ws) for b in paper.stage3] == [(heads[2], 5)] * 18
    assert {k: v.shape for k, v in paper.state_dict().items()} == {k: v.shape for k, v in quirk.state_dict().items()}
    paper.set_state_dict(quirk.state_dict())
    paper.eval(), quirk.eval()
    x = paddle.randn([1, 3, 64, 64])
    assert rel_err(quirk(x), paper(x)) > 1e-4  # same weights, other heads: other numbers


def test_notebook_quirks_are_kept():
    model = up.UniNeXt_T()
    block = model.stage1[0]
    assert block.qkv.bias is not None
    assert isinstance(block.mlp.norm_act[0], paddle.nn.LayerNorm) and isinstance(block.mlp.norm_act[1], paddle.nn.GELU)
    # KaimingNormal(fan_in) for a 3x3 conv over 3 channels has std sqrt(2/27) = 0.27, far from Paddle's default
    # Xavier init (the Linears' truncated normal: test above).
    assert abs(model.stem1.weight.numpy().std() - np.sqrt(2 / 27)) < 0.02
    assert float(np.abs(model.stage1[0].cpe.bias.numpy()).max()) == 0.0


def test_non_square_input_is_a_clear_error_or_works_when_asked_for():
    tiny = dict(num_classes=10, **TINY)
    with pytest.raises(ConfigError, match="square images"):
        up.UniNeXt(**tiny)(paddle.randn([1, 3, 32, 64]))
    with pytest.raises(ConfigError, match="not a square map"):
        up.Merge_Block(4, 8)(paddle.randn([1, 6, 4]))
    paddle.seed(0)
    square_only = up.UniNeXt(**tiny)
    paddle.seed(0)
    any_shape = up.UniNeXt(non_square=True, **tiny)
    square_only.eval(), any_shape.eval()
    assert any_shape(paddle.randn([2, 3, 32, 96])).shape == [2, 10]
    x = paddle.randn([2, 3, 64, 64])
    assert rel_err(square_only(x), any_shape(x)) == 0.0


def test_windowing_equals_the_notebooks_img2group_and_group2image(nb):
    from uninext_paddle.model import _unwindow, _window, _window_padding

    for H, W in [(14, 14), (8, 8), (2, 2), (9, 13)]:
        x = paddle.randn([2, H * W, 12])
        expected, Hp, Wp, pr, pb, opt = nb.img2group(x, H, W, 7, 3)
        assert (Hp - H, Wp - W) == _window_padding(H, W, 7)
        windows = _window(x, H, W, 7, 3)
        np.testing.assert_array_equal(windows.numpy(), expected.numpy())
        back = nb.group2image(windows, Hp, Wp, pr, pb, opt, 7)
        np.testing.assert_array_equal(_unwindow(windows, H, W, Hp, Wp, 7).numpy(), back.numpy())
        np.testing.assert_array_equal(back.numpy(), x.numpy())


@pytest.mark.parametrize("height,width", [(224, 224), (32, 32), (100, 37)])
def test_stage_sizes_are_the_maps_the_convolutions_make(height, width):
    sizes = up.stage_sizes(height, width)
    assert up.stage_sizes(224, 224) == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    model = up.UniNeXt(num_classes=10, non_square=True, **TINY)
    seen = []  # [B, C, H, W] of stem1's output, then [B, H*W, C] of each Merge_Block's
    layers = [model.stem1, model.merge0, model.merge1, model.merge2, model.merge3]
    handles = [layer.register_forward_post_hook(lambda layer, inputs, out: seen.append(out.shape)) for layer in layers]
    model.eval()
    with paddle.no_grad():
        model(paddle.randn([1, 3, height, width]))
    for handle in handles:
        handle.remove()
    assert tuple(seen[0][2:]) == sizes[0]
    assert [shape[1] for shape in seen[1:]] == [h * w for h, w in sizes[1:]]


@pytest.mark.parametrize("H,W", [(1, 1), (2, 2), (4, 4), (3, 5), (6, 6), (7, 7), (8, 8), (9, 13)])
def test_attention_equals_the_notebooks_on_every_window_layout(nb, H, W):
    # One padded window (1x1 to 6x6, 3x5: only the real queries are computed), one exact window (7x7),
    # several padded windows (8x8, 9x13).
    reference, port = nb.DilatedAttention(24, ws=7, num_heads=3), up.DilatedAttention(24, ws=7, num_heads=3)
    port.set_state_dict(reference.state_dict())
    qkv = paddle.randn([2, H * W, 72])
    qkv.stop_gradient = False
    expected = reference(qkv.reshape([2, H * W, 3, 24]).transpose([2, 0, 1, 3]), H, W)
    got = port(qkv, H, W)
    assert got.shape == [2, H * W, 24]
    assert rel_err(expected, got) <= 1e-6
    expected_grad = paddle.grad(expected.sum(), qkv)[0]
    assert rel_err(expected_grad, paddle.grad(got.sum(), qkv)[0]) <= 1e-5


@pytest.mark.parametrize("H,W", [(1, 1), (2, 2), (3, 5)])
def test_one_window_attention_weighs_the_padded_zero_keys_as_the_notebook(nb, H, W):
    # Every query points away from every key: the real logits are about -3, so the window's padded keys (zeros:
    # logit 0) take most of each softmax. The port's one logit log(padded) must weigh them as the notebook's
    # padded keys, or the real keys' weights, and the output, would be off by a large factor. LePE is zeroed so
    # that the output is the attention's alone.
    reference, port = nb.DilatedAttention(24, ws=7, num_heads=3), up.DilatedAttention(24, ws=7, num_heads=3)
    for param in (reference.lepe.weight, reference.lepe.bias):
        param.set_value(paddle.zeros_like(param))
    port.set_state_dict(reference.state_dict())
    direction = paddle.ones([2, H * W, 24]) / math.sqrt(8)  # a unit vector in each head's 8 channels
    qkv = paddle.concat([3 * direction + 0.1 * paddle.randn([2, H * W, 24]), -3 * direction,
                         paddle.randn([2, H * W, 24])], axis=-1)
    qkv.stop_gradient = False
    stacked = qkv.reshape([2, H * W, 3, 24]).transpose([2, 0, 1, 3])  # the notebook's input layout
    expected, got = reference(stacked, H, W), port(qkv, H, W)
    assert rel_err(expected, got) <= 1e-5
    assert rel_err(paddle.grad(expected.sum(), qkv)[0], paddle.grad(got.sum(), qkv)[0]) <= 1e-5
    if H == W:  # the same attention on a window of the map's own size, without padded keys, is far off
        unpadded = nb.DilatedAttention(24, ws=H, num_heads=3)
        unpadded.set_state_dict(reference.state_dict())
        assert rel_err(expected, unpadded(stacked, H, W)) > 0.5
