"""CIFAR-10 as the notebook reads it (section 2.2): the python tarball, its transforms, the cv2 backend; and the
seeded samplers and loaders train.py uses for it and for image folders and list files (``image_data.py``).

The notebook's train transforms include ``paddlex.transforms.MixupImage()``. Applied to a single image, as
``Compose`` does, paddlex 2.1's ``MixupImage.__call__`` returns its input unchanged (it only mixes when given
a sequence of two samples), and paddlex 3.x no longer has ``paddlex.transforms``. ``MixupImage`` below is that
identity step, kept in the pipeline so the transform list reads as the notebook's.

``T.ToTensor()`` is computed in NumPy (``ToArray``, the same values bit for bit): the data loader's worker
processes hand back NumPy arrays and the batch tensors are made in the main process (``loader.py``).
"""
from __future__ import annotations

import itertools
import os
import pickle
import random
import tarfile
from typing import Any, Iterator

import numpy as np
import paddle
import paddle.vision.transforms as T
from paddle.vision.datasets import Cifar10
from paddle.vision.datasets.cifar import CIFAR10_MD5, CIFAR10_URL

from .errors import ConfigError, DataError
from .image_data import CIFAR10, data_kind, load_image_split, load_image_splits
from .loader import BatchLoader, make_loader

__all__ = ["CIFAR10_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_DATA", "MixupImage", "ToArray",
           "build_train_transforms", "build_test_transforms", "ensure_cifar10", "load_cifar10", "SeededAugment",
           "EpochBatchSampler", "load_datasets", "load_val_split", "build_loaders", "start_train_epoch"]

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_DATA = os.path.join("data", "cifar-10-python.tar.gz")
IMAGE_BACKEND = "cv2"  # the notebook's paddle.vision.set_image_backend('cv2'): images are uint8 HWC RGB arrays


class MixupImage:
    """The notebook's ``paddlex.transforms.MixupImage()`` on a single image: the identity (see module doc)."""

    def __call__(self, image: Any) -> Any:
        return image

    def __repr__(self) -> str:
        return "MixupImage()"


