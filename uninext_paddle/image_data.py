"""Your own images: data sets from an image folder or from PaddleClas/PaddleX list files, and image file lists.

Three layouts of a data set path (``data_kind``):

- "cifar10": a file, the CIFAR-10 python tarball (the notebook's data; read by ``data.load_cifar10``);
- "folder": ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/...`` (or ``DIR/test/<class>/...``), the layout of
  ``paddle.vision.datasets.DatasetFolder`` and torchvision's ``ImageFolder``: the class names are the folder
  names, sorted, and a label is the index of its class name;
- "lists": ``DIR/train_list.txt`` and ``DIR/val_list.txt`` with ``relative/path.jpg label`` lines and an optional
  ``DIR/labels.txt`` (class names, one a line; without it the classes are 0..the largest label, named "0", "1",
  ...). When a folder has both, the list files win: they say exactly which images belong to which split.

Images are read as the notebook's cv2 backend gives CIFAR-10 to the transforms: uint8 [H, W, 3] RGB arrays
(``read_rgb``), whatever their size and mode. Every image is checked when the data set is loaded (it exists and
its header is an image's) and again when it is read; a problem raises ``DataError`` naming the file (and the
list file's line); ``loader.BatchLoader`` brings it to the training loop as itself.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, NamedTuple

import numpy as np
import paddle
from paddle.vision.datasets.folder import IMG_EXTENSIONS
from PIL import Image, ImageOps

from .errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "CIFAR10", "FOLDER", "LISTS", "TRAIN_LIST", "VAL_LIST", "LABELS", "SPLITS",
           "data_kind", "read_rgb", "check_image", "collect_image_files", "ImageFileDataset", "load_image_split",
           "load_image_splits"]

IMAGE_EXTENSIONS = IMG_EXTENSIONS  # Paddle's DatasetFolder's: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp
CIFAR10, FOLDER, LISTS = "cifar10", "folder", "lists"
TRAIN_LIST, VAL_LIST, LABELS = "train_list.txt", "val_list.txt", "labels.txt"
SPLITS = ("train", "val")
_FOLDER_SPLITS = {"train": ("train",), "val": ("val", "test")}  # val/ first, else test/
_LIST_FILES = {"train": TRAIN_LIST, "val": VAL_LIST}
LAYOUTS = ("the CIFAR-10 python tarball (a file), an image folder (DIR/train/<class>/*.jpg and DIR/val/<class>/... "
           f"or DIR/test/<class>/...) or list files (DIR/{TRAIN_LIST} and DIR/{VAL_LIST} with 'relative/path.jpg "
           f"label' lines, optional DIR/{LABELS} with the class names)")
_LIST_LINE = re.compile(r"(.*\S)\s+(\d+)", re.ASCII)  # the path may hold spaces; the label is the last word
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's modes for 16-bit grey ("I": older Pillows)


def data_kind(path: str) -> str:
    """"cifar10", "folder" or "lists": the layout of the data set at ``path`` (see the module doc).

    A missing path is "cifar10" when it names a tarball (``data.ensure_cifar10`` downloads it there, as for the
    default), otherwise a ``DataError``: a mistyped folder must not start a 170 MB download under its name.
    """
    if os.path.isfile(path):
        return CIFAR10
    if not os.path.isdir(path):
        if path.endswith((".tar.gz", ".tgz")):
            return CIFAR10
        raise DataError(f"{path} does not exist; a data set is {LAYOUTS}")
    lists = [name for name in (TRAIN_LIST, VAL_LIST) if os.path.isfile(os.path.join(path, name))]
    if len(lists) == 2:
        return LISTS
    if os.path.isdir(os.path.join(path, "train")) and any(os.path.isdir(os.path.join(path, split))
                                                          for split in _FOLDER_SPLITS["val"]):
        return FOLDER
    if lists:
        missing = ({TRAIN_LIST, VAL_LIST} - set(lists)).pop()
        raise DataError(f"{path} has {lists[0]} but no {missing}; a data set is {LAYOUTS}")
    raise DataError(f"{path} is a folder but not a data set: a data set is {LAYOUTS}")


def read_rgb(path: str) -> np.ndarray:
    """The image at ``path`` as a uint8 [H, W, 3] RGB array, what the notebook's cv2 backend gives the transforms.

    Any mode becomes RGB: grey (and 1-bit) repeated over the channels, palette entries looked up (a transparent
    entry keeps its colour), alpha dropped, CMYK and YCbCr converted; 16-bit grey is scaled to 8 bits
    (round(v * 255 / 65535)), not clipped. The EXIF orientation is applied, as cv2.imread does. A file that
    cannot be decoded (missing, not an image, truncated) raises ``DataError`` naming it.
    """
    try:
        with Image.open(path) as image:
            return _to_rgb(ImageOps.exif_transpose(image))  # exif_transpose decodes the pixels
    except Exception as err:  # Pillow's decoders fail with many types on damaged files (OSError, SyntaxError, ...)
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err


def _to_rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 RGB pixels of a decoded Pillow ``image`` of any mode (see ``read_rgb``)."""
    if image.mode in _SIXTEEN_BIT:
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)  # [H, W]; "I" may hold 32-bit values
        grey = ((pixels * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # resolves a transparent palette entry without Pillow's warning
    return np.array(image.convert("RGB"))  # a writable copy, like cv2.imread's


def check_image(path: str) -> None:
    """Cheap check that ``path`` is an image: it exists and Pillow recognises its header (pixels are not
    decoded: a truncated image passes here and fails in ``read_rgb``). ``DataError`` naming the file if not."""
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist")
    try:
        with Image.open(path):
            pass
    except Exception as err:  # UnidentifiedImageError, IsADirectoryError, DecompressionBombError, ...
        raise DataError(f"{path}: not an image ({type(err).__name__}: {err})") from err


def _image_files(folder: str) -> list[str]:
    """The image files under ``folder`` (by extension, any case, recursively, following links), sorted; hidden
    files and folders (".ipynb_checkpoints", macOS "._x.jpg") are skipped."""
    found = []
    for parent, folders, files in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [os.path.join(parent, name) for name in files
                  if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def collect_image_files(paths: list[str]) -> list[str]:
    """The image files named by ``paths``, in order: a file as given (whatever its extension), a folder as its
    image files (recursively, sorted). Each is checked to be an image (``check_image``); ``DataError`` names a
    missing path, a file that is not an image and a folder without images."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = _image_files(path)
            if not found:
                raise DataError(f"{path} is a folder with no images ({' '.join(IMAGE_EXTENSIONS)}, searched "
                                "recursively)")
            files += found
        else:
            files.append(path)
    if not files:
        raise DataError("no image files given")
    for file in files:
        check_image(file)
    return files


class ImageFileDataset(paddle.io.Dataset):
    """Images read from files: item i is (``transform`` of ``read_rgb(samples[i][0])``, int64 label), as
    ``paddle.vision.datasets.Cifar10`` gives its items with the cv2 backend.

    Args:
        samples: (image path, label) pairs, labels indexing ``classes``.
        classes: the class names.
        transform: applied to the uint8 [H, W, 3] RGB image (e.g. ``data.build_train_transforms``); None
            gives the array itself.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str],
                 transform: Callable[[np.ndarray], Any] | None = None) -> None:
        self.samples, self.classes, self.transform = list(samples), list(classes), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
        path, label = self.samples[index]
        image = read_rgb(path)  # [H, W, 3] uint8
        if self.transform is not None:
            image = self.transform(image)
        return image, np.array(label, dtype=np.int64)


def load_image_split(path: str, split: str, transform: Callable[[np.ndarray], Any] | None = None
                     ) -> ImageFileDataset:
    """The ``split`` ("train" or "val") of the image folder or list files at ``path`` (``data_kind``), every
    image checked (``check_image``). A folder without val/ gives test/ as "val". ``DataError`` names what is
    wrong: an empty class folder, a list line that does not parse, a label out of range, a file that is not
    an image, ..."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    kind = data_kind(path)
    if kind == FOLDER:
        samples, classes = _folder_split(path, split)
    elif kind == LISTS:
        samples, classes = _list_split(path, split)
    else:
        raise DataError(f"{path} is not an image data set: expected an image folder or list files, not the "
                        "CIFAR-10 tarball")
    return ImageFileDataset(samples, classes, transform)


def load_image_splits(path: str, train_transform: Callable[[np.ndarray], Any] | None = None,
                      val_transform: Callable[[np.ndarray], Any] | None = None
                      ) -> tuple[ImageFileDataset, ImageFileDataset]:
    """(train, val) of the image data set at ``path`` (``load_image_split``); ``DataError`` unless both splits
    have the same class names."""
    train = load_image_split(path, "train", train_transform)
    val = load_image_split(path, "val", val_transform)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataError(f"{path}: the train and val class names differ (only in train: "
                        f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'})")
    return train, val


def _folder_split(root: str, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(samples, classes) of ``root/<split>/<class>/...``, classes sorted, every image checked."""
    folder = next((os.path.join(root, name) for name in _FOLDER_SPLITS[split]
                   if os.path.isdir(os.path.join(root, name))), None)
    if folder is None:
        raise DataError(f"{root} has no {' or '.join(_FOLDER_SPLITS[split])} folder: an image folder has its "
                        f"{split} images in {root}/{_FOLDER_SPLITS[split][0]}/<class>/")
    entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    classes = [entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    stray = next((entry.path for entry in entries
                  if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)), None)
    if stray is not None:
        raise DataError(f"{stray} is not in a class folder: images go in {folder}/<class>/")
    if not classes:
        raise DataError(f"{folder} has no class folders: images go in {folder}/<class>/")
    samples = []
    for label, name in enumerate(classes):
        files = _image_files(os.path.join(folder, name))
        if not files:
            raise DataError(f"class folder {os.path.join(folder, name)} has no images "
                            f"({' '.join(IMAGE_EXTENSIONS)})")
        samples += [(file, label) for file in files]
    for file, _ in samples:
        check_image(file)
    return samples, classes


class _ListEntry(NamedTuple):
    """One image of a list file: where it is, its label, and where it is named (for error messages)."""
    path: str
    label: int
    where: str  # "DIR/train_list.txt, line 7"


def _read_list(root: str, split: str) -> list[_ListEntry]:
    """The entries of ``root``'s list file for ``split`` (blank lines skipped); ``DataError`` names the file and
    line of a line that is not ``relative/path.jpg label``."""
    list_file = os.path.join(root, _LIST_FILES[split])
    entries = []
    for number, line in enumerate(_read_lines(list_file), 1):
        if not line.strip():
            continue
        match = _LIST_LINE.fullmatch(line.strip())
        if match is None:
            raise DataError(f"{list_file}, line {number}: expected 'relative/path.jpg label' (a path, a space, a "
                            f"label 0, 1, ...), got {line.strip()!r}")
        entries.append(_ListEntry(os.path.join(root, match[1]), int(match[2]), f"{list_file}, line {number}"))
    if not entries:
        raise DataError(f"{list_file} lists no images")
    return entries


def _read_lines(path: str) -> list[str]:
    """The lines of the text file at ``path`` (UTF-8, a byte-order mark ignored), ``DataError`` if unreadable."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            return file.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}: {err})") from err


def _read_labels(root: str) -> list[str] | None:
    """The class names in ``root/labels.txt``, one a line (trailing blank lines ignored), or None without the
    file; ``DataError`` for a blank or repeated name."""
    labels_file = os.path.join(root, LABELS)
    if not os.path.isfile(labels_file):
        return None
    names = [line.strip() for line in _read_lines(labels_file)]
    while names and not names[-1]:
        names.pop()
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{labels_file}, line {number}: a blank class name (one name a line, the line number "
                            "minus one is its label)")
        if name in seen:
            raise DataError(f"{labels_file}, line {number}: class name {name!r} repeats line {seen[name]}")
        seen[name] = number
    if not names:
        raise DataError(f"{labels_file} names no classes")
    return names


def _list_split(root: str, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(samples, classes) of ``root``'s list file for ``split``, every image checked. The classes are those of
    labels.txt, or without it "0".."N" for the largest label N of both list files (so both splits agree)."""
    entries = _read_list(root, split)
    classes = _read_labels(root)
    if classes is None:
        other = _read_list(root, "val" if split == "train" else "train")
        largest = max(entry.label for entry in entries + other)
        classes = [str(label) for label in range(largest + 1)]
    else:
        bad = next((entry for entry in entries if entry.label >= len(classes)), None)
        if bad is not None:
            raise DataError(f"{bad.where}: label {bad.label} is out of range: {os.path.join(root, LABELS)} names "
                            f"{len(classes)} classes (labels 0..{len(classes) - 1})")
    for entry in entries:
        try:
            check_image(entry.path)
        except DataError as err:
            raise DataError(f"{entry.where}: {err}") from err
    return [(entry.path, entry.label) for entry in entries], classes
