"""Real image data sets made on the fly from scikit-learn's handwritten digits (no network).

``make_image_folder`` writes ``train/<class>/`` and ``val/<class>/`` folders of PNG, JPEG and BMP files in every
mode a user's images come in (grey "L", "RGB", "RGBA", palette "P" with a transparent entry, 16-bit grey
"I;16"), at varied sizes; ``make_list_files`` describes the same images with PaddleClas/PaddleX list files.
``write_image`` saves one image in one mode and returns the RGB pixels a reader must give back for it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # sorted != digit order
MODES = ("L", "RGB", "RGBA", "P", "I;16")
LEVELS = 17  # the digits' grey levels: 0..16
_EXTENSIONS = {"L": (".png", ".jpg"), "RGB": (".jpg", ".png", ".bmp"), "RGBA": (".png",), "P": (".png",),
               "I;16": (".png",)}


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target  # [1797, 8, 8] levels 0..16, [1797] digit


def digit_levels(digit: int, k: int) -> np.ndarray:
    """The ``k``-th image of ``digit`` as [H, W] grey levels 0..16, upscaled to a size that varies with ``k``
    (nearest neighbour, so the levels stay exact; 10x10 up to 47x41, not square)."""
    images, targets = _digits()
    levels = images[np.flatnonzero(targets == digit)[k]]
    size = (10 + (7 * k + digit) % 38, 10 + (5 * k + 3 * digit) % 32)  # (width, height)
    return np.asarray(Image.fromarray(levels).resize(size, Image.NEAREST))


def class_colour(label: int) -> np.ndarray:
    """[3] float: the colour a class's digits are drawn in (its ink at level 16)."""
    return np.array([255, 64 + 40 * label % 192, 255 - 25 * label], dtype=np.float64)


def write_image(path: Path, levels: np.ndarray, mode: str, colour: np.ndarray) -> np.ndarray:
    """Save [H, W] grey ``levels`` (0..16) at ``path`` in ``mode`` and return the [H, W, 3] uint8 RGB image a
    reader must give back (exact for PNG and BMP, JPEG is lossy). Grey modes ("L", "I;16") hold the levels
    scaled to 0..255 (and to 0..65535), colour modes the levels times ``colour``; "RGBA" has a varying alpha
    (dropped by the reader), "P" draws from a 17-entry palette whose entry 0 is transparent."""
    grey = np.round(levels * (255 / 16)).astype(np.uint8)  # [H, W]
    palette = np.round(np.arange(LEVELS)[:, None] / 16 * colour).astype(np.uint8)  # [17, 3]
    rgb = palette[levels]  # [H, W, 3]
    if mode == "L":
        Image.fromarray(grey).save(path)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # "I;16", 255 * 257 = 65535
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "RGB":
        Image.fromarray(rgb).save(path)
        return rgb
    if mode == "RGBA":
        alpha = np.linspace(0, 255, levels.size).astype(np.uint8).reshape(levels.shape)
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
        return rgb
    if mode == "P":
        image = Image.fromarray(levels)
        image.putpalette(palette.reshape(-1).tolist())  # "L" -> "P"
        image.save(path, transparency=0)
        return rgb
    raise ValueError(f"unknown mode {mode}")


def make_image_folder(root: Path, classes: int = 3, per_class: int = 5, val_per_class: int = 2) -> Path:
    """Write ``root/train/<class>/`` (``per_class`` images each) and ``root/val/<class>/`` (``val_per_class``)
    with the first ``classes`` of CLASS_NAMES; the modes and file types cycle over the files. Returns ``root``."""
    root = Path(root)
    for label, name in enumerate(CLASS_NAMES[:classes]):
        for split, first, count in (("train", 0, per_class), ("val", per_class, val_per_class)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(first, first + count):
                mode = MODES[(k + label) % len(MODES)]
                extension = _EXTENSIONS[mode][(label + k // len(MODES)) % len(_EXTENSIONS[mode])]
                write_image(folder / f"{name}_{k:03d}_{mode.replace(';', '')}{extension}", digit_levels(label, k),
                            mode, class_colour(label))
    return root


def make_list_files(root: Path) -> Path:
    """Describe the image folder at ``root`` with list files written next to it: ``train_list.txt`` and
    ``val_list.txt`` (``train/<class>/<file> <label>``, labels by sorted class name, the folders' order) and
    ``labels.txt`` (the sorted class names). Returns ``root``."""
    root = Path(root)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    for split in ("train", "val"):
        lines = [f"{path.relative_to(root).as_posix()} {label}"
                 for label, name in enumerate(classes) for path in sorted((root / split / name).iterdir())]
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    return root
