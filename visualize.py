"""Plots of the notebook's results analysis (section 2.5): learning curves, test predictions and LIME, as PNGs.

    python visualize.py --curves                        # work/loss_curve.png, work/acc_curve.png
    python visualize.py --predictions --lime            # work/predictions.png, work/lime_3.png
    python visualize.py --lime --index 3 7 --num-samples 1000 --ckpt work/model/best_model.pdparams

Headless: figures are rendered off-screen and written to --out. Give one or more modes; none prints this help.
On the CPU the model runs through Paddle Inference with oneDNN when it matches the eager model (--backend): LIME's
thousand forward passes per image take 2-3x less time.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from uninext_paddle.cli import ArgumentParser, check_writable, fail, run_cli
from uninext_paddle.data import DEFAULT_DATA, build_test_transforms, load_cifar10
from uninext_paddle.device import DEVICES, select_device
from uninext_paddle.inference import BACKENDS, load_model, select_backend
from uninext_paddle.model import VARIANTS
from uninext_paddle.records import HISTORY_FILE, load_history
from uninext_paddle.plots import denormalize, get_cifar10_labels, plot_learning_curve, save_figure, show_images

import paddle  # noqa: E402  (after uninext_paddle, which silences Paddle's import-time ccache warning)

NUM_PREDICTIONS = 18  # the notebook's 1 x 18 grid
TOP_SUPERPIXELS = 10  # how many LIME weights to print


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    modes = p.add_argument_group("modes (any combination)")
    modes.add_argument("--curves", action="store_true", help="learning curves of loss and accuracy from --history")
    modes.add_argument("--predictions", action="store_true", help="the first 18 test images, predicted and true")
    modes.add_argument("--lime", action="store_true", help="LIME explanation of test image(s) --index")
    p.add_argument("--out", default="work", help="folder the PNGs are written to")
    p.add_argument("--history", default=os.path.join("work", "model", HISTORY_FILE),
                   help="train.py's loss_record/acc_record file")
    p.add_argument("--ckpt", default=os.path.join("work", "model", "best_model.pdparams"),
                   help="model weights: a train.py checkpoint or the notebook's state_dict")
    p.add_argument("--variant", default=None, choices=list(VARIANTS), help="UniNeXt variant; None: inferred from the weights' shapes")
    p.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 python tarball")
    p.add_argument("--image-size", type=int, default=224, help="side the test images are resized to")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: the GPU when Paddle sees one")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="what runs the forward passes: eager, onednn (Paddle Inference with oneDNN, CPU), "
                        "auto: onednn on the CPU when it matches the eager model, else eager")
    p.add_argument("--index", type=int, nargs="+", default=[3], help="test image(s) LIME explains")
    p.add_argument("--num-samples", type=int, default=1000, help="LIME's perturbed samples per image")
    p.add_argument("--batch-size", type=int, default=10, help="LIME's samples per forward pass")
    p.add_argument("--seed", type=int, default=None, help="LIME's sampling seed; None: random, as in the notebook")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear line for values argparse's types let through."""
    for name in ("image_size", "num_samples", "batch_size"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.image_size < 16:
        fail(f"--image-size {args.image_size} is too small: UniNeXt downsamples 16x before its last stage")


def plot_curves(history: dict[str, Any], out: str) -> None:
    """The notebook's two ``plot_learning_curve`` calls, saved as loss_curve.png and acc_curve.png."""
    for record, title, ylabel, name in (("loss_record", "loss", "CE Loss", "loss_curve.png"),
                                        ("acc_record", "acc", "Accuracy", "acc_curve.png")):
        print(f"wrote {save_figure(plot_learning_curve(history[record], title, ylabel), os.path.join(out, name))}")


@paddle.no_grad()
def plot_predictions(model: paddle.nn.Layer, dataset: paddle.io.Dataset, out: str) -> None:
    """The notebook's grid of the first 18 test images, ``pt: <prediction>`` over ``gt: <truth>``."""
    count = min(NUM_PREDICTIONS, len(dataset))
    samples = [dataset[i] for i in range(count)]
    X = paddle.to_tensor(np.stack([x for x, _ in samples]))
    y = np.array([int(label) for _, label in samples])
    y_pred = paddle.argmax(model(X), -1)
    axes = show_images(denormalize(X.numpy()), 1, count, pred=get_cifar10_labels(y_pred), gt=get_cifar10_labels(y))
    print(f"wrote {save_figure(axes[0].figure, os.path.join(out, 'predictions.png'))}")


def explain(model: paddle.nn.Layer, dataset: paddle.io.Dataset, args: argparse.Namespace, device: str) -> None:
    """The notebook's LIME explanation of each test image in ``--index``, for its true class."""
    # interpretdl (with scikit-learn and scikit-image) takes seconds to import: only --lime pays for it
    from uninext_paddle.explain import explain_image, plot_explanation

    for index in args.index:
        image, label = dataset[index]
        image = np.asarray(image)  # [3, H, W] float32, as the notebook's X.numpy()[index]
        with paddle.no_grad():
            prediction = int(model(paddle.to_tensor(image[None])).argmax(-1))
        result = explain_image(model, image, int(label), num_samples=args.num_samples, batch_size=args.batch_size,
                               device=device, seed=args.seed)
        truth, predicted = get_cifar10_labels([int(label), prediction])
        print(f"LIME, test image {index} (gt: {truth}, pt: {predicted}): p({truth}) = {result.probability:.4f}, "
              f"R^2 of the local model = {result.r2:.3f}, {len(result.weights)} superpixels")
        print("  top superpixels (id: weight): " + ", ".join(
            f"{sp}: {w:+.4f}" for sp, w in result.weights[:TOP_SUPERPIXELS]))
        path = os.path.join(args.out, f"lime_{index}.png")
        print(f"wrote {save_figure(plot_explanation(result, image, prediction), path)}")


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not (args.curves or args.predictions or args.lime):
        parser.print_help()
        return
    check_args(args)
    check_writable(args.out, "--out")
    # everything that can fail fast is checked before the model runs
    history = load_history(args.history) if args.curves else None
    if args.predictions or args.lime:
        device = select_device(args.device)
        model, _ = select_backend(load_model(args.ckpt, args.variant)[0], args.backend, device, args.image_size)
        dataset = load_cifar10(args.data, "test", build_test_transforms(args.image_size))
        bad = [i for i in args.index if not 0 <= i < len(dataset)] if args.lime else []
        if bad:
            fail(f"--index {bad[0]} is out of range: the test split has {len(dataset)} images "
                 f"(0..{len(dataset) - 1})")

    if history is not None:
        plot_curves(history, args.out)
    if args.predictions:
        plot_predictions(model, dataset, args.out)
    if args.lime:
        explain(model, dataset, args, device)


if __name__ == "__main__":
    run_cli(main)
