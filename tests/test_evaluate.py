"""evaluate.py on UniNeXt-T at 32x32 over a tiny CIFAR-format tarball: the figures against an independent
computation with the notebook's own model code, the JSON, the static export, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import paddle
import pytest

import evaluate
import uninext_paddle as up
from tests.cifar_fixture import make_cifar_tarball
from tests.conftest import ROOT, TINY
from uninext_paddle.cli import CliError
from uninext_paddle.data import build_test_transforms, load_cifar10
from uninext_paddle.inference import check_export, export_model

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


def test_figures_json_and_export_match_the_notebook_model(files, capsys, nb):
    out = files["folder"] / "run"
    evaluate.main(args_for(files, "--json", str(out / "eval.json"), "--export", str(out / "inference")))
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    expected = notebook_validation(nb, files["model"], files["data"], batch_size=8)

    assert report["correct"] == expected["correct"] and report["images"] == 20
    assert report["top1"] == pytest.approx(expected["correct"] / 20)
    assert [row["correct"] for row in report["per_class"].values()] == expected["per_class_correct"]
    assert list(report["per_class"]) == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                         "ship", "truck"] and all(r["total"] == 2 for r in report["per_class"].values())
    assert report["notebook_val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert report["notebook_val_acc"] == pytest.approx(expected["acc"], rel=1e-6)
    # the CPU default runs Paddle Inference with oneDNN: the figures above are the notebook model's all the same
    assert {k: report[k] for k in ("variant", "device", "image_size", "batch_size", "amp", "backend")} == \
        {"variant": "T", "device": "cpu", "image_size": SIZE, "batch_size": 8, "amp": "off", "backend": "onednn"}
    assert report["throughput"]["loop_images_per_s"] > 0 and report["throughput"]["model_images_per_s"] > 0
    assert f"top-1 accuracy: {expected['correct'] / 20 * 100:.2f}% ({expected['correct']}/20)" in printed

    # --export wrote the program, loaded it back and found the same predictions (its round trip is tested below)
    assert (out / "inference" / "inference.json").is_file() and (out / "inference" / "inference.pdiparams").is_file()
    assert report["export"]["checked_images"] == 8 and report["export"]["max_logit_diff"] < 1e-4


def test_export_round_trip_predicts_what_the_dynamic_model_predicts(files, tmp_path):
    paddle.seed(1)
    model = up.UniNeXt(num_classes=10, **TINY)
    model.eval()
    prefix = export_model(model, str(tmp_path / "export"), SIZE)
    assert isinstance(model.forward, types.MethodType)  # still the dynamic model: to_static converted a copy
    program = open(prefix + ".json").read()
    assert "depthwise_conv2d" in program and "addmm" not in program  # Paddle's ops, not the CPU fast paths
    exported = paddle.jit.load(prefix)
    exported.eval()
    images = paddle.to_tensor(np.stack([np.asarray(x) for x, _ in
                                        load_cifar10(files["data"], "test", build_test_transforms(SIZE))]))
    for batch in (images[:1], images[:7], images):  # the batch dimension stays dynamic
        expected, got = model(batch).numpy(), exported(batch).numpy()
        assert np.array_equal(got.argmax(-1), expected.argmax(-1))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert check_export(prefix, model, images) < 1e-4
    with paddle.no_grad():
        model.head.weight.set_value(-model.head.weight)  # the checkpoint and the export now disagree
    with pytest.raises(CliError, match="predicts other classes than the checkpoint"):
        check_export(prefix, model, images)


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
    (["--amp", "fp16"], "--amp fp16 needs a GPU"),
    (["--backend", "tensorrt"], "invalid choice: 'tensorrt'"),
    (["--timed-batches", "many"], "invalid int value"),
    (["--variant", "S"], "does not fit UniNeXt-S: .* of another shape"),
])
def test_bad_flags(files, flags, message):
    fails_with(message, args_for(files, *flags))


def test_bad_files(files, tmp_path):
    fails_with("checkpoint not found", args_for(files, "--ckpt", str(tmp_path / "none.pdparams")))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    fails_with("cannot write to --json", args_for(files, "--json", str(tmp_path / "blocker" / "e.json")))
    fails_with("cannot write to --export", args_for(files, "--export", str(tmp_path / "blocker")))
    fails_with("CIFAR-10 not found", args_for(files, "--data", str(tmp_path / "none.tar.gz")))


def test_script_reports_a_corrupt_checkpoint_without_traceback(files, tmp_path):
    corrupt = tmp_path / "best_model.pdparams"
    corrupt.write_bytes(open(files["ckpt"], "rb").read()[:1000])  # a truncated download
    result = subprocess.run([sys.executable, "evaluate.py", *args_for(files, "--ckpt", str(corrupt))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: checkpoint {corrupt} is not a readable Paddle file")
