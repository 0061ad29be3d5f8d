"""The notebook's local-window helpers, ``local_group``, ``img2group`` and ``group2image``, for users of its API.

Same signatures and return values as the notebook's (section 2.3.3), computed by the model's own windowing
(``model._window`` / ``model._unwindow``), so there is one implementation of the window layout and its padding
rule. The model itself does not call these.
"""
from __future__ import annotations

import paddle

from .model import _unwindow, _window, _window_padding

__all__ = ["local_group", "img2group", "group2image"]


def local_group(x: paddle.Tensor, H: int, W: int, ws: int) -> tuple[paddle.Tensor, int, int, int, int, bool]:
    """Split tokens into ws x ws windows, zero-padding the map on the right and bottom.

    x: [B, H*W, C] -> [B*Gh*Gw, ws*ws, C]; also returns the padded H and W, pad_right, pad_bottom and whether
    it padded (when one side needs padding, both are padded by ``ws - side % ws``, as the notebook does).
    """
    windows, Hp, Wp, pad_right, pad_bottom, pad_opt = img2group(x, H, W, ws, 1)
    return windows.squeeze(1), Hp, Wp, pad_right, pad_bottom, pad_opt  # [B*G, 1, ws*ws, C] -> [B*G, ws*ws, C]


def img2group(x: paddle.Tensor, H: int, W: int, ws: int,
              num_head: int) -> tuple[paddle.Tensor, int, int, int, int, bool]:
    """x: [B, H*W, C] -> [B*Gh*Gw, heads, ws*ws, C/heads], plus ``local_group``'s padding bookkeeping."""
    pad_bottom, pad_right = _window_padding(H, W, ws)
    windows = _window(x, H, W, ws, num_head)
    return windows, H + pad_bottom, W + pad_right, pad_right, pad_bottom, bool(pad_bottom or pad_right)


def group2image(x: paddle.Tensor, H: int, W: int, pad_right: int, pad_bottom: int, pad_opt: bool,
                ws: int) -> paddle.Tensor:
    """Inverse of ``img2group``: [B*Gh*Gw, heads, ws*ws, C/heads] -> [B, (H - pad_bottom)*(W - pad_right), C].

    H and W are the padded sides ``img2group`` returned; the padding is cropped when ``pad_opt``.
    """
    if not pad_opt:
        pad_right = pad_bottom = 0
    return _unwindow(x, H - pad_bottom, W - pad_right, H, W, ws)
