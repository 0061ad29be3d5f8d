"""evaluate.py on UniNeXt-T at 32x32 over a tiny CIFAR-format tarball: the figures against an independent
computation with the notebook's own model code, the notebook's throughput line, the JSON, the exports (Paddle and
ONNX), and one-line errors. On your own data: an image folder's per-class accuracy by name and confusion matrix,
the top k of image files against the eager model, and the errors of either."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import paddle
import pytest

import evaluate
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT
from tests.own_data_fixture import NAMES, eager_probabilities, make_own_data
from uninext_paddle.checkpoint import save_class_names
from uninext_paddle.cli import CliError
from uninext_paddle.data import build_test_transforms, load_cifar10

SIZE = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory, nb):
    """A tiny tarball (20 test images) and a plain state_dict saved from the notebook's UniNeXt_T."""
    folder = tmp_path_factory.mktemp("evaluate")
    data = make_cifar_tarball(folder / "cifar.tar.gz", train_per_class=1, test_per_class=2)
    paddle.seed(0)
    model = nb.UniNeXt_T()
    ckpt = folder / "best_model.pdparams"
    paddle.save(model.state_dict(), str(ckpt))
    return {"data": str(data), "ckpt": str(ckpt), "model": model, "folder": folder}


def args_for(files, *extra: str) -> list[str]:
    return ["--ckpt", files["ckpt"], "--data", files["data"], "--image-size", str(SIZE), "--batch-size", "8",
            "--num-workers", "0", "--device", "cpu", "--warmup-batches", "0", "--timed-batches", "1", *extra]


@paddle.no_grad()
def notebook_validation(nb, model, data: str, batch_size: int) -> dict:
    """The notebook's validation loop (section 2.4) with its own model and loss, plus plain per-class counts."""
    model.eval()
    criterion = nb.LabelSmoothingCrossEntropy()
    loader = paddle.io.DataLoader(load_cifar10(data, "test", build_test_transforms(SIZE)), batch_size=batch_size)
    val_loss, val_num, accs, predictions, truths = 0.0, 0, [], [], []
    for x_data, y_data in loader:
        logits = model(x_data)
        val_loss += float(criterion(logits, y_data))
        val_num += len(y_data)
        accs.append(float(paddle.metric.accuracy(logits, paddle.unsqueeze(y_data, axis=1))))
        predictions.append(logits.argmax(-1).numpy())
        truths.append(y_data.numpy())
    pred, truth = np.concatenate(predictions), np.concatenate(truths)
    return {"loss": val_loss / val_num * batch_size, "acc": float(np.mean(accs)), "correct": int((pred == truth).sum()),
            "per_class_correct": np.bincount(truth[pred == truth], minlength=10).tolist()}


def test_figures_json_and_exports_match_the_notebook_model(files, capsys, nb):
    out = files["folder"] / "run"
    evaluate.main(args_for(files, "--json", str(out / "eval.json"), "--export", str(out / "inference"),
                           "--export-onnx", str(out / "onnx"), "--progress"))
    printed, bars = capsys.readouterr()
    report = json.loads((out / "eval.json").read_text())
    expected = notebook_validation(nb, files["model"], files["data"], batch_size=8)

    assert report["correct"] == expected["correct"] and report["images"] == 20
    assert report["top1"] == pytest.approx(expected["correct"] / 20)
    assert [row["correct"] for row in report["per_class"].values()] == expected["per_class_correct"]
    assert list(report["per_class"]) == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                         "ship", "truck"] and all(r["total"] == 2 for r in report["per_class"].values())
    assert report["classes"] == list(report["per_class"])
    assert np.diagonal(report["confusion_matrix"]).tolist() == expected["per_class_correct"]
    assert np.sum(report["confusion_matrix"], axis=1).tolist() == [2] * 10
    assert report["notebook_val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert report["notebook_val_acc"] == pytest.approx(expected["acc"], rel=1e-6)
    # the CPU default runs ONNX Runtime: the figures above are the notebook model's all the same
    assert {k: report[k] for k in ("variant", "device", "image_size", "batch_size", "amp", "backend")} == \
        {"variant": "T", "device": "cpu", "image_size": SIZE, "batch_size": 8, "amp": "off", "backend": "onnxruntime"}
    assert printed.startswith("CPU settings: ")  # the script applies them on the CPU and says which
    assert "\rval:" in bars and "\rtimed loop:" in bars  # --progress, although stderr is no terminal
    assert f"top-1 accuracy: {expected['correct'] / 20 * 100:.2f}% ({expected['correct']}/20)" in printed

    # the notebook's timed loop: its own line, verbatim, from the loop's own clock, and the plain one
    timing = report["throughput"]
    assert timing["notebook_loop_images"] == 20 and timing["notebook_loop_seconds"] > 0
    assert timing["notebook_line"] == f"Throughout:{int(20 // timing['notebook_loop_seconds'])}"
    assert f"\n{timing['notebook_line']}\n" in printed
    assert f"{timing['notebook_loop_images_per_s']:.1f} images/s (20 images in " in printed
    assert timing["model_images_per_s"] > 0 and timing["model_batch"] == 8

    # --export and --export-onnx wrote the models, loaded them back and found the same predictions
    # (their round trips are tested in test_export.py)
    assert (out / "inference" / "inference.json").is_file() and (out / "inference" / "inference.pdiparams").is_file()
    assert report["export"]["checked_images"] == 8 and report["export"]["max_logit_diff"] < 1e-4
    assert report["export_onnx"] == {"path": str(out / "onnx" / "model.onnx"), "checked_images": 8,
                                     "max_logit_diff": report["export_onnx"]["max_logit_diff"]}
    assert (out / "onnx" / "model.onnx").is_file() and report["export_onnx"]["max_logit_diff"] < 1e-4


def fails_with(message: str, argv: list[str]) -> None:
    """evaluate.py's main raises the ``CliError`` that ``run_cli`` prints as one line."""
    with pytest.raises(CliError, match=message) as err:
        evaluate.main(argv)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--image-size", "8"], "--image-size 8 is too small"),
    (["--warmup-batches", "-1"], "--warmup-batches must not be negative"),
    (["--amp", "fp32"], "invalid choice: 'fp32'"),
    (["--amp", "fp16"], "--amp: mixed precision fp16 needs a GPU"),
    (["--backend", "tensorrt"], "invalid choice: 'tensorrt'"),
    (["--timed-batches", "many"], "invalid int value"),
    (["--variant", "S"], "--ckpt: .* does not fit UniNeXt-S: .* of another shape"),
])
def test_bad_flags(files, flags, message):
    fails_with(message, args_for(files, *flags))


