"""visualize.py: the notebook's learning curves, prediction grid and LIME as real PNGs, and one-line errors; on your
own data (an image folder, image files) with its class names; the confusion matrix with 10 and with 100 classes."""
from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import paddle
import pytest

import visualize
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT
from tests.own_data_fixture import NAMES, SIZE, eager_probabilities, make_own_data
from uninext_paddle import create_model
from uninext_paddle.fileio import atomic_save
from uninext_paddle.cli import CliError
from uninext_paddle.data import CIFAR10_CLASSES, build_test_transforms, load_cifar10
from uninext_paddle.plots import denormalize, plot_confusion_matrix, plot_learning_curve, save_figure
from uninext_paddle.records import Records


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny tarball (20 test images), a UniNeXt-T checkpoint and a history.json written by ``Records``."""
    folder = tmp_path_factory.mktemp("visualize")
    data = make_cifar_tarball(folder / "cifar.tar.gz", train_per_class=1, test_per_class=2)
    paddle.seed(0)
    ckpt = folder / "best_model.pdparams"
    atomic_save(create_model("T").state_dict(), str(ckpt))
    records = Records()
    for epoch in range(3):
        for step in range(4):
            records.add_train_loss(2.3 - 0.3 * epoch - 0.05 * step)
        records.add_train_acc(0.3 + 0.2 * epoch)
        records.add_val(2.0 - 0.4 * epoch, 0.35 + 0.2 * epoch)
    history = folder / "history.json"
    records.save(str(history))
    return {"data": str(data), "ckpt": str(ckpt), "history": str(history), "records": records, "folder": folder}


def args_for(files, out, *extra: str) -> list[str]:
    return ["--out", str(out), "--history", files["history"], "--ckpt", files["ckpt"], "--data", files["data"],
            "--image-size", "32", "--device", "cpu", *extra]


def fails_with(message: str, argv: list[str]) -> None:
    """visualize.py's main raises the ``CliError`` that ``run_cli`` prints as one line."""
    with pytest.raises(CliError, match=message) as err:
        visualize.main(argv)
    assert "\n" not in str(err.value)


def assert_real_png(path, min_width: int, min_height: int) -> np.ndarray:
    """A PNG at least that large whose pixels vary (not blank); returns its RGB pixels."""
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.shape[1] >= min_width and pixels.shape[0] >= min_height, pixels.shape
    assert pixels.std() > 0.05, f"{path} looks blank"
    return pixels


