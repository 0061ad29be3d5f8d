"""train.py under ``paddle.distributed.launch`` with 2 CPU processes (gloo), as a multi-GPU user runs it: one set
of checkpoints; a stop sent to the launcher saves a mid-epoch checkpoint that resumes to the uninterrupted run's
weights; two "nodes" equal one node of two processes; a NaN on one rank stops every rank with one message."""
from __future__ import annotations

import json
import os
import signal
import socket
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

# 80 train images: 5 batches of 8 per process and epoch; 20 val images; one epoch
FAST = ["--image-size", "16", "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--device", "cpu"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1")
FILES = ["best_model.pdparams", "best_optimizer.pdopt", "final_model.pdparams", "final_optimizer.pdopt",
         "history.json", "last.pdckpt", "train.log"]


def launch(*args: str, logs: Path, launcher: tuple[str, ...] = ("--nproc_per_node", "2"),
           script: str = str(ROOT / "train.py")) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", *launcher, "--log_dir", str(logs),
                             script, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def weights(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in paddle.load(str(path)).items()}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "cifar.tar.gz", train_per_class=8,
                              test_per_class=2)


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory) -> Path:
    """An uninterrupted 2-process run: the reference."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    code, out = finish(launch("--data", str(data), "--work-dir", str(tmp / "model"), *FAST, logs=tmp / "logs"))
    assert code == 0, out[-3000:]
    return tmp


def test_two_processes_write_one_set_of_checkpoints(two_processes):
    work, logs = two_processes / "model", two_processes / "logs"
    assert sorted(p.name for p in work.iterdir()) == FILES
    epoch = json.loads((work / "history.json").read_text())["epochs"][0]
    # 80 images: five batches of 8 on each process; val: the 20 images once, shared out
    assert (epoch["train_images"], epoch["val_images"]) == (80, 20)
    assert "#===epoch: 0, val loss" in (logs / "workerlog.0").read_text()
    assert "#===epoch" not in (logs / "workerlog.1").read_text()  # only rank 0 prints
    state = TrainingState.load(str(work / "last.pdckpt"))
    assert len(state.rng) == 2 and state.config["world_size"] == 2  # every process's own generators


def test_sigterm_to_the_launcher_saves_mid_epoch_and_resumes_to_the_same_weights(two_processes, data, tmp_path):
    """The launcher forwards a stop as three SIGTERMs 0.2 s apart: the repeats must not abort the save."""
    work, args = tmp_path / "model", ["--data", str(data), "--work-dir", str(tmp_path / "model"), *FAST]
    proc = launch(*args, logs=tmp_path / "logs")
    log, deadline = tmp_path / "logs" / "workerlog.0", time.monotonic() + 120
    while not (log.exists() and "#===epoch: 0, lr=" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code != 0
    assert "Traceback" not in log.read_text()
    state = TrainingState.load(str(work / "last.pdckpt"))
    assert state.epoch == 0 and 0 < state.meter["step"] < 5, (state.epoch, state.meter)  # mid-epoch

    code, out = finish(launch(*args, "--resume", logs=tmp_path / "logs2"))
    assert code == 0, out[-3000:]
    for name in ("final_model.pdparams", "best_model.pdparams"):
        assert same_weights(work / name, two_processes / "model" / name), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_equal_one_node_of_two_processes(two_processes, data, tmp_path):
    master = f"127.0.0.1:{_free_port()}"
    args = ["--data", str(data), "--work-dir", str(tmp_path / "model"), *FAST]
    nodes = [launch(*args, logs=tmp_path / f"logs{i}", launcher=("--nnodes", "2", "--master", master,
                                                                  "--nproc_per_node", "1"))
             for i in range(2)]
    for node in nodes:
        code, out = finish(node)
        assert code == 0, out[-3000:]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == FILES  # one set, by the global rank 0
    assert same_weights(tmp_path / "model" / "final_model.pdparams", two_processes / "model" / "final_model.pdparams")


def test_a_nan_on_one_rank_stops_every_rank_with_one_message(data, tmp_path):
    wrapper = tmp_path / "nan_on_rank_1.py"
    wrapper.write_text(
        "import os, runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import uninext_paddle.loss as loss\n"
        "if os.environ.get('PADDLE_TRAINER_ID') == '1':\n"
        "    loss.LabelSmoothingCrossEntropy.forward = lambda self, x, target: x.mean() * float('nan')\n"
        f"sys.argv = [{str(ROOT / 'train.py')!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n")
    proc = launch("--data", str(data), "--work-dir", str(tmp_path / "model"), *FAST, logs=tmp_path / "logs",
                  script=str(wrapper))
    code, out = finish(proc)
    assert code != 0
    for rank, why in ((0, "not finite on another process"), (1, "nan")):
        lines = (tmp_path / "logs" / f"workerlog.{rank}").read_text().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert errors == [f"error: the training loss is {why} at epoch 0, batch 0: stopping; the checkpoints in "
                          f"{tmp_path / 'model'} are from before it (try a lower --lr, or --amp off)"], lines[-5:]
        assert not any("Traceback" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["train.log"]
