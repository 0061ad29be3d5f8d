"""Your own data for the inference scripts' tests: a 3-class image folder of real images (tests/image_fixture.py) and
a UniNeXt-T checkpoint for it (random weights, its class names beside them, as train.py writes them), and the
eager model's probabilities for image files, computed here without uninext_paddle.predict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle

from tests.image_fixture import make_image_folder
from uninext_paddle import create_model
from uninext_paddle.checkpoint import save_class_names
from uninext_paddle.data import build_test_transforms
from uninext_paddle.image_data import read_rgb

NAMES = ["one", "two", "zero"]  # make_image_folder's first three classes, as their folders sort
SIZE = 32


def make_own_data(root: Path) -> dict:
    """``root/digits`` (3 val images a class), ``root/best_model.pdparams`` + ``best_model.classes.json``. Returns
    "data", "ckpt", the eval-mode "model" and "val": the val split's (path, label) pairs in the split's order."""
    data = make_image_folder(Path(root) / "digits", classes=3, per_class=1, val_per_class=3)
    paddle.seed(1)
    model = create_model("T", num_classes=len(NAMES))
    model.eval()
    ckpt = Path(root) / "best_model.pdparams"
    paddle.save(model.state_dict(), str(ckpt))
    save_class_names(str(ckpt), NAMES)
    val = [(str(path), label) for label, name in enumerate(NAMES) for path in sorted((data / "val" / name).iterdir())]
    return {"data": str(data), "ckpt": str(ckpt), "model": model, "val": val}


@paddle.no_grad()
def eager_probabilities(model: paddle.nn.Layer, files: list[str], size: int = SIZE) -> np.ndarray:
    """[files, classes]: softmax of ``model``'s logits on each file read as RGB and put through the notebook's test
    transforms at ``size``."""
    transform = build_test_transforms(size)
    x = paddle.to_tensor(np.stack([transform(read_rgb(file)) for file in files]))  # [N, 3, size, size]
    return paddle.nn.functional.softmax(model(x), axis=-1).numpy()
