"""uninext_paddle: the UniNeXt notebook's model, loss and training on CIFAR-10, as a Paddle package."""
import warnings

# Paddle warns on import when ccache (a C++ build cache for custom ops) is absent: noise for this project.
warnings.filterwarnings("ignore", message="No ccache found")
from .droppath import DropPath, drop_path
from .loss import LabelSmoothingCrossEntropy
from .model import (VARIANTS, DilatedAttention, Merge_Block, Mlp, UniNeXt, UniNeXt_B, UniNeXt_S, UniNeXt_T,
                    UnifiedBlock, create_model, group2image, img2group, local_group)

__all__ = [
    "DropPath", "drop_path", "LabelSmoothingCrossEntropy", "VARIANTS", "DilatedAttention", "Merge_Block", "Mlp",
    "UniNeXt", "UniNeXt_B", "UniNeXt_S", "UniNeXt_T", "UnifiedBlock", "create_model", "group2image", "img2group",
    "local_group",
]
