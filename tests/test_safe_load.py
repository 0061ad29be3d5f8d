"""Reading Paddle files without running them (uninext_paddle/safe_load.py): a file whose pickle would call a
function is refused naming it, alone or nested in valid weights, and nothing runs; every layout Paddle writes (its
3.x tensors, 2.x DenseTensors and name tables, NumPy 1.x module names, split big parameters, optimizer states)
reads as ``paddle.load(path, return_numpy=True)`` reads it."""
from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from uninext_paddle import UniNeXt
from uninext_paddle.errors import CheckpointError
from uninext_paddle.safe_load import load_pickled, load_weights_file


class Hostile:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: str, how: str = "system") -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "eval":
            return eval, (f"__import__('os').system('touch {self.marker}')",)
        if self.how == "popen":
            return subprocess.Popen, (["touch", self.marker],)
        return os.system, (f"touch {self.marker}",)


class PaddleTwoDenseTensor:
    """What Paddle 2.x's ``paddle.save`` pickled for a DenseTensor: ``eval("data", {"data": array})``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):
        return eval, ("data", {"data": self.array})


def same(a, b) -> bool:
    """Equal structures, arrays compared by value and dtype."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and \
            np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def write_pickle(path, obj, protocol: int = 4, numpy_1: bool = False):
    blob = pickle.dumps(obj, protocol=protocol)
    if numpy_1:  # the module names NumPy 1.x wrote (protocol 2's GLOBAL opcode names them as text)
        blob = blob.replace(b"numpy._core", b"numpy.core")
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("how, named", [("system", "posix.system"), ("popen", "subprocess.Popen"),
                                        ("eval", "builtins.eval called with")])
def test_a_hostile_object_is_refused_naming_it_and_nothing_runs(tmp_path, how, named):
    marker = tmp_path / "ran"
    for obj in (Hostile(str(marker), how),  # alone
                {**UniNeXt(num_classes=10, **TINY).state_dict(), "head.bias": Hostile(str(marker), how)}):  # nested
        path = tmp_path / "evil.pdparams"
        paddle.save(obj, str(path)) if isinstance(obj, dict) else write_pickle(path, obj)
        with pytest.raises(CheckpointError, match=rf"^checkpoint {path} holds {named}.*which loading would call: "
                                                  "refused"):
            load_weights_file(str(path))
        assert not marker.exists()
    assert "\n" not in str(pytest.raises(CheckpointError, load_pickled, str(path)).value)  # one line


def test_paddle_3_weights_and_optimizer_states_read_as_paddle_reads_them(tmp_path, nb):
    paddle.seed(0)
    model = nb.UniNeXt(embed_dim=16, depth=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], ws=[7, 7, 7, 7])  # the notebook's
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=1e-4, T_max=10)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler, weight_decay=1e-5)
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    optimizer.step()
    for name, obj in (("model.pdparams", model.state_dict()), ("adam.pdopt", optimizer.state_dict()),
                      ("both.pdckpt", {"model": model.state_dict(), "epoch": 3, "note": "x", "none": None})):
        paddle.save(obj, str(tmp_path / name))
        ours, paddles = load_pickled(str(tmp_path / name)), paddle.load(str(tmp_path / name), return_numpy=True)
        assert same(ours, paddles), name
    assert isinstance(ours["model"]["head.weight"], np.ndarray)


def test_paddle_2_layouts_read_as_paddle_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    layouts = {
        # Paddle 2.0: arrays and the structured-name table, protocol 2, NumPy 1.x's module names
        "2.0.pdparams": ({"fc.weight": weight, "fc.bias": bias,
                          "StructuredToParameterName@@": {"fc.weight": "linear_0.w_0", "fc.bias": "linear_0.b_0"}},
                         2, True),
        # Paddle 2.1+: tensors as (name, array) tuples
        "2.1.pdparams": ({"fc.weight": ("linear_0.w_0", weight), "fc.bias": ("linear_0.b_0", bias)}, 4, False),
        # Paddle 2.x DenseTensors: eval("data", {"data": array})
        "dense.pdparams": ({"fc.weight": PaddleTwoDenseTensor(weight), "fc.bias": PaddleTwoDenseTensor(bias)}, 2,
                           True),
        # a parameter saved in slices (Paddle does this above 1 GB with protocol 2 or 3)
        "split.pdparams": ({"fc.weight@@.0": weight.reshape(-1)[:6], "fc.weight@@.1": weight.reshape(-1)[6:],
                            "fc.bias": bias, "UnpackBigParamInfor@@": {"fc.weight": {
                                "OriginShape": [4, 3], "slices": ["fc.weight@@.0", "fc.weight@@.1"]}}}, 2, False),
    }
    for name, (obj, protocol, numpy_1) in layouts.items():
        path = write_pickle(tmp_path / name, obj, protocol, numpy_1)
        ours, paddles = load_pickled(str(path)), paddle.load(str(path), return_numpy=True)
        assert same(ours, paddles), name
        assert same(ours, {"fc.weight": weight, "fc.bias": bias}), name


def test_missing_truncated_and_foreign_files_are_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint not found: .*nope\.pdparams$"):
        load_pickled(str(tmp_path / "nope.pdparams"))
    paddle.save({"w": np.ones(1000, np.float32)}, str(tmp_path / "ok.pdparams"))
    (tmp_path / "cut.pdparams").write_bytes((tmp_path / "ok.pdparams").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cut\.pdparams is not a readable Paddle file .*truncated\?$"):
        load_pickled(str(tmp_path / "cut.pdparams"))
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.safetensors is not a readable safetensors file"):
        load_weights_file(str(tmp_path / "text.safetensors"))
