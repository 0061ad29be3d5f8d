"""uninext_paddle.predict: probabilities of image files, top k, the check that a checkpoint's classes are the
data's."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from tests.conftest import TINY
from tests.own_data_fixture import NAMES, SIZE, eager_probabilities, make_own_data
from uninext_paddle import UniNeXt
from uninext_paddle.checkpoint import save_class_names
from uninext_paddle.errors import CheckpointError
from uninext_paddle.loader import make_loader
from uninext_paddle.predict import UNLABELLED, check_class_names, image_files_dataset, predict_probabilities, top_k


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return make_own_data(tmp_path_factory.mktemp("own"))


@pytest.fixture(scope="module")
def tiny():
    paddle.seed(0)
    model = UniNeXt(num_classes=len(NAMES), **TINY)
    model.eval()
    return model


def test_probabilities_of_files_are_the_softmax_of_the_models_logits(own, tiny):
    files = [path for path, _ in own["val"]]
    dataset = image_files_dataset(files, NAMES, SIZE)
    assert [label for _, label in dataset.samples] == [UNLABELLED] * len(files) and dataset.classes == NAMES
    probabilities = predict_probabilities(tiny, make_loader(dataset, 4, num_workers=0))  # batches 4, 4, 1
    np.testing.assert_allclose(probabilities, eager_probabilities(tiny, files), rtol=1e-5, atol=1e-7)
    assert probabilities.shape == (9, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-6)


def test_top_k_is_the_most_probable_first_and_at_most_every_class():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], np.float32)
    tops = top_k(probabilities, NAMES, 5)
    assert [[(p.name, p.index) for p in top] for top in tops] == [[("two", 1), ("zero", 2), ("one", 0)],
                                                                  [("one", 0), ("two", 1), ("zero", 2)]]  # a tie
    assert tops[0][0].probability == pytest.approx(0.6)
    assert [len(top) for top in top_k(probabilities, NAMES, 1)] == [1, 1]


def test_class_names_must_be_the_datas_in_count_names_and_order(own, tmp_path):
    check_class_names(own["ckpt"], NAMES, own["data"], NAMES)
    with pytest.raises(CheckpointError, match=r"has a head of 10 classes but .*digits has 3 classes"):
        check_class_names("w.pdparams", [str(i) for i in range(10)], own["data"], NAMES)
    sidecar = tmp_path / "w.classes.json"
    save_class_names(str(tmp_path / "w.pdparams"), ["one", "zero", "two"])
    with pytest.raises(CheckpointError, match=rf"class 1 is 'zero' for the weights \(from {sidecar}\), 'two' in "
                                              "the data$"):
        check_class_names(str(tmp_path / "w.pdparams"), ["one", "zero", "two"], own["data"], NAMES)
    with pytest.raises(CheckpointError, match=r"class 0 is '0' for the weights \(no x.classes.json beside it"):
        check_class_names(str(tmp_path / "x.pdparams"), ["0", "1", "2"], own["data"], NAMES)
