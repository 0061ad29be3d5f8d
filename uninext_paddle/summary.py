"""Model summary, the notebook's section 2.3.4: ``paddle.summary``'s table and a FLOPs figure.

    python -m uninext_paddle.summary --variant T      # or S, B, all

FLOPs here are multiply-accumulates (MACs), Paddle's convention. ``paddle.flops`` only sees leaf layers
(Conv2D, Linear, LayerNorm, GELU, ...), not the two attention matmuls, which are plain tensor ops inside
``DilatedAttention``; those are counted analytically over the (padded) windows and reported separately.
"""
from __future__ import annotations

import argparse
import contextlib
import io

import paddle

from .cli import run_cli
from .model import VARIANTS, UniNeXt, _window_padding, create_model, stage_sizes

__all__ = ["attention_macs", "layer_macs", "summarize"]


def layer_macs(model: UniNeXt, image_size: int) -> int:
    """MACs of the model's layers for one image, as ``paddle.flops`` counts them (attention matmuls excluded)."""
    with contextlib.redirect_stdout(io.StringIO()):  # paddle.flops prints one line per layer type
        return int(paddle.flops(model, [1, 3, image_size, image_size], print_detail=False))


def attention_macs(model: UniNeXt, image_size: int) -> int:
    """MACs of ``q @ k^T`` and ``attn @ v`` for one image, over the zero-padded windows of the notebook's
    attention (on maps that pad to one window the model skips the padded query rows; not counted here)."""
    total = 0
    stages = (model.stage1, model.stage2, model.stage3, model.stage4)
    for stage, (H, W) in zip(stages, stage_sizes(image_size, image_size)[1:]):
        for block in stage:
            ws, dim = block.attns.ws, block.attns.dim
            pad_bottom, pad_right = _window_padding(H, W, ws)
            windows = ((H + pad_bottom) // ws) * ((W + pad_right) // ws)
            total += windows * 2 * (ws * ws) ** 2 * dim  # two [n, n] x [n, head_dim] products per head
    return total


def summarize(variant: str, image_size: int = 224, num_classes: int = 10) -> str:
    """``paddle.summary``'s table for UniNeXt-``variant`` followed by its MACs at ``image_size``."""
    model = create_model(variant, num_classes=num_classes)
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()) as table:
        paddle.summary(model, (1, 3, image_size, image_size))
    layers, attention = layer_macs(model, image_size), attention_macs(model, image_size)
    return (f"UniNeXt-{variant}\n{table.getvalue()}"
            f"MACs at {image_size}x{image_size}: {layers / 1e9:.3f} G in layers (paddle.flops) "
            f"+ {attention / 1e9:.3f} G in attention matmuls = {(layers + attention) / 1e9:.3f} G\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="T", choices=[*VARIANTS, "all"], help="UniNeXt variant (default: T)")
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (default: 224)")
    parser.add_argument("--num-classes", type=int, default=10, help="classes of the head (default: 10)")
    args = parser.parse_args()
    if args.image_size < 1 or args.num_classes < 0:
        parser.error("--image-size must be positive and --num-classes non-negative")
    for variant in VARIANTS if args.variant == "all" else [args.variant]:
        print(summarize(variant, args.image_size, args.num_classes))


if __name__ == "__main__":
    run_cli(main)
