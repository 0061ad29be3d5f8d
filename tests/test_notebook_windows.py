"""The notebook's window helpers (uninext_paddle/notebook_windows.py): the notebook's results, via the model's code."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

import uninext_paddle as up
from uninext_paddle.model import _unwindow, _window

# 14x14 and 7x7: no padding; 8x8, 2x2 (one window) and 9x13: padded, 7x7 windows.
LAYOUTS = [(14, 14), (7, 7), (8, 8), (2, 2), (9, 13)]


@pytest.mark.parametrize("H,W", LAYOUTS)
def test_img2group_and_group2image_are_the_models_windowing(H, W):
    x = paddle.randn([2, H * W, 12])
    windows, Hp, Wp, pad_right, pad_bottom, pad_opt = up.img2group(x, H, W, 7, 3)
    assert (Hp % 7, Wp % 7) == (0, 0) and (Hp - H, Wp - W) == (pad_bottom, pad_right)
    assert pad_opt == (H % 7 != 0 or W % 7 != 0)
    assert windows.shape == [2 * (Hp // 7) * (Wp // 7), 3, 49, 4]
    np.testing.assert_array_equal(windows.numpy(), _window(x, H, W, 7, 3).numpy())
    back = up.group2image(windows, Hp, Wp, pad_right, pad_bottom, pad_opt, 7)
    np.testing.assert_array_equal(back.numpy(), _unwindow(windows, H, W, Hp, Wp, 7).numpy())
    np.testing.assert_array_equal(back.numpy(), x.numpy())  # the padding is cropped away again


@pytest.mark.parametrize("H,W", LAYOUTS)
def test_helpers_return_what_the_notebooks_return(nb, H, W):
    x = paddle.randn([2, H * W, 12])
    for ours, theirs in ((up.local_group(x, H, W, 7), nb.local_group(x, H, W, 7)),
                         (up.img2group(x, H, W, 7, 3), nb.img2group(x, H, W, 7, 3))):
        assert ours[1:] == theirs[1:]  # padded H and W, pad_right, pad_bottom, pad_opt
        np.testing.assert_array_equal(ours[0].numpy(), theirs[0].numpy())
    windows, Hp, Wp, pad_right, pad_bottom, pad_opt = nb.img2group(x, H, W, 7, 3)
    np.testing.assert_array_equal(up.group2image(windows, Hp, Wp, pad_right, pad_bottom, pad_opt, 7).numpy(),
                                  nb.group2image(windows, Hp, Wp, pad_right, pad_bottom, pad_opt, 7).numpy())


def test_padding_rule_pads_both_sides_when_one_needs_it(nb):
    # The notebook's rule, kept: a 7x9 map pads its already-whole height by a full window too.
    x = paddle.randn([1, 7 * 9, 4])
    _, Hp, Wp, pad_right, pad_bottom, pad_opt = up.local_group(x, 7, 9, 7)
    assert (Hp, Wp, pad_right, pad_bottom, pad_opt) == (14, 14, 5, 7, True) == nb.local_group(x, 7, 9, 7)[1:]
