"""Plots of the notebook's results analysis (section 2.5): learning curves, test predictions and LIME, as PNGs.

    python visualize.py --curves                        # work/loss_curve.png, work/acc_curve.png
    python visualize.py --predictions --lime            # work/predictions.png, work/lime_3.png
    python visualize.py --lime --index 3 7 --num-samples 1000 --ckpt work/model/best_model.pdparams
    python visualize.py --predictions --lime --data my_images        # your own data: its val split
    python visualize.py --predictions --lime --images photo.jpg more/  # image files: what the model predicts

Headless: figures are rendered off-screen and written to --out. Give one or more modes; none prints this help.
On the CPU the model runs through ONNX Runtime or Paddle Inference with oneDNN when they match the eager model
(--backend; uninext_paddle/backends.py): LIME's thousand forward passes per image take several times less time.
"""
from __future__ import annotations

import os
import warnings

# Importing Paddle sets OMP_NUM_THREADS=1 when it is unset: the user's own value is read before that.
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
# Paddle warns on import when ccache (a C++ build cache for custom operators) is absent: noise for this script.
warnings.filterwarnings("ignore", message="No ccache found")

import argparse
from typing import Any

import numpy as np
import paddle

from uninext_paddle.backends import select_backend
from uninext_paddle.checkpoint import BEST_MODEL, load_class_names, load_model
from uninext_paddle.cli import (ArgumentParser, about, add_backend_flag, add_checkpoint_flags, add_data_flags,
                                add_device_flag, add_progress_flag, check_inference_image_size, check_ranges,
                                check_writable, fail, progress_wanted, run_cli, select_device_and_tune)
from uninext_paddle.data import load_val_split
from uninext_paddle.image_data import CIFAR10, collect_image_files, data_kind
from uninext_paddle.plots import denormalize, label_names, plot_learning_curve, save_figure, show_images
from uninext_paddle.predict import UNLABELLED, check_class_names, image_files_dataset
from uninext_paddle.records import HISTORY_FILE, load_history

