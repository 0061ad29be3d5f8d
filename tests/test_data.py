"""The training data pipeline: shuffle order and augmentations as functions of (seed, epoch), mid-epoch skips,
and data-parallel shares that cover every image exactly once."""
from __future__ import annotations

import numpy as np
import pytest

from tests.cifar_fixture import make_cifar_tarball
from uninext_paddle.data import EpochBatchSampler, build_loaders, start_train_epoch


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "c.tar.gz", train_per_class=3, test_per_class=1)


def batches(sampler: EpochBatchSampler, epoch: int, skip: int = 0) -> list[list[int]]:
    sampler.start_epoch(epoch, skip)
    return list(sampler)


def test_shuffle_order_is_a_function_of_seed_and_epoch():
    data = list(range(30))
    sampler = EpochBatchSampler(data, batch_size=8, seed=42)
    epoch0 = batches(sampler, 0)
    assert [len(b) for b in epoch0] == [8, 8, 8]  # the notebook's drop_last
    assert len({i for b in epoch0 for i in b}) == 24
    assert batches(sampler, 1) != epoch0
    assert batches(sampler, 0) == epoch0  # again, whatever came between
    assert batches(EpochBatchSampler(data, 8, seed=42), 0) == epoch0
    assert batches(EpochBatchSampler(data, 8, seed=7), 0) != epoch0
    assert batches(sampler, 0, skip=2) == epoch0[2:]
    assert len(list(sampler)) == 3  # the skip applies once


def test_augmentations_repeat_per_seed_epoch_and_index(tarball):
    train, _, _ = build_loaders(str(tarball), image_size=16, batch_size=4, num_workers=0, seed=1)
    dataset = train.dataset
    start_train_epoch(train, 3)
    first = np.asarray(dataset[5][0])
    dataset[7]  # noqa: B018  (consumes randomness: must not change sample 5)
    assert np.array_equal(np.asarray(dataset[5][0]), first)
    start_train_epoch(train, 4)
    assert not np.array_equal(np.asarray(dataset[5][0]), first)


def test_data_parallel_shares(tarball):
    shares = [build_loaders(str(tarball), 16, batch_size=4, num_workers=0, seed=1, rank=r, world_size=2)
              for r in range(2)]
    for train, _, _ in shares:
        start_train_epoch(train, 0)
    train_batches = [list(train.batch_sampler) for train, _, _ in shares]
    assert [len(b) for b in train_batches] == [3, 3]  # 30 images: 12 per process after drop_last (batch 4)
    seen = [i for share in train_batches for batch in share for i in batch]
    assert len(seen) == len(set(seen)) == 24
    val = [[int(v.dataset.indices[i]) for i in range(len(v.dataset))] for _, v, _ in shares]
    assert sorted(val[0] + val[1]) == list(range(10))  # each val image once, no padding repeats


def test_transforms_are_the_notebooks():
    import paddle.vision.transforms as T

    from uninext_paddle.data import MixupImage, ToArray, build_test_transforms, build_train_transforms

    train = build_train_transforms(224).transforms
    assert [type(t) for t in train] == [T.RandomResizedCrop, T.ColorJitter, T.RandomHorizontalFlip, T.RandomRotation,
                                        MixupImage, ToArray, T.Normalize]  # ToArray: T.ToTensor in NumPy
    assert (train[0].size, train[0].scale) == ((224, 224), (0.6, 1.0))
    assert (train[1].brightness, train[1].contrast, train[1].saturation, train[1].hue) == (0.2, 0.2, 0.2, 0)
    assert train[2].prob == 0.5 and train[3].degrees == (-20, 20)
    assert list(train[6].mean) == [0.485, 0.456, 0.406] and list(train[6].std) == [0.229, 0.224, 0.225]
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    assert MixupImage()(image) is image  # paddlex 2.1's MixupImage on a single image
    test = build_test_transforms(224).transforms
    assert [type(t) for t in test] == [T.Resize, ToArray, T.Normalize] and test[0].size == (224, 224)


@pytest.mark.parametrize("size", [16, 40])
def test_transforms_give_the_notebooks_values_bit_for_bit_as_numpy_arrays(size):
    """The notebook's pipelines, T.ToTensor and all, against the port's (NumPy, for the loader's workers): the
    same random draws give the same float32 values, bit for bit."""
    import random

    import paddle
    import paddle.vision.transforms as T

    from uninext_paddle.data import IMAGENET_MEAN, IMAGENET_STD, build_test_transforms, build_train_transforms

    notebook_train = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)),
                                T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                                T.RandomHorizontalFlip(0.5), T.RandomRotation(20), T.ToTensor(),
                                T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    notebook_test = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    rng = np.random.default_rng(size)
    for k in range(4):
        image = rng.integers(0, 256, (32 + 7 * k, 29 + 5 * k, 3), dtype=np.uint8)
        for ours, theirs in ((build_train_transforms(size), notebook_train),
                             (build_test_transforms(size), notebook_test)):
            random.seed(k), np.random.seed(k)
            expected = theirs(image)
            random.seed(k), np.random.seed(k)
            got = ours(image)
            assert isinstance(expected, paddle.Tensor) and type(got) is np.ndarray
            assert got.dtype == np.float32 and got.shape == (3, size, size)
            assert np.array_equal(got, expected.numpy())