class ToArray:
    """The notebook's ``T.ToTensor()`` in NumPy: an [H, W, C] (or [H, W]) image -> [C, H, W], uint8 scaled to
    float32 in [0, 1] (``/ 255``), other dtypes unchanged; bit for bit Paddle's values, without making a Paddle
    tensor, which a data loader worker process must not (``loader.py``)."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        chw = (image[:, :, None] if image.ndim == 2 else image).transpose(2, 0, 1)
        return chw.astype(np.float32) / np.float32(255) if chw.dtype == np.uint8 else chw

    def __repr__(self) -> str:
        return "ToArray()"


def build_train_transforms(image_size: int = 224) -> T.Compose:
    """The notebook's ``train_tfm`` at ``image_size`` (224 in the notebook)."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        T.RandomHorizontalFlip(0.5),
        T.RandomRotation(20),
        MixupImage(),
        ToArray(),  # T.ToTensor()
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def build_test_transforms(image_size: int = 224) -> T.Compose:
    """The notebook's ``test_tfm`` at ``image_size`` (224 in the notebook)."""
    return T.Compose([
        T.Resize((image_size, image_size)),
        ToArray(),  # T.ToTensor()
        T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def ensure_cifar10(path: str, download: bool = True) -> str:
    """Return ``path`` once the CIFAR-10 python tarball is there, downloading it with Paddle's downloader
    (progress bar, md5 check) when it is missing and ``download`` is set."""
    if os.path.isfile(path):
        return path
    if os.path.exists(path):
        raise DataError(f"{path} is not a file: it must be the CIFAR-10 python tarball (cifar-10-python.tar.gz)")
    how = f"download {CIFAR10_URL} (md5 {CIFAR10_MD5}) and put it at {path}"
    if not download:
        raise DataError(f"CIFAR-10 not found at {path}: {how}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        print(f"CIFAR-10 not found at {path}; downloading it with Paddle's downloader ...", flush=True)
        downloaded = paddle.utils.download.get_path_from_url(CIFAR10_URL, folder, md5sum=CIFAR10_MD5,
                                                             decompress=False)
    except Exception as err:  # network errors come as many types (httpx, OSError, RuntimeError)
        raise DataError(f"CIFAR-10 not found at {path} and the download failed ({type(err).__name__}: {err}); "
                        f"{how}") from err
    if os.path.abspath(downloaded) != os.path.abspath(path):
        os.replace(downloaded, path)
    return path


def load_cifar10(path: str, mode: str, transform: Any = None) -> Cifar10:
    """The CIFAR-10 ``mode`` split ("train" or "test") of the tarball at ``path``, with ``transform``.

    A file that is not the CIFAR-10 python tarball fails with one clear line instead of a traceback.
    """
    if not os.path.isfile(path):
        raise DataError(f"CIFAR-10 not found at {path}")
    try:
        dataset = Cifar10(data_file=path, mode=mode, transform=transform, download=False, backend=IMAGE_BACKEND)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, KeyError, AssertionError, ValueError,
            TypeError, AttributeError) as err:
        raise DataError(f"{path} is not a readable CIFAR-10 python tarball ({type(err).__name__}: {err}); "
                        f"download it again (md5 {CIFAR10_MD5})") from err
    if len(dataset) == 0:
        raise DataError(f"{path} holds no CIFAR-10 {mode} batches (expected cifar-10-batches-py/"
                        f"{'data_batch_*' if mode == 'train' else 'test_batch'}); is it the python version of "
                        "CIFAR-10?")
    bad = next((i for i, (pixels, label) in enumerate(dataset.data)
                if np.size(pixels) != 3 * 32 * 32 or not 0 <= label < len(CIFAR10_CLASSES)), None)
    if bad is not None:
        raise DataError(f"{path}: {mode} sample {bad} is not a 3x32x32 image with a label in 0..9; "
                        "the file is not CIFAR-10 or is damaged")
    return dataset


class SeededAugment(paddle.io.Dataset):
    """``dataset`` whose random transforms draw from global RNGs seeded from (seed, epoch, index) per sample.

    Paddle's vision transforms use Python's and NumPy's global RNGs, consumed by whichever worker process or
    prefetch thread happens to load a sample. Seeding per sample makes every augmentation a function of
    (seed, epoch, index): runs repeat exactly with any ``--num-workers``, and a run resumed mid-epoch sees the
    very images it would have seen.
    """

    def __init__(self, dataset: paddle.io.Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        state = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        random.seed(state)
        np.random.seed(state)
        return self.dataset[index]


class EpochBatchSampler(paddle.io.DistributedBatchSampler):
    """Paddle's ``DistributedBatchSampler`` (this process's share of the batches; all of them in a single
    process) with the shuffle order a function of (seed, epoch), and an optional number of leading batches to
    skip once, for resuming mid-epoch."""

    def __init__(self, dataset: paddle.io.Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        super().__init__(dataset, batch_size, num_replicas=world_size, rank=rank, shuffle=shuffle,
                         drop_last=drop_last)
        self.seed, self.skip = seed, 0

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        """Order the batches for ``epoch``; the next iteration starts after ``skip`` of them."""
        self.set_epoch(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


def load_datasets(path: str, image_size: int) -> tuple[paddle.io.Dataset, paddle.io.Dataset, list[str]]:
    """(train, val, class names) of the data set at ``path`` with the notebook's train and test transforms at
    ``image_size``: the CIFAR-10 tarball (val: its test split), an image folder or list files
    (``image_data.data_kind``)."""
    train_tfm, test_tfm = build_train_transforms(image_size), build_test_transforms(image_size)
    if data_kind(path) == CIFAR10:
        return load_cifar10(path, "train", train_tfm), load_cifar10(path, "test", test_tfm), list(CIFAR10_CLASSES)
    train, val = load_image_splits(path, train_tfm, test_tfm)
    return train, val, train.classes


def load_val_split(path: str, image_size: int) -> tuple[paddle.io.Dataset, list[str]]:
    """(val split, class names) of the data set at ``path`` with the notebook's test transforms: what
    evaluate.py and visualize.py read (CIFAR-10: its test split)."""
    if data_kind(path) == CIFAR10:
        return load_cifar10(path, "test", build_test_transforms(image_size)), list(CIFAR10_CLASSES)
    val = load_image_split(path, "val", build_test_transforms(image_size))
    return val, val.classes


def build_loaders(path: str, image_size: int, batch_size: int, num_workers: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> tuple[BatchLoader, BatchLoader, list[str]]:
    """The notebook's train and val loaders (batch ``batch_size``, train shuffled with drop_last, val in order)
    for this process, and the class names; in data-parallel runs each process gets a disjoint share of both
    splits."""
    train, val, classes = load_datasets(path, image_size)
    train = SeededAugment(train, seed)
    if len(train) < batch_size * world_size:
        raise ConfigError(f"{path} has {len(train)} train images: fewer than one batch of {batch_size} per "
                          "process; use a smaller batch")
    if world_size > 1:
        # every val image exactly once over the processes (DistributedBatchSampler would pad with repeats)
        val = paddle.io.Subset(val, list(range(rank, len(val), world_size)))
    sampler = EpochBatchSampler(train, batch_size, seed, rank, world_size)
    return (make_loader(train, batch_size, num_workers, batch_sampler=sampler),
            make_loader(val, batch_size, num_workers), classes)


def start_train_epoch(loader: BatchLoader, epoch: int, skip: int = 0) -> None:
    """Set a ``build_loaders`` train loader to ``epoch``'s order and augmentations, skipping ``skip`` batches."""
    loader.dataset.epoch = epoch
    loader.batch_sampler.start_epoch(epoch, skip)
