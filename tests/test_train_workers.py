"""Training with data loader worker processes, as users run it: train.py's loaders at batch sizes 1 to 4 (the last
val batch partial) for several epochs on a CIFAR tarball and an image folder, train.py with 2 workers and with the
default worker count in a real script process, and a worker killed mid-epoch: one line, a non-zero exit within
seconds, and a last.pdckpt that resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT, TINY
from tests.image_fixture import make_image_folder
from uninext_paddle import LabelSmoothingCrossEntropy, UniNeXt
from uninext_paddle.data import build_loaders, start_train_epoch
from uninext_paddle.engine import EpochMeter, TrainStep, evaluate, train_one_epoch
from uninext_paddle.optim import build_optimizer, build_scheduler
from uninext_paddle.records import Records
from uninext_paddle.train_state import TrainingState

ENV = dict(os.environ, PYTHONUNBUFFERED="1")
USERS_ENV = {name: value for name, value in ENV.items() if name != "UNINEXT_CPU_TUNING"}  # conftest's opt-out
SMALL = ["--image-size", "16", "--device", "cpu", "--epochs", "2"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, tuple[Path, int, int]]:
    """name -> (data set, train images, val images)."""
    folder = tmp_path_factory.mktemp("workers")
    return {"cifar": (make_cifar_tarball(folder / "c.tar.gz", train_per_class=1, test_per_class=1), 10, 10),
            "folder": (make_image_folder(folder / "digits", classes=3, per_class=3, val_per_class=3), 9, 9)}


@pytest.mark.parametrize("kind", ["cifar", "folder"])
def test_two_workers_at_batch_sizes_1_to_4_train_and_validate_for_several_epochs(datasets, kind):
    """train.py's loaders and loop (a UniNeXt small enough to run 24 short epochs)."""
    data, train_images, val_images = datasets[kind]
    for batch_size in (1, 2, 3, 4):
        train_loader, val_loader, classes = build_loaders(str(data), 16, batch_size, num_workers=2, seed=0)
        model = UniNeXt(num_classes=len(classes), **TINY)
        scheduler = build_scheduler(1e-3, len(train_loader), 3)
        optimizer = build_optimizer("adam", model, scheduler, 0.0)
        step = TrainStep(optimizer, scheduler, LabelSmoothingCrossEntropy())
        for epoch in range(3):
            start_train_epoch(train_loader, epoch)
            trained = train_one_epoch(model, train_loader, step, Records(), EpochMeter(), epoch)
            assert trained["images"] == train_images // batch_size * batch_size  # drop_last
            val = evaluate(model, val_loader, step.criterion, num_classes=len(classes))
            assert val["images"] == val_images  # every val image, the last batch partial unless it divides


def test_train_py_with_two_workers_on_an_image_folder(datasets, tmp_path):
    data, _, val_images = datasets["folder"]
    work = tmp_path / "model"
    train.main(["--data", str(data), "--work-dir", str(work), "--batch-size", "4", "--num-workers", "2",
                "--no-progress", *SMALL])
    epochs = json.loads((work / "history.json").read_text())["epochs"]
    assert [e["train_images"] for e in epochs] == [8, 8] and [e["val_images"] for e in epochs] == [9, 9]


def test_the_default_worker_count_trains_in_a_script_process(datasets, tmp_path):
    data, _, _ = datasets["cifar"]
    work = tmp_path / "model"
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--work-dir", str(work),
                           "--batch-size", "2", *SMALL], cwd=ROOT, env=USERS_ENV, capture_output=True, text=True,
                          timeout=180)  # no --num-workers: the default 4
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Error" not in done.stderr
    assert len(json.loads((work / "history.json").read_text())["epochs"]) == 2


def worker_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (its data loader workers)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(child) for child in f.read().split()]
    return [child for child in found if os.path.exists(f"/proc/{child}")]


def test_a_worker_killed_mid_epoch_ends_the_run_with_one_line_and_a_resumable_checkpoint(tmp_path):
    data = make_cifar_tarball(tmp_path / "c.tar.gz", train_per_class=20, test_per_class=1)
    work = tmp_path / "model"
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--work-dir", str(work),
               "--batch-size", "1", "--num-workers", "2", *SMALL]
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("#===epoch: 0, lr="):  # the epoch's workers start now
            break
    deadline = time.monotonic() + 60
    while len(worker_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few batches in
    workers = worker_pids(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 15
    assert proc.returncode == 2
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: --data: data loader worker ") and "was killed by SIGKILL" in lines[0]
    assert f"{work / 'last.pdckpt'} holds the run up to epoch 0, batch " in lines[0]
    stopped = TrainingState.load(str(work / "last.pdckpt"))
    assert stopped.epoch == 0 and 0 < stopped.meter["step"] < 200
    assert f"batch {stopped.meter['step']}:" in lines[0]
    time.sleep(0.5)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)  # no worker outlives the run