def test_all_modes_at_once_write_real_pngs(files, tmp_path):
    out = tmp_path / "figures"
    argv = args_for(files, out, "--curves", "--predictions", "--lime", "--num-samples", "20", "--seed", "0")
    result = subprocess.run([sys.executable, "visualize.py", *argv], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # quiet: the backend's one line only, no LIME bar (stderr is no terminal), no C++ diagnostics, and no
    # "Clipping input data" (the grid shows de-normalised images)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: running onnxruntime ("), result.stderr
    assert_real_png(out / "loss_curve.png", 700, 450)  # the notebook's 10 x 6 inch figure at 100 dpi
    assert_real_png(out / "acc_curve.png", 700, 450)
    grid = assert_real_png(out / "predictions.png", 18 * 100, 100)
    assert grid.shape[1] > 10 * grid.shape[0]  # one row of 18
    assert_real_png(out / "lime_3.png", 400, 200)
    assert "LIME, test image 3 (gt: " in result.stdout and "top superpixels (id: weight): 0: " in result.stdout


def test_learning_curve_is_the_notebooks(files):
    record = files["records"].loss_record
    ax = plot_learning_curve(record, title="loss", ylabel="CE Loss").axes[0]
    values = record["train"]["loss"] + record["val"]["loss"]
    assert ax.get_ylim() == pytest.approx((0.9 * min(values), 1.1 * max(values)))
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Learning curve of loss", "Training steps", "CE Loss")
    train, val = ax.get_lines()
    assert mcolors.same_color(train.get_color(), "tab:red") and mcolors.same_color(val.get_color(), "tab:cyan")
    assert list(train.get_xdata()) == record["train"]["iter"] and list(val.get_ydata()) == record["val"]["loss"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    assert ax.figure.get_size_inches() == pytest.approx((10, 6))


def test_denormalize_gives_back_the_pixels(files):
    dataset = load_cifar10(files["data"], "test", build_test_transforms(32))
    restored = denormalize(np.stack([np.asarray(dataset[i][0]) for i in range(3)]))
    original = np.stack([dataset.data[i][0].reshape(3, 32, 32).transpose(1, 2, 0) for i in range(3)]) / 255
    np.testing.assert_allclose(restored, original, atol=1e-5)


def test_no_mode_prints_the_help(capsys):
    visualize.main([])
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--curves" in out and "--lime" in out


def test_bad_inputs_fail_in_one_line(files, tmp_path):
    out, missing = tmp_path / "out", str(tmp_path / "none")
    fails_with("history not found", args_for(files, out, "--curves", "--history", missing))
    (tmp_path / "bad.json").write_text("{ not json")
    fails_with("is not readable JSON", args_for(files, out, "--curves", "--history", str(tmp_path / "bad.json")))
    (tmp_path / "empty.json").write_text('{"loss_record": {"train": {"loss": [], "iter": []}}}')
    fails_with(r"no plottable loss_record\['train'\]",
               args_for(files, out, "--curves", "--history", str(tmp_path / "empty.json")))
    fails_with("checkpoint not found", args_for(files, out, "--predictions", "--ckpt", missing))
    (tmp_path / "corrupt.pdparams").write_bytes(b"\x80\x04 not a pickle")
    fails_with("is not a readable Paddle file",
               args_for(files, out, "--predictions", "--ckpt", str(tmp_path / "corrupt.pdparams")))
    fails_with(r"--index 20 is out of range: the test split has 20 images \(0..19\)",
               args_for(files, out, "--lime", "--index", "3", "20"))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    fails_with("cannot write to --out", args_for(files, tmp_path / "blocker", "--curves"))
    fails_with("--num-samples must be positive", args_for(files, out, "--lime", "--num-samples", "0"))
    fails_with("invalid int value: 'x'", args_for(files, out, "--lime", "--index", "x"))
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_script_reports_a_bad_history_without_traceback(files, tmp_path):
    (tmp_path / "history.json").write_text('{"loss_record": [1, 2]}')
    result = subprocess.run([sys.executable, "visualize.py", "--curves", "--history", str(tmp_path / "history.json"),
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: --history: history {tmp_path / 'history.json'} has no plottable "
                             "loss_record['train']: expected equally long, non-empty 'loss' and 'iter' lists\n")


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A 3-class image folder and a UniNeXt-T checkpoint with its class names beside it."""
    return make_own_data(tmp_path_factory.mktemp("own"))


def own_args(own, out, *extra: str) -> list[str]:
    return ["--out", str(out), "--ckpt", own["ckpt"], "--image-size", str(SIZE), "--device", "cpu",
            "--backend", "eager", "--num-samples", "10", "--seed", "0", *extra]


def saved_figures(monkeypatch) -> dict:
    """The figures visualize.py saves, by file name, filled in as it saves them."""
    figures = {}

    def save(fig, path):
        figures[os.path.basename(path)] = fig
        return save_figure(fig, path)

    monkeypatch.setattr(visualize, "save_figure", save)
    return figures


def test_an_image_folder_is_shown_with_its_class_names(own, tmp_path, monkeypatch, capsys):
    figures = saved_figures(monkeypatch)
    visualize.main(own_args(own, tmp_path, "--predictions", "--lime", "--data", own["data"], "--index", "4"))
    printed = capsys.readouterr().out
    predicted = [NAMES[i] for i in eager_probabilities(own["model"], [path for path, _ in own["val"]]).argmax(1)]
    assert [ax.get_title() for ax in figures["predictions.png"].axes] == \
        [f"pt: {p}\ngt: {NAMES[label]}" for p, (_, label) in zip(predicted, own["val"])]  # all 9 val images
    left, right = figures["lime_4.png"].axes
    assert left.get_title() == f"pt: {predicted[4]}\ngt: two" and right.get_title().startswith("LIME for 'two' (p = ")
    assert f"LIME, val image 4 (gt: two, pt: {predicted[4]}): p(two) = " in printed
    assert_real_png(tmp_path / "predictions.png", 9 * 100, 100)
    assert_real_png(tmp_path / "lime_4.png", 400, 200)


def test_image_files_are_shown_with_the_prediction_alone(own, tmp_path, monkeypatch, capsys):
    figures = saved_figures(monkeypatch)
    files = [own["val"][i][0] for i in (0, 5, 7)]
    visualize.main(own_args(own, tmp_path, "--predictions", "--lime", "--images", *files, "--index", "2"))
    printed = capsys.readouterr().out
    predicted = [NAMES[i] for i in eager_probabilities(own["model"], files).argmax(1)]
    assert [ax.get_title() for ax in figures["predictions.png"].axes] == [f"pt: {p}" for p in predicted]
    left, right = figures["lime_2.png"].axes  # LIME explains the predicted class: no true one is known
    assert left.get_title() == f"pt: {predicted[2]}" and right.get_title().startswith(f"LIME for '{predicted[2]}'")
    assert f"LIME, image 2, {files[2]} (pt: {predicted[2]}): p({predicted[2]}) = " in printed


def test_own_data_errors_fail_in_one_line(own, files, tmp_path):
    out = tmp_path / "out"
    image = own["val"][0][0]
    fails_with(r"^--index 2 is out of range: --images names 2 images \(0..1\)$",
               own_args(own, out, "--lime", "--images", image, image, "--index", "0", "2"))
    fails_with(r"^--index 9 is out of range: the val split has 9 images \(0..8\)$",
               own_args(own, out, "--lime", "--data", own["data"], "--index", "9"))
    (tmp_path / "notes.txt").write_text("not an image")
    fails_with(r"^--images: .*notes.txt: not an image", own_args(own, out, "--predictions", "--images", image,
                                                                 str(tmp_path / "notes.txt")))
    fails_with(rf"^--ckpt: {files['ckpt']} has a head of 10 classes but {own['data']} has 3 classes$",
               own_args(own, out, "--predictions", "--data", own["data"], "--ckpt", files["ckpt"]))
    truncated = tmp_path / "truncated.png"  # its header passes the check, its pixels do not decode
    truncated.write_bytes(open(own["val"][0][0], "rb").read()[:60])
    fails_with(rf"^--images: {truncated}: not a readable image", own_args(own, out, "--predictions", "--images",
                                                                          str(truncated)))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    fails_with(r"^--data: .*empty/val has no class folders", own_args(own, out, "--lime", "--data",
                                                                      str(tmp_path / "empty")))
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


@pytest.mark.parametrize("classes", [10, 100])
def test_the_confusion_matrix_reads_with_10_and_with_100_classes(classes, tmp_path):
    names = list(CIFAR10_CLASSES) if classes == 10 else [f"species_{i:03d}" for i in range(classes)]
    counts = np.random.default_rng(0).integers(0, 4, (classes, classes)) + 20 * np.eye(classes, dtype=np.int64)
    counts[1] = 0  # a class without images
    fig = plot_confusion_matrix(counts, names)
    side = 400 if classes == 10 else 1000  # pixels: the figure grows with the class count
    assert_real_png(save_figure(fig, str(tmp_path / "confusion.png")), side, side)
    ax = fig.axes[0]
    shares = ax.images[0].get_array()  # [classes, classes], masked where a row has no images
    np.testing.assert_allclose(shares[0], counts[0] / counts[0].sum())  # normalised per true class
    assert shares.mask[1].all() and not shares.mask[0].any()  # the empty class's row is blank (grey)
    if classes == 10:  # names on the axes, each non-empty cell's percentage
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == names
        assert len(ax.texts) == np.count_nonzero(counts)
        assert ax.texts[0].get_text() == f"{counts[0, 0] / counts[0].sum() * 100:.0f}"
    else:  # indices on about 20 ticks, a key from index to name
        for ticks in (ax.get_xticks(), ax.get_yticks()):
            shown = [t for t in ticks if 0 <= t < classes]  # the locator also returns ticks beyond the map
            assert 10 <= len(shown) <= 21 and all(t == int(t) for t in shown), ticks
        key = [line for text in fig.texts for line in text.get_text().splitlines()]
        assert key == [f"{i:>2} {name}" for i, name in enumerate(names)]
        assert not ax.texts