def test_bad_files(files, tmp_path):
    fails_with("checkpoint not found", args_for(files, "--ckpt", str(tmp_path / "none.pdparams")))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    fails_with("cannot write to --json", args_for(files, "--json", str(tmp_path / "blocker" / "e.json")))
    fails_with("cannot write to --export", args_for(files, "--export", str(tmp_path / "blocker")))
    fails_with("cannot write to --export-onnx", args_for(files, "--export-onnx", str(tmp_path / "blocker")))
    fails_with("CIFAR-10 not found", args_for(files, "--data", str(tmp_path / "none.tar.gz")))


def test_script_reports_a_corrupt_checkpoint_without_traceback(files, tmp_path):
    corrupt = tmp_path / "best_model.pdparams"
    corrupt.write_bytes(open(files["ckpt"], "rb").read()[:1000])  # a truncated download
    result = subprocess.run([sys.executable, "evaluate.py", *args_for(files, "--ckpt", str(corrupt))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: --ckpt: checkpoint {corrupt} is not a readable Paddle file")


def test_onnx_needs_onnxruntime_and_says_so_in_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    fails_with(r"^--backend: onnxruntime is not installed \(.*\); pip install -r requirements.txt$",
               args_for(files, "--backend", "onnxruntime"))
    # --export-onnx finds out before the passes over the test split
    fails_with(r"^--export-onnx: onnxruntime is not installed", args_for(files, "--export-onnx", str(tmp_path)))


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A 3-class image folder and a UniNeXt-T checkpoint with its class names beside it."""
    return make_own_data(tmp_path_factory.mktemp("own"))


def own_args(own, *extra: str) -> list[str]:
    return ["--ckpt", own["ckpt"], "--image-size", str(SIZE), "--batch-size", "4", "--num-workers", "0",
            "--device", "cpu", "--backend", "eager", "--warmup-batches", "0", "--timed-batches", "1", *extra]


def test_an_image_folder_gives_per_class_accuracy_by_name_and_a_confusion_matrix(own, tmp_path, capsys):
    report_path, png = tmp_path / "eval.json", tmp_path / "confusion.png"
    evaluate.main(own_args(own, "--data", own["data"], "--json", str(report_path), "--confusion", str(png)))
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    truth = np.array([label for _, label in own["val"]])
    predicted = eager_probabilities(own["model"], [path for path, _ in own["val"]], SIZE).argmax(1)
    expected = [[int(sum((truth == t) & (predicted == p))) for p in range(3)] for t in range(3)]

    assert report["classes"] == NAMES and report["confusion_matrix"] == expected  # rows: true, columns: predicted
    assert {name: (row["correct"], row["total"]) for name, row in report["per_class"].items()} == \
        {name: (expected[i][i], 3) for i, name in enumerate(NAMES)}
    assert report["correct"] == int((truth == predicted).sum()) and report["images"] == 9
    assert report["data"] == own["data"] and report["num_classes"] == 3 and report["backend"] == "eager"
    assert f": {own['data']} val split, 9 images at 32x32" in printed
    assert f"\n  zero       {expected[2][2] / 3 * 100:6.2f}% ({expected[2][2]}/3)\n" in printed
    assert f"wrote {png}\n" in printed
    pixels = mpimg.imread(png)[..., :3]
    assert min(pixels.shape[:2]) > 300 and pixels.std() > 0.05  # a real heat map, not a blank page


def test_images_give_the_top_k_of_the_models_softmax(own, tmp_path, capsys):
    single = own["val"][3][0]  # a file of class "two", then a folder expanded to its images
    report_path = tmp_path / "predictions.json"
    evaluate.main(own_args(own, "--images", single, f"{own['data']}/val/zero", "--topk", "5",
                           "--json", str(report_path)))
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    files = [single] + [path for path, label in own["val"] if label == 2]
    expected = eager_probabilities(own["model"], files, SIZE)  # [4, 3]

    assert [row["file"] for row in report["predictions"]] == files
    for row, probabilities in zip(report["predictions"], expected):
        assert len(row["top"]) == 3  # --topk 5, capped at the 3 classes
        assert [p["index"] for p in row["top"]] == np.argsort(-probabilities).tolist()
        assert [p["name"] for p in row["top"]] == [NAMES[p["index"]] for p in row["top"]]
        np.testing.assert_allclose([p["probability"] for p in row["top"]], np.sort(probabilities)[::-1], rtol=1e-5)
    assert report["classes"] == NAMES and report["image_size"] == SIZE and "top1" not in report  # no evaluation
    top = report["predictions"][0]["top"]
    assert f"\n{single}: {top[0]['name']} {top[0]['probability']:.4f}, {top[1]['name']} " in printed
    assert "top 3 of 3 classes" in printed


def test_own_data_errors_are_one_line_and_write_nothing(own, files, tmp_path):
    report_path = tmp_path / "out" / "r.json"

    def fails_on_own(message: str, *flags: str) -> None:
        fails_with(message, own_args(own, *flags, "--json", str(report_path)))
        assert not report_path.exists()

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    fails_on_own(rf"^--images: {notes}: not an image \(UnidentifiedImageError", "--images", own["val"][0][0],
                 str(notes))
    fails_on_own(r"^--images: .*missing.png does not exist$", "--images", str(tmp_path / "missing.png"))
    fails_on_own("--confusion goes with the evaluation of --data, not with --images", "--images", own["val"][0][0],
                 "--confusion", str(tmp_path / "c.png"))
    fails_on_own("--topk must be positive, got 0", "--images", own["val"][0][0], "--topk", "0")
    # the CIFAR-10 checkpoint's head has 10 classes
    fails_with(rf"^--ckpt: {files['ckpt']} has a head of 10 classes but {own['data']} has 3 classes$",
               own_args(own, "--data", own["data"], "--ckpt", files["ckpt"]))
    renamed = tmp_path / "renamed.pdparams"
    shutil.copy(own["ckpt"], renamed)
    save_class_names(str(renamed), ["one", "two", "three"])
    fails_on_own(rf"^--ckpt: {renamed} was trained on other classes than {own['data']} holds: class 2 is 'three' "
                 r"for the weights \(from .*renamed.classes.json\), 'zero' in the data$",
                 "--data", own["data"], "--ckpt", str(renamed))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    fails_on_own(r"^--data: .*empty/val has no class folders", "--data", str(tmp_path / "empty"))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_worker_processes_at_small_batches_evaluate_every_image(files, own, nb, batch_size, tmp_path):
    """2 workers on the tarball (20 images) and the image folder (9 images): every image counted once, the figures
    those of the notebook's model (the tarball) and of the eager model (the folder) at any batch size."""
    flags = ["--batch-size", str(batch_size), "--num-workers", "2", "--backend", "eager", "--json"]
    evaluate.main([*args_for(files), *flags, str(tmp_path / "cifar.json")])
    report = json.loads((tmp_path / "cifar.json").read_text())
    expected = notebook_validation(nb, files["model"], files["data"], batch_size)
    assert (report["images"], report["correct"]) == (20, expected["correct"])
    assert report["notebook_val_acc"] == pytest.approx(expected["acc"], rel=1e-6)
    assert report["throughput"]["notebook_loop_images"] == 20 and report["throughput"]["model_batch"] == batch_size

    evaluate.main([*own_args(own, "--data", own["data"]), *flags, str(tmp_path / "own.json")])
    report = json.loads((tmp_path / "own.json").read_text())
    truth = np.array([label for _, label in own["val"]])
    predicted = eager_probabilities(own["model"], [path for path, _ in own["val"]], SIZE).argmax(1)
    assert (report["images"], report["correct"]) == (9, int((truth == predicted).sum()))


def test_the_default_worker_count_evaluates_in_a_script_process(files):
    args = args_for(files, "--backend", "eager", "--batch-size", "3")
    args = args[:args.index("--num-workers")] + args[args.index("--num-workers") + 2:]  # the default: 4
    env = {name: value for name, value in os.environ.items() if name != "UNINEXT_CPU_TUNING"}  # a user's
    done = subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert ", 20 images at 32x32, batch 3," in done.stdout and "\nThroughout:" in done.stdout
