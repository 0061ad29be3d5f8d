"""train.py on your own images: an image folder trains and learns, the class names travel with the weights, and a
CIFAR-10 checkpoint fine-tunes on a 3-class folder with a new head (the backbone kept, or frozen)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

import train
from tests.cifar_fixture import make_cifar_tarball
from tests.image_fixture import make_image_folder
from uninext_paddle import create_model
from uninext_paddle.checkpoint import load_backbone, load_class_names
from uninext_paddle.errors import UninextError
from uninext_paddle.train_state import TrainingState

FAST = ["--image-size", "16", "--batch-size", "8", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images") / "digits", classes=3, per_class=16,
                             val_per_class=4)


@pytest.fixture(scope="module")
def cifar_weights(tmp_path_factory) -> Path:
    """A 10-class UniNeXt-T checkpoint in the notebook's format (random weights: what matters is the shape)."""
    path = tmp_path_factory.mktemp("cifar") / "best_model.pdparams"
    paddle.seed(1)
    paddle.save(create_model("T", num_classes=10).state_dict(), str(path))
    return path


def test_a_short_run_on_an_image_folder_learns_and_keeps_the_class_names(digits, tmp_path):
    work = tmp_path / "w"
    train.main(["--data", str(digits), "--work-dir", str(work), *FAST, "--epochs", "3"])
    history = json.loads((work / "history.json").read_text())
    assert max(history["acc_record"]["val"]["acc"]) > 0.6  # 3 classes: chance is 1/3
    assert history["config"]["classes"] == ["one", "two", "zero"]  # the folders' names, sorted
    for weights in ("best_model.pdparams", "final_model.pdparams"):
        state = paddle.load(str(work / weights))
        assert list(state["head.weight"].shape) == [512, 3]  # a plain state_dict, head sized from the data
        assert load_class_names(str(work / weights), 3) == ["one", "two", "zero"]
    assert TrainingState.load(str(work / "last.pdckpt")).config["classes"] == ["one", "two", "zero"]


def test_load_backbone_keeps_everything_but_a_head_of_another_class_count(cifar_weights):
    paddle.seed(2)
    model = create_model("T", num_classes=3)
    fresh_head = model.head.weight.numpy().copy()
    assert load_backbone(model, str(cifar_weights), "T") is False
    saved = paddle.load(str(cifar_weights))
    for name, value in model.state_dict().items():
        if name.startswith("head."):
            assert name != "head.weight" or np.array_equal(value.numpy(), fresh_head)
        else:
            assert np.array_equal(value.numpy(), saved[name].numpy()), name
    same_classes = create_model("T", num_classes=10)
    assert load_backbone(same_classes, str(cifar_weights), "T") is True
    assert np.array_equal(same_classes.head.weight.numpy(), saved["head.weight"].numpy())


def test_fine_tuning_a_cifar_checkpoint_on_three_classes(digits, cifar_weights, tmp_path, capsys):
    work = tmp_path / "w"
    train.main(["--data", str(digits), "--work-dir", str(work), *FAST, "--epochs", "1", "--init",
                str(cifar_weights), "--freeze-backbone"])
    assert "its head has another class count: a new head for 3 classes" in capsys.readouterr().out
    tuned, start = paddle.load(str(work / "final_model.pdparams")), paddle.load(str(cifar_weights))
    assert all(np.array_equal(v.numpy(), start[k].numpy()) for k, v in tuned.items() if not k.startswith("head."))
    assert list(tuned["head.weight"].shape) == [512, 3]


def test_init_weights_of_another_variant_or_without_resume_are_one_line_errors(digits, tmp_path):
    small = tmp_path / "s.pdparams"
    paddle.save(create_model("S", num_classes=10).state_dict(), str(small))
    with pytest.raises(UninextError, match=f"--init: {small} holds UniNeXt-S weights, not UniNeXt-T"):
        train.main(["--data", str(digits), "--work-dir", str(tmp_path / "w"), *FAST, "--init", str(small)])
    with pytest.raises(UninextError, match="--freeze-backbone needs --init"):
        train.main(["--data", str(digits), "--work-dir", str(tmp_path / "w"), *FAST, "--freeze-backbone"])
    with pytest.raises(UninextError, match="give one of them"):
        train.main(["--data", str(digits), "--work-dir", str(tmp_path / "w"), *FAST, "--init", str(small),
                    "--resume"])


def test_resuming_on_other_data_is_refused(digits, tmp_path):
    work = tmp_path / "w"
    train.main(["--data", str(digits), "--work-dir", str(work), *FAST, "--epochs", "1"])
    cifar = make_cifar_tarball(tmp_path / "c.tar.gz", train_per_class=2, test_per_class=1)
    with pytest.raises(UninextError, match="was trained on other classes"):
        train.main(["--data", str(cifar), "--work-dir", str(work), *FAST, "--epochs", "2", "--resume"])
