"""Your own images: image folders and list files read into the same data set, every image mode as the cv2
backend's RGB, one-line errors naming the file (and line)."""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.image_fixture import MODES, class_colour, digit_levels, make_image_folder, make_list_files, write_image
from uninext_paddle.data import build_train_transforms
from uninext_paddle.errors import DataError
from uninext_paddle.image_data import (ImageFileDataset, collect_image_files, data_kind, load_image_split,
                                       load_image_splits, read_rgb)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes (zero, one, two), 5 train and 2 val images each, every mode; read-only."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "digits")


@pytest.fixture
def scratch(folder, tmp_path) -> Path:
    """A copy of ``folder`` to damage."""
    return Path(shutil.copytree(folder, tmp_path / "digits"))


def relative(dataset: ImageFileDataset, root: Path) -> list[tuple[str, int]]:
    return [(Path(path).relative_to(root).as_posix(), label) for path, label in dataset.samples]


def seeded_items(dataset: ImageFileDataset, seed: int = 3) -> list[np.ndarray]:
    random.seed(seed)
    np.random.seed(seed)
    return [np.asarray(dataset[i][0]) for i in range(len(dataset))]


def test_folder_and_list_files_give_the_same_dataset(folder, tmp_path):
    lists = make_list_files(shutil.copytree(folder, tmp_path / "lists"))
    assert (data_kind(str(folder)), data_kind(str(lists))) == ("folder", "lists")  # lists win over folders
    transform = build_train_transforms(24)
    from_folder = load_image_splits(str(folder), transform, transform)
    from_lists = load_image_splits(str(lists), transform, transform)
    for a, b in zip(from_folder, from_lists):
        assert a.classes == b.classes == ["one", "two", "zero"]  # sorted folder names
        assert relative(a, folder) == relative(b, lists)
        assert all(Path(path).parent.name == a.classes[label] for path, label in a.samples)
        for x, y in zip(seeded_items(a), seeded_items(b)):
            assert np.array_equal(x, y)
    train = from_folder[0]
    assert len(train) == 15 and len(from_folder[1]) == 6
    image, label = train[0]
    assert type(image) is np.ndarray and image.shape == (3, 24, 24) and image.dtype == np.float32  # no tensor
    assert label.dtype == np.int64 and label.shape == () and int(label) == 0


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_becomes_rgb_uint8_hwc_as_the_cv2_backend_reads_it(mode, tmp_path):
    path = tmp_path / f"digit_{mode.replace(';', '')}.png"
    expected = write_image(path, digit_levels(7, 4), mode, class_colour(7))
    with Image.open(path) as written:
        assert written.mode == mode
    image = read_rgb(str(path))
    assert image.dtype == np.uint8 and image.shape == expected.shape and image.shape[2] == 3
    assert np.array_equal(image, expected)
    assert np.array_equal(image, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))  # Paddle's cv2_loader
    if mode in ("L", "I;16"):
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_images_read_close_to_what_was_written(mode, tmp_path):
    expected = write_image(tmp_path / "digit.jpg", digit_levels(3, 30), mode, class_colour(3))
    image = read_rgb(str(tmp_path / "digit.jpg"))
    assert image.shape == expected.shape and np.abs(image.astype(int) - expected).mean() < 8
    if mode == "L":
        assert np.array_equal(image[..., 0], image[..., 2])


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped(tmp_path):
    values = np.array([[0, 1, 128, 129, 257, 1000], [32767, 32768, 40000, 65279, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_rgb(str(tmp_path / "deep.png"))
    assert image[..., 0].tolist() == [[0, 0, 0, 1, 1, 4], [127, 128, 156, 254, 255, 255]]  # round(v * 255 / 65535)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_exif_orientation_is_applied_as_cv2_does(tmp_path):
    pixels = np.zeros((40, 64, 3), dtype=np.uint8)
    pixels[:10, :20] = (255, 0, 0)  # a red block top left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    image = read_rgb(str(tmp_path / "turned.jpg"))
    assert image.shape == (64, 40, 3)
    assert image[:20, -10:, 0].mean() > 200 and image[:20, :10, 0].mean() < 50  # now top right
    cv2_image = cv2.cvtColor(cv2.imread(str(tmp_path / "turned.jpg")), cv2.COLOR_BGR2RGB)
    assert cv2_image.shape == image.shape and np.abs(cv2_image.astype(int) - image).mean() < 2


def test_items_are_uint8_rgb_without_a_transform_whatever_the_file(folder):
    train = load_image_split(str(folder), "train")
    assert {Path(path).suffix for path, _ in train.samples} == {".png", ".jpg", ".bmp"}
    shapes = set()
    for image, label in (train[i] for i in range(len(train))):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and 0 <= label < 3
        shapes.add(image.shape)
    assert len(shapes) > 5  # images of many sizes


def test_data_kind(folder, tmp_path):
    tarball = tmp_path / "c.tar.gz"
    tarball.write_bytes(b"anything")
    assert data_kind(str(tarball)) == "cifar10"
    assert data_kind(str(tmp_path / "missing" / "cifar-10-python.tar.gz")) == "cifar10"  # downloaded there
    with pytest.raises(DataError, match=r"typo does not exist; a data set is the CIFAR-10 python tarball"):
        data_kind(str(tmp_path / "typo"))
    assert data_kind(str(folder)) == "folder"
    (tmp_path / "plain" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match=r"plain is a folder but not a data set: .*DIR/train/<class>/\*\.jpg"):
        data_kind(str(tmp_path / "plain"))
    (tmp_path / "plain" / "train_list.txt").write_text("cats/a.png 0\n")
    with pytest.raises(DataError, match=r"plain has train_list.txt but no val_list.txt"):
        data_kind(str(tmp_path / "plain"))
    with pytest.raises(DataError, match="not an image data set"):
        load_image_split(str(tarball), "train")


def test_a_folder_without_val_uses_test(scratch):
    (scratch / "val").rename(scratch / "test")
    assert data_kind(str(scratch)) == "folder"
    val = load_image_split(str(scratch), "val")
    assert len(val) == 6 and all("/test/" in path for path, _ in val.samples)


def test_list_files_without_labels_txt_number_the_classes(scratch):
    make_list_files(scratch)
    (scratch / "labels.txt").unlink()
    val_lines = (scratch / "val_list.txt").read_text().splitlines()
    (scratch / "val_list.txt").write_text("\n".join(line for line in val_lines if not line.endswith(" 2")) + "\n")
    train, val = load_image_splits(str(scratch))
    assert train.classes == val.classes == ["0", "1", "2"]  # the largest label of both files
    (scratch / "train_list.txt").write_text("train/zero/zero_000_L.png 5\n")
    assert load_image_split(str(scratch), "train").classes == [str(i) for i in range(6)]


def test_list_paths_may_hold_spaces_and_lines_may_be_blank(scratch):
    shutil.copy(scratch / "train" / "zero" / "zero_001_RGB.jpg", scratch / "my photo.jpg")
    (scratch / "train_list.txt").write_text("\nmy photo.jpg\t1\r\n\n")
    (scratch / "val_list.txt").write_text("my photo.jpg 0\n")
    (scratch / "labels.txt").write_text("cat\ndog\n\n")
    train = load_image_split(str(scratch), "train")
    assert train.samples == [(str(scratch / "my photo.jpg"), 1)] and train.classes == ["cat", "dog"]


def test_errors_name_the_folder_or_file(scratch):
    (scratch / "train" / "three").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/three has no images \(\.jpg"):
        load_image_split(str(scratch), "train")
    (scratch / "train" / "three" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"train/three has no images"):  # other files are not images
        load_image_split(str(scratch), "train")
    (scratch / "train" / "three" / "fake.png").write_text("not an image")
    with pytest.raises(DataError, match=r"train/three/fake\.png: not an image \(UnidentifiedImageError"):
        load_image_split(str(scratch), "train")
    shutil.rmtree(scratch / "train" / "three")
    (scratch / "val" / "zero").rename(scratch / "val" / "nil")
    with pytest.raises(DataError, match=r"the train and val class names differ \(only in train: zero; only in val: "
                                        r"nil\)"):
        load_image_splits(str(scratch))
    shutil.rmtree(scratch / "val")
    (scratch / "test").mkdir()
    with pytest.raises(DataError, match=r"test has no class folders"):
        load_image_split(str(scratch), "val")
    shutil.copy(scratch / "train" / "one" / "one_000_RGB.png", scratch / "test")
    with pytest.raises(DataError, match=r"test/one_000_RGB\.png is not in a class folder"):
        load_image_split(str(scratch), "val")


def test_list_file_errors_name_the_file_and_line(scratch):
    make_list_files(scratch)
    train_list, good = scratch / "train_list.txt", (scratch / "train_list.txt").read_text()
    for bad_line in ("train/zero/zero_000_L.png", "train/zero/zero_000_L.png -1", "train/zero/zero_000_L.png x"):
        train_list.write_text(good + "\n" + bad_line + "\n")
        with pytest.raises(DataError, match=rf"train_list\.txt, line 17: expected 'relative/path\.jpg label' .*got "
                                            rf"'{bad_line}'"):
            load_image_split(str(scratch), "train")
    train_list.write_text(good.replace("train/one/one_004_L.jpg 0", "train/one/one_004_L.jpg 3"))
    with pytest.raises(DataError, match=r"train_list\.txt, line 5: label 3 is out of range: .*labels\.txt names 3 "
                                        r"classes \(labels 0\.\.2\)"):
        load_image_split(str(scratch), "train")
    train_list.write_text(good.replace("one_004_L.jpg", "one_404_L.jpg"))
    with pytest.raises(DataError, match=r"train_list\.txt, line 5: .*train/one/one_404_L\.jpg does not exist"):
        load_image_split(str(scratch), "train")
    train_list.write_text("\n\n")
    with pytest.raises(DataError, match=r"train_list\.txt lists no images"):
        load_image_split(str(scratch), "train")
    train_list.write_text(good)
    (scratch / "labels.txt").write_text("one\n\nzero\n")
    with pytest.raises(DataError, match=r"labels\.txt, line 2: a blank class name"):
        load_image_split(str(scratch), "train")
    (scratch / "labels.txt").write_text("one\ntwo\none\n")
    with pytest.raises(DataError, match=r"labels\.txt, line 3: class name 'one' repeats line 1"):
        load_image_split(str(scratch), "train")


def write_truncated(path: Path) -> Path:
    """A 96x96 noise image at ``path`` (in the format of its extension), cut after half of its bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 4 if path.suffix == ".png" else 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("name", ["noise.png", "noise.jpg", "noise.bmp"])
def test_a_truncated_image_fails_when_read_naming_it(scratch, name):
    path = write_truncated(scratch / "train" / "one" / name)
    train = load_image_split(str(scratch), "train")  # the header is intact: found when the image is read
    index = [file for file, _ in train.samples].index(str(path))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: not a readable image \(OSError: "):
        train[index]
    assert train[index + 1][0].shape[2] == 3  # the others still read


def test_collect_image_files(folder, tmp_path):
    shutil.copy(folder / "train" / "zero" / "zero_001_RGB.jpg", tmp_path / "photo.dat")  # any name, an image inside
    (nested := tmp_path / "pictures" / "nested").mkdir(parents=True)
    for name in ("b.png", "a.jpg", ".hidden.png", "readme.txt"):
        shutil.copy(folder / "train" / "zero" / "zero_000_L.png", nested / name)
    files = collect_image_files([str(tmp_path / "photo.dat"), str(tmp_path / "pictures")])
    assert files == [str(tmp_path / "photo.dat"), str(nested / "a.jpg"), str(nested / "b.png")]
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not an image \(UnidentifiedImageError"):
        collect_image_files([str(tmp_path / "photo.dat"), str(tmp_path / "notes.txt")])
    with pytest.raises(DataError, match=r"nope\.png does not exist"):
        collect_image_files([str(tmp_path / "nope.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty is a folder with no images"):
        collect_image_files([str(tmp_path / "empty")])
