"""The data loader (uninext_paddle/loader.py): Paddle's batches, in order, with any number of worker processes,
NumPy from the workers and tensors made here; a bad image, a raising transform, a killed or stuck worker each end
the iteration with one DataError within seconds; workers never outlive an iteration."""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from tests.cifar_fixture import make_cifar_tarball
from tests.image_fixture import make_image_folder
from uninext_paddle.data import SeededAugment, build_test_transforms, build_train_transforms, load_cifar10
from uninext_paddle.errors import DataError
from uninext_paddle.image_data import load_image_split
from uninext_paddle.loader import BatchLoader, make_loader


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes, 5 train images each, every image mode."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "digits", per_class=5, val_per_class=1)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    return make_cifar_tarball(tmp_path_factory.mktemp("cifar") / "c.tar.gz", train_per_class=1, test_per_class=1)


class Numbers(paddle.io.Dataset):
    """Item i: (a [2, 3] float32 array of i, label i % 10); ``trouble`` maps an index to what happens there."""

    def __init__(self, size: int = 40, trouble: dict[int, str] | None = None) -> None:
        self.size, self.trouble = size, trouble or {}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        what = self.trouble.get(i)
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "raise":
            raise KeyError("no such thing")
        elif what == "hang":
            time.sleep(3600)
        return np.full((2, 3), i, np.float32), np.array(i % 10, np.int64)


def children() -> set[int]:
    """The pids of this process's live child processes."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            found |= {int(pid) for pid in f.read().split()}
    return {pid for pid in found if os.path.exists(f"/proc/{pid}") and
            open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"}


def first_error(loader: BatchLoader) -> DataError:
    with pytest.raises(DataError) as caught:
        for _ in loader:
            pass
    return caught.value


@pytest.mark.parametrize("num_workers", [0, 1, 2, 4])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_the_batches_are_paddles_in_order_with_any_number_of_workers(folder, tarball, num_workers, batch_size):
    # the train augmentations as training draws them: seeded per (seed, epoch, index), the same in any process
    image_files = SeededAugment(load_image_split(str(folder), "train", build_train_transforms(16)), seed=1)
    cifar = load_cifar10(str(tarball), "test", build_test_transforms(16))
    for dataset in (image_files, cifar):
        expected = list(paddle.io.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0))
        got = list(make_loader(dataset, batch_size, num_workers))  # the last batch partial unless it divides
        assert len(got) == len(expected) == -(-len(dataset) // batch_size)
        for (x, y), (x2, y2) in zip(got, expected):
            assert type(x) is type(y) is paddle.Tensor and (x.dtype, y.dtype) == (x2.dtype, y2.dtype)
            assert x.shape == x2.shape and np.array_equal(x.numpy(), x2.numpy())
            assert np.array_equal(y.numpy(), y2.numpy())


def test_the_batch_sampler_decides_the_batches_and_several_passes_work():
    sampler = paddle.io.BatchSampler(Numbers(10), batch_size=4, shuffle=False, drop_last=True)
    loader = BatchLoader(Numbers(10), batch_sampler=sampler, num_workers=2)
    assert len(loader) == 2 and loader.batch_size == 4
    for _ in range(3):  # a new set of workers each pass
        assert [x.numpy()[:, 0, 0].tolist() for x, _ in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not children()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_unreadable_image_reaches_the_loop_as_the_data_error_naming_it(folder, tmp_path, num_workers, capfd):
    scratch = Path(shutil.copytree(folder, tmp_path / "digits"))
    bad = scratch / "train" / "two" / "noise.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(bad)
    bad.write_bytes(bad.read_bytes()[:100])
    train = load_image_split(str(scratch), "train", build_train_transforms(16))
    error = first_error(make_loader(train, 4, num_workers))
    assert str(error) == f"{bad}: not a readable image (OSError: image file is truncated)"  # as raised, one line
    assert "Traceback" not in capfd.readouterr().err
    assert not children()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_any_other_exception_of_an_item_is_a_data_error_naming_the_items(num_workers):
    error = first_error(make_loader(Numbers(trouble={13: "raise"}), 4, num_workers))
    assert str(error) == "loading items 12..15 of the data set failed (KeyError: 'no such thing')"


def test_a_killed_worker_ends_the_iteration_within_seconds_naming_the_signal():
    start = time.monotonic()
    error = first_error(make_loader(Numbers(trouble={21: "kill"}), 2, num_workers=2))
    assert time.monotonic() - start < 10
    assert "was killed by SIGKILL while loading batch 10" in str(error)
    assert not children()  # the other worker killed too


def test_a_worker_killed_from_outside_mid_pass_ends_the_iteration(monkeypatch):
    loader = make_loader(Numbers(200), 1, num_workers=2)
    start, seen = time.monotonic(), 0
    with pytest.raises(DataError, match=r"data loader worker \d \(pid \d+\) was killed by SIGKILL"):
        for _ in loader:
            seen += 1
            if seen == 5:
                os.kill(sorted(children())[0], signal.SIGKILL)
    assert 5 <= seen < 200 and time.monotonic() - start < 10
    assert not children()


def test_a_stuck_worker_ends_the_iteration_after_the_timeout():
    start = time.monotonic()
    error = first_error(BatchLoader(Numbers(trouble={5: "hang"}), batch_size=2, num_workers=2, timeout=1.5))
    assert 1.5 <= time.monotonic() - start < 10
    assert "delivered no batch for 2 s (batch 2)" in str(error)
    assert not children()


def test_leaving_a_pass_early_ends_its_workers():
    loader = make_loader(Numbers(100), 2, num_workers=3)
    batches = iter(loader)
    next(batches)
    assert len(children()) == 3
    batches.close()  # what a `break` or an exception in the loop does
    assert not children()


def test_workers_ignore_ctrl_c_which_is_the_main_processes_to_handle():
    loader = make_loader(Numbers(60), 2, num_workers=2)
    batches = iter(loader)
    next(batches)
    for pid in children():
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    assert len(list(batches)) == 29  # the pass goes on
