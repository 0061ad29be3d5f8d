"""Weight files (uninext_paddle/checkpoint.py, convert.py) and the scripts that read them: the notebook's weights
load and give its logits; a safetensors round trip gives the same logits; values that are not float arrays of
the model's shapes are refused naming the first bad key; a hostile file is refused in one line by every script
and the Python API, with a marker file proving nothing ran."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import paddle
import pytest

import evaluate
import train
import visualize
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT
from uninext_paddle import UniNeXt_T
from uninext_paddle import convert as convert_module
from uninext_paddle.checkpoint import load_backbone, load_model, save_weights
from uninext_paddle.cli import CliError
from uninext_paddle.errors import CheckpointError
from uninext_paddle.train_state import TrainingState

IMAGES = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))


class Hostile:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, nb):
    """The notebook's UniNeXt_T, its state_dict saved by its own code (``paddle.save``), and its logits."""
    folder = tmp_path_factory.mktemp("weights")
    paddle.seed(2)
    model = nb.UniNeXt_T()
    model.eval()
    path = folder / "best_model.pdparams"
    paddle.save(model.state_dict(), str(path))
    with paddle.no_grad():
        logits = model(IMAGES).numpy()
    return {"folder": folder, "path": path, "logits": logits, "state": model.state_dict()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_cifar_tarball(tmp_path_factory.mktemp("data") / "c.tar.gz", train_per_class=1, test_per_class=1)


def logits_of(model: paddle.nn.Layer) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        return model(IMAGES).numpy()


def test_the_notebooks_weights_load_and_give_its_logits(weights):
    model, variant = load_model(str(weights["path"]))
    assert variant == "T"
    np.testing.assert_allclose(logits_of(model), weights["logits"], rtol=1e-5, atol=1e-5)


def test_a_safetensors_round_trip_gives_the_same_logits(weights, tmp_path):
    model, _ = load_model(str(weights["path"]))
    save_weights(model.state_dict(), str(tmp_path / "w.safetensors"), ["a"] * 10)
    again, _ = load_model(str(tmp_path / "w.safetensors"))
    assert np.array_equal(logits_of(again), logits_of(model))
    assert json.loads((tmp_path / "w.classes.json").read_text()) == ["a"] * 10
    # the converter: .pdparams -> .safetensors -> .pdparams, the class names following
    convert_module.main([str(tmp_path / "w.safetensors"), str(tmp_path / "back.pdparams")])
    assert json.loads((tmp_path / "back.classes.json").read_text()) == ["a"] * 10
    convert_module.main([str(weights["path"]), str(tmp_path / "nb.safetensors")])
    for path in (tmp_path / "back.pdparams", tmp_path / "nb.safetensors"):
        assert np.array_equal(logits_of(load_model(str(path))[0]), logits_of(model))
    with pytest.raises(CliError, match="the destination must end in .pdparams or .safetensors"):
        convert_module.main([str(weights["path"]), str(tmp_path / "w.bin")])


@pytest.mark.parametrize("value, described", [("hello", "a str"), (np.arange(10), "an array of int64"),
                                              ([0.0] * 10, "a list")])
def test_values_that_are_not_float_arrays_are_refused_naming_the_key(weights, data, tmp_path, value, described):
    path = tmp_path / "odd.pdparams"
    with open(path, "wb") as f:
        pickle.dump({**{k: v.numpy() for k, v in weights["state"].items()}, "head.bias": value}, f)
    message = rf"{path}: head\.bias is {described}, not an array of floats"
    with pytest.raises(CheckpointError, match=message):
        load_model(str(path))
    with pytest.raises(CheckpointError, match=message):
        load_backbone(UniNeXt_T(), str(path), "T")  # train.py --init
    with pytest.raises(CliError, match=rf"^--ckpt: {message}"):
        evaluate.main(["--ckpt", str(path), "--data", str(data), "--device", "cpu"])


def test_a_hostile_file_is_refused_in_one_line_by_every_script_and_runs_nothing(weights, data, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pdparams"
    paddle.save({**weights["state"], "head.bias": Hostile(str(marker))}, str(evil))  # inside valid weights
    refused = rf"{evil} holds posix\.system, which loading would call: refused"
    for script, flags in (("evaluate.py", ["--ckpt", str(evil), "--data", str(data)]),
                          ("train.py", ["--init", str(evil), "--data", str(data), "--work-dir", str(tmp_path / "w"),
                                        "--batch-size", "2"])):
        done = subprocess.run([sys.executable, script, *flags, "--image-size", "32", "--device", "cpu"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --") and "posix.system" in lines[0], done.stderr
        assert not marker.exists(), script
    with pytest.raises(CliError, match=rf"^--ckpt: initial weights|^--ckpt: checkpoint {refused}"):
        visualize.main(["--predictions", "--ckpt", str(evil), "--data", str(data), "--out", str(tmp_path / "v")])
    with pytest.raises(CheckpointError, match=refused):  # run_cli prints it as one line
        convert_module.main([str(evil)])
    for loader in (load_model, lambda path: load_backbone(UniNeXt_T(), path, "T"), TrainingState.load):
        with pytest.raises(CheckpointError, match=refused):
            loader(str(evil))
    # a training state whose weights are hostile, resumed by train.py
    last = tmp_path / "w" / "last.pdckpt"
    last.parent.mkdir(exist_ok=True)
    with open(last, "wb") as f:
        pickle.dump({"version": 3, "model": {"head.bias": Hostile(str(marker))}}, f)
    with pytest.raises(CliError, match=rf"^--resume: training checkpoint {last} holds posix\.system"):
        train.main(["--resume", "--data", str(data), "--work-dir", str(last.parent), "--device", "cpu",
                    "--batch-size", "2"])
    assert not marker.exists()