NUM_PREDICTIONS = 18  # the notebook's 1 x 18 grid
TOP_SUPERPIXELS = 10  # how many LIME weights to print


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    modes = p.add_argument_group("modes (any combination)")
    modes.add_argument("--curves", action="store_true", help="learning curves of loss and accuracy from --history")
    modes.add_argument("--predictions", action="store_true",
                       help="the first 18 test images (or --images), predicted and true")
    modes.add_argument("--lime", action="store_true", help="LIME explanation of test image(s) --index")
    p.add_argument("--images", nargs="+", default=None, metavar="PATH",
                   help="--predictions and --lime on these image files (a folder: its images, recursively) instead "
                        "of the test split of --data; LIME explains the predicted class")
    p.add_argument("--out", default="work", help="folder the PNGs are written to")
    p.add_argument("--history", default=os.path.join("work", "model", HISTORY_FILE),
                   help="train.py's loss_record/acc_record file")
    add_checkpoint_flags(p, os.path.join("work", "model", BEST_MODEL))
    add_data_flags(p, data_help="the CIFAR-10 python tarball (its test split), an image folder or list files (their "
                   "val split)", image_size_help="side the test images are resized to")
    add_device_flag(p)
    add_backend_flag(p)
    p.add_argument("--index", type=int, nargs="+", default=[3],
                   help="test image(s) LIME explains: indices into the test/val split or the --images list")
    p.add_argument("--num-samples", type=int, default=1000, help="LIME's perturbed samples per image")
    p.add_argument("--batch-size", type=int, default=10, help="LIME's samples per forward pass")
    p.add_argument("--seed", type=int, default=None, help="LIME's sampling seed; None: random, as in the notebook")
    add_progress_flag(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear line for values argparse's types let through."""
    check_ranges(args, positive=("image_size", "num_samples", "batch_size"))
    check_inference_image_size(args.image_size)


def plot_curves(history: dict[str, Any], out: str) -> None:
    """The notebook's two ``plot_learning_curve`` calls, saved as loss_curve.png and acc_curve.png."""
    for record, title, ylabel, name in (("loss_record", "loss", "CE Loss", "loss_curve.png"),
                                        ("acc_record", "acc", "Accuracy", "acc_curve.png")):
        print(f"wrote {save_figure(plot_learning_curve(history[record], title, ylabel), os.path.join(out, name))}")


def load_images(args: argparse.Namespace, files: list[str] | None,
                names: list[str]) -> tuple[paddle.io.Dataset, str]:
    """(the images --predictions and --lime look at, which split they are): the "--images" ``files`` (labelled
    ``UNLABELLED``) when given, else CIFAR-10's "test" split or the "val" split of an image folder or list files
    (their classes must be the checkpoint's ``names``)."""
    if files is not None:
        return image_files_dataset(files, names, args.image_size), "--images"
    with about("--data"):
        dataset, data_names = load_val_split(args.data, args.image_size)
    with about("--ckpt"):
        check_class_names(args.ckpt, names, args.data, data_names)
    return dataset, "test" if data_kind(args.data) == CIFAR10 else "val"


def read_item(dataset: paddle.io.Dataset, index: int, split: str) -> tuple[np.ndarray, int]:
    """Item ``index`` of ``dataset`` (``split``: see ``load_images``) as (image [3, H, W] float32, label); an image
    file that does not decode fails in one line naming it and the flag that gave it."""
    with about("--images" if split == "--images" else "--data"):
        image, label = dataset[index]
    return np.asarray(image), int(label)


@paddle.no_grad()
def plot_predictions(model: paddle.nn.Layer, dataset: paddle.io.Dataset, names: list[str], split: str,
                     out: str) -> None:
    """The notebook's grid of the first 18 images, ``pt: <prediction>`` over ``gt: <truth>`` (image files given to
    be predicted: ``pt`` alone); ``names``: the class names, ``split``: see ``load_images``."""
    count = min(NUM_PREDICTIONS, len(dataset))
    samples = [read_item(dataset, i, split) for i in range(count)]
    X = paddle.to_tensor(np.stack([x for x, _ in samples]))
    y = np.array([label for _, label in samples])
    y_pred = paddle.argmax(model(X), -1)
    gt = None if (y == UNLABELLED).any() else label_names(y, names)
    axes = show_images(denormalize(X.numpy()), 1, count, pred=label_names(y_pred, names), gt=gt)
    print(f"wrote {save_figure(axes[0].figure, os.path.join(out, 'predictions.png'))}")


def explain(model: paddle.nn.Layer, dataset: paddle.io.Dataset, names: list[str], split: str,
            args: argparse.Namespace, device: str, progress: bool) -> None:
    """The notebook's LIME explanation of each image in ``--index`` of ``dataset`` (``split``: see
    ``load_images``), for its true class (an image file given to be predicted: for its predicted class);
    ``names``: the class names; ``progress``: draw interpretdl's bar over the samples."""
    # interpretdl (with scikit-learn and scikit-image) takes seconds to import: only --lime pays for it
    from uninext_paddle.explain import explain_image, plot_explanation

    for index in args.index:
        image, label = read_item(dataset, index, split)  # [3, H, W] float32, as the notebook's X.numpy()[index]
        with paddle.no_grad():
            prediction = int(model(paddle.to_tensor(image[None])).argmax(-1))
        labelled = label != UNLABELLED
        explained = label if labelled else prediction
        result = explain_image(model, image, explained, num_samples=args.num_samples, batch_size=args.batch_size,
                               device=device, seed=args.seed, progress=progress)
        what = (f"{split} image {index} (gt: {names[explained]}, pt: {names[prediction]})" if labelled else
                f"image {index}, {dataset.samples[index][0]} (pt: {names[prediction]})")
        print(f"LIME, {what}: p({names[explained]}) = {result.probability:.4f}, "
              f"R^2 of the local model = {result.r2:.3f}, {len(result.weights)} superpixels")
        print("  top superpixels (id: weight): " + ", ".join(
            f"{sp}: {w:+.4f}" for sp, w in result.weights[:TOP_SUPERPIXELS]))
        path = os.path.join(args.out, f"lime_{index}.png")
        print(f"wrote {save_figure(plot_explanation(result, image, prediction, names, labelled), path)}")


def main(argv: list[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not (args.curves or args.predictions or args.lime):
        parser.print_help()
        return
    check_args(args)
    check_writable(args.out, "--out")
    # everything that can fail fast is checked before the model runs
    if args.curves:
        with about("--history"):
            history = load_history(args.history)
    files = None
    if (args.predictions or args.lime) and args.images is not None:
        with about("--images"):
            files = collect_image_files(args.images)  # each one checked to be an image
    if args.predictions or args.lime:
        start = select_device_and_tune(args.device, USER_OMP_NUM_THREADS)
        start.report()
        device = start.device
        with about("--ckpt"):
            model, _ = load_model(args.ckpt, args.variant)
            names = load_class_names(args.ckpt, int(model.num_classes))
        dataset, split = load_images(args, files, names)
        bad = [i for i in args.index if not 0 <= i < len(dataset)] if args.lime else []
        if bad:
            where = "--images names" if split == "--images" else f"the {split} split has"
            fail(f"--index {bad[0]} is out of range: {where} {len(dataset)} images (0..{len(dataset) - 1})")
        with about("--backend"):
            model, _ = select_backend(model, args.backend, device, args.image_size)

    with about("--out"):
        if args.curves:
            plot_curves(history, args.out)
        if args.predictions:
            plot_predictions(model, dataset, names, split, args.out)
        if args.lime:
            explain(model, dataset, names, split, args, device, progress_wanted(args.progress))

if __name__ == "__main__":
    run_cli(main)
