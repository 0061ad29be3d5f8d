"""uninext_paddle: the UniNeXt notebook's model, loss and training on CIFAR-10, as a Paddle package.

Importing it changes nothing process-wide (no warning filters, flags or environment variables); the scripts
make such settings themselves, at their top.
"""
from __future__ import annotations

from .droppath import DropPath, drop_path
from .loss import LabelSmoothingCrossEntropy
from .model import (VARIANTS, DilatedAttention, Merge_Block, Mlp, UniNeXt, UniNeXt_B, UniNeXt_S, UniNeXt_T,
                    UnifiedBlock, create_model, stage_sizes)
from .notebook_windows import group2image, img2group, local_group

__all__ = [
    "DropPath", "drop_path", "LabelSmoothingCrossEntropy", "VARIANTS", "DilatedAttention", "Merge_Block", "Mlp",
    "UniNeXt", "UniNeXt_B", "UniNeXt_S", "UniNeXt_T", "UnifiedBlock", "create_model", "stage_sizes",
    "group2image", "img2group", "local_group",
]
