"""train.py's recipe options (Mixup/CutMix, EMA, warmup, AdamW, clipping, accumulation, --config): off by default
and then the notebook's run bit for bit; with every option on, the run learns and resumes exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import train
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT, TINY
from uninext_paddle import LabelSmoothingCrossEntropy, UniNeXt, create_model
from uninext_paddle.data import build_loaders, start_train_epoch
from uninext_paddle.engine import EpochMeter, TrainStep, train_one_epoch
from uninext_paddle.errors import UninextError
from uninext_paddle.records import Records
from uninext_paddle.train_state import TrainingState

FAST = ["--image-size", "16", "--batch-size", "8", "--epochs", "2", "--num-workers", "0", "--device", "cpu"]
EVERY_OPTION = ["--mixup", "0.2", "--cutmix", "1.0", "--mix-prob", "0.9", "--ema", "0.9", "--ema-warmup",
                "--warmup-epochs", "1", "--min-lr", "1e-6", "--optimizer", "adamw", "--weight-decay", "0.05",
                "--clip-grad", "1.0", "--accum-steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "cifar.tar.gz", train_per_class=4, test_per_class=2)


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in paddle.load(str(path)).items()}


def test_with_every_option_at_its_default_the_run_is_the_notebooks_loop(data, tmp_path):
    """The notebook's section 2.4 loop, written out with its own objects, against train.py's defaults."""
    train.main(["--data", str(data), "--work-dir", str(tmp_path / "w"), *FAST, "--epochs", "1"])
    paddle.seed(42)
    np.random.seed(42)
    loader, _, _ = build_loaders(str(data), 16, 8, 0, 42)
    model = create_model("T", num_classes=10)
    criterion = LabelSmoothingCrossEntropy(0.1)
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=1e-4, T_max=len(loader) * 1, verbose=False)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler, weight_decay=1e-5)
    model.train()
    start_train_epoch(loader, 0)
    for x_data, y_data in loader:
        loss = criterion(model(x_data), y_data)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.clear_grad()
    ours = _weights(tmp_path / "w" / "final_model.pdparams")
    assert all(np.array_equal(ours[k], v.numpy()) for k, v in model.state_dict().items())


def test_accumulating_k_micro_batches_gives_the_update_of_the_whole_batch(data):
    """SGD, whose update is linear in the gradient: the K micro-batches' summed gradients equal the batch's to float
    rounding (Adam would divide rounding-level gradients by their own size)."""
    loader, _, _ = build_loaders(str(data), 16, 8, 0, 0)
    results = []
    for accum in (1, 4):
        paddle.seed(0)
        model = UniNeXt(num_classes=10, **TINY)
        scheduler = paddle.optimizer.lr.StepDecay(learning_rate=0.1, step_size=1000)  # constant here
        optimizer = paddle.optimizer.SGD(parameters=model.parameters(), learning_rate=scheduler)
        start_train_epoch(loader, 0)
        step = TrainStep(optimizer, scheduler, LabelSmoothingCrossEntropy(), accum_steps=accum)
        summary = train_one_epoch(model, loader, step, Records(), EpochMeter(), 0)
        results.append((summary, {k: v.numpy() for k, v in model.state_dict().items()}))
    (one, w_one), (four, w_four) = results
    assert one["loss"] == pytest.approx(four["loss"], rel=1e-5) and one["acc"] == four["acc"]
    for name, value in w_one.items():
        np.testing.assert_allclose(w_four[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("flags, message", [
    (["--mixup", "-1"], "alpha"),
    (["--ema", "1.5"], r"\(0, 1\)"),
    (["--accum-steps", "3"], "--accum-steps 3 does not divide --batch-size 8"),
    (["--mix-prob", "2"], "probabilit"),
    (["--warmup-epochs", "5"], "warmup"),
    (["--cutmix", "-1"], "CutMix alpha"),
    (["--mix-switch-prob", "-0.1"], "switch probability"),
    (["--ema", "0"], r"\(0, 1\)"),
    (["--min-lr", "1e-3"], "minimum learning rate"),
    (["--optimizer", "sgd"], "invalid choice: 'sgd'"),
    (["--clip-grad", "0"], "clipping norm must be positive"),
    (["--accum-steps", "0"], "--accum-steps must be positive"),
    (["--weight-decay", "-1"], "weight decay must not be negative"),
    (["--num-workers", "-1"], "--num-workers must not be negative"),
])
def test_invalid_recipe_values_fail_before_any_work(flags, message, tmp_path):
    """Each value out of range is one line before the data is read or anything is written."""
    with pytest.raises(UninextError, match=message):
        train.main(["--data", str(tmp_path / "never-read.tar.gz"), "--work-dir", str(tmp_path / "w"), *FAST, *flags])
    assert not (tmp_path / "w").exists()


def test_a_config_file_sets_the_flags_and_the_command_line_wins(data, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("epochs: 1\nbatch-size: 4\nmixup: 0.2\nema: 0.5\nseed: 7\n")
    work = tmp_path / "w"
    train.main(["--config", str(config), "--data", str(data), "--work-dir", str(work), *FAST[:2], "--num-workers", "0",
                "--device", "cpu", "--seed", "3"])
    resolved = json.loads((work / "history.json").read_text())["config"]
    assert (resolved["epochs"], resolved["batch_size"], resolved["mixup"], resolved["ema"]) == (1, 4, 0.2, 0.5)
    assert resolved["seed"] == 3  # the command line wins
    assert TrainingState.load(str(work / "last.pdckpt")).config == resolved
    assert (work / "best_model_ema.pdparams").exists()

    config.write_text("epochs: 1\nmixpu: 0.2\n")
    with pytest.raises(UninextError, match=r"--config: .* unknown key 'mixpu' \(did you mean 'mixup'\?\)"):
        train.main(["--config", str(config), "--data", str(data), "--work-dir", str(work), *FAST])
    config.write_text("epochs: [1\n")
    with pytest.raises(UninextError, match="--config: "):
        train.main(["--config", str(config), "--data", str(data), "--work-dir", str(work), *FAST])


def test_with_every_option_on_the_run_learns_and_a_stopped_run_resumes_exactly(data, tmp_path):
    args = ["--data", str(data), *FAST, *EVERY_OPTION]
    reference = tmp_path / "reference"
    train.main([*args, "--work-dir", str(reference)])
    epochs = json.loads((reference / "history.json").read_text())["epochs"]
    assert max(e["val_acc"] for e in epochs) > 0.3 and max(e["ema_val_acc"] for e in epochs) > 0.2  # chance: 0.1

    work = tmp_path / "stopped"  # the real script, stopped by a signal after its first batch
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--work-dir", str(work)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("#===epoch: 0, lr="):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    stopped = TrainingState.load(str(work / "last.pdckpt"))
    assert (stopped.epoch, stopped.meter["step"]) == (0, 1) and stopped.extras["ema"]["updates"] == 1
    train.main([*args, "--work-dir", str(work), "--resume"])
    for name in ("final_model.pdparams", "best_model.pdparams", "best_model_ema.pdparams"):
        ours, theirs = _weights(work / name), _weights(reference / name)
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs), name
    ours, theirs = (json.loads((w / "history.json").read_text()) for w in (work, reference))
    assert ours["loss_record"] == theirs["loss_record"] and ours["acc_record"] == theirs["acc_record"]
