"""Tiny CIFAR-10 tarballs in the real ``cifar-10-python.tar.gz`` layout, made on the fly for the tests."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

# One colour per class: a model can learn these in a few steps, so "it learns" is testable on CPU.
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]], dtype=np.float32)


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N, 3072] uint8 rows (CIFAR's channel-major layout): each image is its class colour plus noise."""
    base = _PALETTE[labels][:, :, None, None]  # [N, 3, 1, 1]
    noise = rng.normal(0, 25, size=(len(labels), 3, 32, 32))
    return np.clip(base + noise, 0, 255).astype(np.uint8).reshape(len(labels), -1)


def make_cifar_tarball(path: Path, train_per_class: int = 10, test_per_class: int = 4, seed: int = 0) -> Path:
    """Write a CIFAR-10 python tarball with 5 train batches and a test batch; return ``path``."""
    rng = np.random.default_rng(seed)

    def batch(per_class: int, name: str) -> dict:
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        return {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": make_images(labels, rng),
                b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}

    train = batch(train_per_class, "training")
    members = {f"data_batch_{i + 1}": {k: (v[i::5] if k != b"batch_label" else v) for k, v in train.items()}
               for i in range(5)}
    members["test_batch"] = batch(test_per_class, "testing")
    members["batches.meta"] = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                                b"frog", b"horse", b"ship", b"truck"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            blob = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path
