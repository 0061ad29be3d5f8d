"""train.py end to end, as a user runs it: the notebook's defaults, a short run that learns and writes the
notebook's files, Ctrl-C/SIGTERM + resume equal to an uninterrupted run, kill -9 during a save, and the
2-process CPU launch. Runs UniNeXt-T at 16x16 on tiny CIFAR-format tarballs (a few seconds per step)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT
from uninext_paddle.train_state import TrainingState

# 40 train images in 5 batches of 8 per epoch, 20 val images; 2 epochs
FAST = ["--image-size", "16", "--batch-size", "8", "--epochs", "2", "--num-workers", "0", "--device", "cpu"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def run_train(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory) -> Path:
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "cifar-10-python.tar.gz", train_per_class=4,
                              test_per_class=2)


@pytest.fixture(scope="module")
def baseline(learnable, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted 2-epoch run (with VisualDL logging): the reference for the other tests."""
    work = tmp_path_factory.mktemp("baseline")
    done = run_train("--data", str(learnable), "--work-dir", str(work / "model"), "--visualdl", str(work / "vdl"),
                     *FAST)
    assert done.returncode == 0, done.stderr[-2000:]
    return work / "model", done


def test_defaults_are_the_notebooks():
    import train

    args = train.get_args_parser().parse_args([])
    assert (args.variant, args.epochs, args.batch_size, args.lr, args.weight_decay) == ("T", 100, 128, 1e-4, 1e-5)
    assert (args.smoothing, args.drop_path_rate, args.image_size, args.num_workers, args.seed) == (0.1, 0., 224, 4, 42)
    assert args.data == os.path.join("data", "cifar-10-python.tar.gz")
    assert args.work_dir == os.path.join("work", "model")
    assert (args.device, args.amp, args.log_interval, args.resume, args.visualdl) == ("auto", "off", 10, None, None)


def test_short_run_learns_and_writes_the_notebooks_files(baseline, nb):
    work, done = baseline
    # the notebook's print lines
    assert "#===epoch: 0, lr=0.0001000000===#" in done.stdout
    assert re.search(r"#===epoch: 1, train loss is: [\d.]+, train acc is: [\d.]+%===#", done.stdout)
    assert re.search(r"#===epoch: 1, val loss is: [\d.]+, val acc is: [\d.]+%===#", done.stdout)
    assert {p.name for p in work.iterdir()} == {"best_model.pdparams", "best_optimizer.pdopt", "final_model.pdparams",
                                              "final_optimizer.pdopt", "history.json", "last.pdckpt", "train.log"}
    # everything printed is in train.log too, progress bars aside (stderr is not a terminal here: none drawn)
    assert (work / "train.log").read_text() == done.stdout + done.stderr
    assert done.stdout.startswith("CPU settings: ")  # the script applies the CPU tuning itself, and says so

    history = json.loads((work / "history.json").read_text())
    loss, acc, epochs = history["loss_record"], history["acc_record"], history["epochs"]
    # 5 batches per epoch, a loss every 10 batches: batch 0 of each epoch, the notebook's iter stamps
    assert loss == {"train": {"loss": loss["train"]["loss"], "iter": [0, 1]},
                    "val": {"loss": loss["val"]["loss"], "iter": [1, 2]}}
    assert acc == {"train": {"acc": acc["train"]["acc"], "iter": [0, 1]},
                   "val": {"acc": acc["val"]["acc"], "iter": [1, 2]}}
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"] and loss["val"]["loss"][1] < loss["val"]["loss"][0]
    assert acc["val"]["acc"][-1] >= 0.4  # chance is 0.1
    # the cosine schedule spans exactly steps_per_epoch * epochs steps, stepped every batch
    assert epochs[0]["lr"] == pytest.approx(0.5e-4) and epochs[1]["lr"] == pytest.approx(0, abs=1e-12)
    assert (epochs[0]["train_images"], epochs[0]["val_images"]) == (40, 20)
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(max(acc["val"]["acc"]))
    assert list((work.parent / "vdl").glob("vdlrecords.*.log"))

    # the notebook's own model code takes our best_model.pdparams as is
    state = paddle.load(str(work / "best_model.pdparams"))
    reference = nb.UniNeXt_T()
    missing, unexpected = reference.set_state_dict(state)
    assert not missing and not unexpected
    final = paddle.load(str(work / "final_optimizer.pdopt"))
    assert "LR_Scheduler" in final and final["LR_Scheduler"]["last_epoch"] == 10


def _arrays(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in paddle.load(str(path)).items() if hasattr(v, "shape")}


def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(baseline, learnable, tmp_path):
    reference, _ = baseline
    work = tmp_path / "model"
    args = ["--data", str(learnable), "--work-dir", str(work), *FAST]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("#===epoch: 0, lr="):  # the first batch is under way: stop mid-epoch
            proc.send_signal(signal.SIGTERM)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert f"with --resume {work / 'last.pdckpt'}" in stderr.strip().splitlines()[-1]
    stopped = TrainingState.load(str(work / "last.pdckpt"))
    assert (stopped.epoch, stopped.meter["step"]) == (0, 1)

    resumed = run_train(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("final_model.pdparams", "best_model.pdparams"):
        ours, theirs = _arrays(work / name), _arrays(reference / name)
        assert ours.keys() == theirs.keys()
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours), name
    ours, theirs = (json.loads((w / "history.json").read_text()) for w in (work, reference))
    assert ours["loss_record"] == theirs["loss_record"] and ours["acc_record"] == theirs["acc_record"]


def test_kill_9_during_a_save_leaves_loadable_checkpoints(tmp_path):
    data = make_cifar_tarball(tmp_path / "small.tar.gz", train_per_class=2, test_per_class=1)
    work = tmp_path / "model"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--work-dir", str(work),
                             *FAST, "--epochs", "1"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # the moment last.pdckpt is being written (the largest file, after best_* and history.json)
    while not list(work.glob(".last.pdckpt.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before last.pdckpt was written"
    assert not (work / "last.pdckpt").exists()
    written = [p for p in work.iterdir() if not p.name.startswith(".")]
    assert "history.json" in {p.name for p in written}  # saved just before last.pdckpt
    for path in written:
        if path.suffix == ".json":
            assert json.loads(path.read_text())
        elif path.suffix != ".log":  # train.log is appended line by line, not replaced
            assert paddle.load(str(path))
