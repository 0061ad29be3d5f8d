"""Every bad input to train.py ends in one line on stderr and a non-zero exit, never a traceback.

Most cases call ``train.main`` in-process (an ``UninextError`` is what ``run_cli`` turns into that line); two run
the real script to check the line itself. Nothing here downloads: the downloader is replaced by one that fails.
"""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import paddle
import pytest

import train
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT
from uninext_paddle.errors import UninextError
from uninext_paddle.train_state import TrainingState

FAST = ["--image-size", "16", "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "cifar.tar.gz", train_per_class=2, test_per_class=1)


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(paddle.utils.download, "get_path_from_url", no_network)


@pytest.mark.parametrize("args, message", [
    (["--variant", "X"], "invalid choice: 'X'"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--batch-size", "-8"], "--batch-size must be positive"),
    (["--lr", "0"], "--lr must be positive"),
    (["--epochs", "two"], "invalid int value"),
    (["--amp", "bf16", "--device", "cpu"], "--amp: mixed precision bf16 needs a GPU"),
    (["--batch-size", "64", "--data", "{data}"], "fewer than one batch of 64"),
])
def test_bad_flags(args, message, data, tmp_path):
    args = [a.replace("{data}", str(data)) for a in args]
    with pytest.raises(UninextError, match=message):
        train.main(["--work-dir", str(tmp_path), *args])


def test_missing_data_offline_says_where_to_put_it(offline, tmp_path):
    missing = tmp_path / "nowhere" / "cifar-10-python.tar.gz"
    with pytest.raises(UninextError, match=f"CIFAR-10 not found at {missing} and the download failed.*put it at"):
        train.main(["--data", str(missing), "--work-dir", str(tmp_path / "w"), *FAST])


def test_corrupt_data(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(UninextError, match="is not a readable CIFAR-10 python tarball"):
        train.main(["--data", str(bad), "--work-dir", str(tmp_path / "w"), *FAST])


def test_unwritable_work_dir_or_visualdl_dir(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UninextError, match="cannot write to --work-dir"):
        train.main(["--data", str(data), "--work-dir", str(blocker / "model"), *FAST])
    with pytest.raises(UninextError, match=rf"^cannot write to --visualdl {blocker / 'vdl'}: Not a directory$"):
        train.main(["--data", str(data), "--work-dir", str(tmp_path / "w"), "--visualdl", str(blocker / "vdl"),
                    *FAST])
    assert not list((tmp_path / "w").glob("*.pd*"))  # before any training


def test_resume_missing_corrupt_foreign_or_of_another_variant(data, tmp_path):
    common = ["--data", str(data), "--work-dir", str(tmp_path / "w"), *FAST]
    with pytest.raises(UninextError, match="--resume: training checkpoint not found"):
        train.main([*common, "--resume", str(tmp_path / "none.pdckpt")])
    with pytest.raises(UninextError, match="--resume: training checkpoint not found: .*last.pdckpt"):
        train.main([*common, "--resume"])
    corrupt = tmp_path / "corrupt.pdckpt"
    corrupt.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UninextError, match="is not a readable Paddle file"):
        train.main([*common, "--resume", str(corrupt)])
    weights = tmp_path / "best_model.pdparams"
    paddle.save({"head.weight": paddle.zeros([2, 2])}, str(weights))
    with pytest.raises(UninextError, match="not a resumable training checkpoint"):
        train.main([*common, "--resume", str(weights)])
    other = tmp_path / "other.pdckpt"
    TrainingState(model={}, optimizer={}, scheduler={}, scaler=None, epoch=0, meter={}, best_acc=0.0, records={},
                  rng=[], config={"variant": "S"}).save(str(other))
    with pytest.raises(UninextError, match="UniNeXt-S checkpoint but --variant is T; resume it with --variant S"):
        train.main([*common, "--resume", str(other)])


def test_nan_loss_stops_and_leaves_the_checkpoints_alone(data, tmp_path, monkeypatch):
    class NanLoss(paddle.nn.Layer):
        def forward(self, logits, labels):
            return logits.mean() * float("nan")

    monkeypatch.setattr(train, "LabelSmoothingCrossEntropy", lambda smoothing: NanLoss())
    work = tmp_path / "w"
    work.mkdir()
    (work / "last.pdckpt").write_bytes(b"the previous good checkpoint")
    with pytest.raises(UninextError, match="the training loss is nan at epoch 0, batch 0: stopping"):
        train.main(["--data", str(data), "--work-dir", str(work), *FAST])
    assert sorted(p.name for p in work.iterdir()) == ["last.pdckpt", "train.log"]
    assert (work / "last.pdckpt").read_bytes() == b"the previous good checkpoint"
    assert (work / "train.log").read_text().splitlines()[-1].startswith("error: the training loss is nan")


def test_a_diverging_run_stops_before_saving_anything(tmp_path):
    """One step per epoch at lr 1e30: the weights stay finite (~1e30) and the training loss of the step before the
    update was fine, but the validation pass overflows. Nothing may be saved from that state."""
    data = make_cifar_tarball(tmp_path / "one_batch.tar.gz", train_per_class=1, test_per_class=1)
    work = tmp_path / "w"
    with pytest.raises(UninextError, match="the validation loss is nan after epoch 0: stopping"):
        train.main(["--data", str(data), "--work-dir", str(work), *FAST, "--lr", "1e30"])
    assert sorted(p.name for p in work.iterdir()) == ["train.log"]


def test_a_full_disk_at_a_save_is_one_line_and_loses_nothing(data, tmp_path, monkeypatch):
    work = tmp_path / "w"
    real_save = paddle.save

    def disk_fills_at_last_checkpoint(obj, path, **kwargs):
        if ".last.pdckpt." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path, **kwargs)

    monkeypatch.setattr(paddle, "save", disk_fills_at_last_checkpoint)
    with pytest.raises(UninextError, match=f"cannot write {work / 'last.pdckpt'}: No space left on device"):
        train.main(["--data", str(data), "--work-dir", str(work), *FAST])
    assert sorted(p.name for p in work.iterdir()) == ["best_model.pdparams", "best_optimizer.pdopt", "history.json",
                                                      "train.log"]
    assert "head.weight" in paddle.load(str(work / "best_model.pdparams"))


def test_a_slow_cpu_epoch_gets_a_note_with_the_practical_alternative(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "SLOW_EPOCH_SECONDS", 0)
    train.main(["--data", str(data), "--work-dir", str(tmp_path / "w"), *FAST, "--batch-size", "4"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: on the CPU")]
    assert len(notes) == 1 and "one epoch of 5 batches will take about" in notes[0]
    assert "--image-size 32" not in notes[0]  # the run is already at 16x16


@pytest.mark.parametrize("case", ["variant", "offline"])
def test_the_script_prints_one_line_and_no_traceback(case, tmp_path):
    if case == "variant":
        command = [str(ROOT / "train.py"), "--variant", "X"]
    else:  # the real script, its downloader made to fail: no network access is attempted
        command = ["-c", "import warnings; warnings.filterwarnings('ignore', message='No ccache found')\n"
                   "import runpy, sys, paddle.utils.download as d\n"
                   "def no_network(*a, **k): raise ConnectionError('network is unreachable')\n"
                   "d.get_path_from_url = no_network\n"
                   f"sys.argv = ['train.py', '--data', {str(tmp_path / 'c.tar.gz')!r}, '--work-dir', "
                   f"{str(tmp_path / 'w')!r}]\n"
                   f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')"]
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert ("invalid choice: 'X'" if case == "variant" else "the download failed") in lines[0]


def test_resuming_with_another_number_of_processes_is_refused(data, tmp_path):
    """Each process's share of an epoch (and the schedule's length) depend on the count: no silent change."""
    work = tmp_path / "w"
    train.main(["--data", str(data), "--work-dir", str(work), *FAST])
    state = TrainingState.load(str(work / "last.pdckpt"))
    state.config["world_size"] = 2
    state.save(str(work / "last.pdckpt"))
    with pytest.raises(UninextError, match="written by a run of 2 process.*resume it with 2, not 1"):
        train.main(["--data", str(data), "--work-dir", str(work), *FAST, "--resume"])
