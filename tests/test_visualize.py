"""visualize.py: the notebook's learning curves, prediction grid and LIME as real PNGs, and one-line errors."""
from __future__ import annotations

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
from uninext_paddle import create_model
from uninext_paddle.checkpoint import atomic_save
from uninext_paddle.cli import CliError
from uninext_paddle.data import build_test_transforms, load_cifar10
from uninext_paddle.plots import denormalize, plot_learning_curve
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
    result = subprocess.run([sys.executable, "visualize.py", *args_for(files, out, "--curves", "--predictions", "--lime",
                                                                       "--num-samples", "20", "--seed", "0")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Clipping input data" not in result.stderr  # the grid shows de-normalised images
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
    assert result.stderr == (f"error: history {tmp_path / 'history.json'} has no plottable loss_record['train']: "
                             "expected equally long, non-empty 'loss' and 'iter' lists\n")
