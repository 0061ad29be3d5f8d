"""Evaluate a UniNeXt checkpoint on the CIFAR-10 test split (the notebook's section 2.5 numbers) or your own images.

    python evaluate.py --ckpt work/model/best_model.pdparams
    python evaluate.py --ckpt work/model/best_model.pdparams --data my_images --confusion work/confusion.png
    python evaluate.py --ckpt work/model/best_model.pdparams --images photo.jpg more_photos/ --topk 3
    python evaluate.py --ckpt work/model/best_model.pdparams --image-size 32 --device cpu --json work/eval.json
    python evaluate.py --ckpt work/model/best_model.pdparams --export work/inference   # + Paddle inference model
    python evaluate.py --ckpt work/model/best_model.pdparams --export-onnx work/onnx    # + work/onnx/model.onnx

Reports top-1 accuracy, the notebook's label-smoothed val loss and val accuracy, per-class accuracy (one untimed
pass), then the throughput the notebook's way: its bare loop over the test loader timed on its own (forward passes
only, data loading included; the notebook printed ``Throughout:403`` on its GPU), printed verbatim and spelled
out; and the model-only throughput (warm-up, then timed forward passes on a batch already on the device). On the
CPU the forward passes run through ONNX Runtime or Paddle Inference with oneDNN when they match the eager model
(``--backend``; uninext_paddle/backends.py): several times faster, same logits up to float rounding.

``--data`` an image folder or list files: its val split is evaluated the same way, with the class names of the
checkpoint (they must be the data's); ``--confusion`` draws the confusion matrix. ``--images`` predicts files
instead: the top ``--topk`` classes of each, with their probabilities (no evaluation).
"""
from __future__ import annotations

import os
import warnings

# Importing Paddle sets OMP_NUM_THREADS=1 when it is unset: the user's own value is read before that.
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
# Paddle warns on import when ccache (a C++ build cache for custom operators) is absent: noise for this script.
warnings.filterwarnings("ignore", message="No ccache found")

import argparse

import numpy as np
import paddle

from uninext_paddle import LabelSmoothingCrossEntropy
from uninext_paddle.backends import select_backend
from uninext_paddle.checkpoint import BEST_MODEL, load_class_names, load_model
from uninext_paddle.cli import (ArgumentParser, about, add_amp_flag, add_backend_flag, add_checkpoint_flags,
                                add_data_flags, add_device_flag, add_loader_flags, add_progress_flag,
                                check_inference_image_size, check_ranges, check_writable, fail, progress_wanted,
                                run_cli, select_device_and_tune)
from uninext_paddle.data import load_val_split
from uninext_paddle.device import amp_context
from uninext_paddle.engine import evaluate
from uninext_paddle.export import check_export, check_onnx_export, export_model, export_onnx, onnx_modules
from uninext_paddle.fileio import atomic_write_json
from uninext_paddle.image_data import CIFAR10, collect_image_files, data_kind
from uninext_paddle.loader import BatchLoader, make_loader
from uninext_paddle.plots import plot_confusion_matrix, save_figure
from uninext_paddle.predict import check_class_names, image_files_dataset, predict_probabilities, top_k
from uninext_paddle.throughput import LoopTiming, model_throughput, notebook_loop


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_flags(p, os.path.join("work", "model", BEST_MODEL))
    add_data_flags(p, data_help="the CIFAR-10 python tarball (its test split is evaluated), an image folder "
                   "(DIR/val/<class>/*.jpg or DIR/test/...) or list files (DIR/val_list.txt, ...): its val split",
                   image_size_help="side the test images are resized to")
    p.add_argument("--images", nargs="+", default=None, metavar="PATH",
                   help="predict these image files (a folder: its images, recursively) instead of evaluating "
                        "--data: the --topk most probable classes of each")
    p.add_argument("--topk", type=int, default=5, help="classes printed per --images file (at most all of them)")
    add_loader_flags(p, batch_help="test images per forward pass")
    add_device_flag(p)
    add_amp_flag(p)
    add_backend_flag(p)
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed forward passes before the model-only timing")
    p.add_argument("--timed-batches", type=int, default=10, help="forward passes timed for the model-only throughput")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every figure to PATH as JSON")
    p.add_argument("--confusion", default=None, metavar="PNG",
                   help="also draw the confusion matrix (normalised per true class) to PNG")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also save a Paddle inference model (paddle.jit.save) to DIR and check it reloads")
    p.add_argument("--export-onnx", default=None, metavar="DIR",
                   help="also write DIR/model.onnx (paddle2onnx) and check it with onnxruntime")
    add_progress_flag(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear line for values argparse's types let through."""
    check_ranges(args, positive=("image_size", "batch_size", "timed_batches", "topk"),
                 non_negative=("num_workers", "warmup_batches"))
    check_inference_image_size(args.image_size)
    if args.images is not None:
        evaluating = [flag for flag, value in (("--confusion", args.confusion), ("--export", args.export),
                                               ("--export-onnx", args.export_onnx)) if value is not None]
        if evaluating:
            fail(f"{evaluating[0]} goes with the evaluation of --data, not with --images (which only predicts)")


def predict_files(args: argparse.Namespace, files: list[str], runner: paddle.nn.Layer, variant: str,
                  names: list[str], device: str, backend: str) -> dict:
    """``--images``: the ``--topk`` most probable classes of each file, printed one line per file; returns the
    JSON report."""
    loader = make_loader(image_files_dataset(files, names, args.image_size), args.batch_size, args.num_workers)
    with about("--images"):  # a file that does not decode fails here, naming it
        probabilities = predict_probabilities(runner, loader, args.amp, device)  # [files, classes]
    tops = top_k(probabilities, names, args.topk)
    print(f"UniNeXt-{variant} from {args.ckpt} on {device}: {len(files)} images at {args.image_size}x"
          f"{args.image_size}, amp {args.amp}, backend {backend}; top {len(tops[0])} of {len(names)} classes")
    for file, top in zip(files, tops):
        print(f"{file}: " + ", ".join(f"{p.name} {p.probability:.4f}" for p in top))
    return {"checkpoint": args.ckpt, "variant": variant, "num_classes": len(names), "classes": names,
            "device": device, "amp": args.amp, "backend": backend, "image_size": args.image_size,
            "predictions": [{"file": file, "top": [p._asdict() for p in top]} for file, top in zip(files, tops)]}


def write_json(report: dict, path: str | None) -> None:
    """``--json``: ``report`` written atomically to ``path`` (nothing when None)."""
    if path is not None:
        with about("--json"):
            atomic_write_json(report, path)
        print(f"wrote {path}")


def check_outputs(args: argparse.Namespace) -> list[str] | None:
    """Everything that can fail fast, before the model runs: the output places can be written, the ONNX packages
    are there for --export-onnx, every --images file is an image. Returns those files (None without --images)."""
    for flag, path in (("--json", args.json), ("--confusion", args.confusion)):
        if path is not None:
            check_writable(os.path.dirname(os.path.abspath(path)), flag)
    if args.export is not None:
        check_writable(args.export, "--export")
    if args.export_onnx is not None:
        check_writable(args.export_onnx, "--export-onnx")
        with about("--export-onnx"):
            onnx_modules()  # paddle2onnx and onnxruntime are installed: known before the long passes
    if args.images is None:
        return None
    with about("--images"):
        return collect_image_files(args.images)  # each one checked to be an image, before any work


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    check_args(args)
    files = check_outputs(args)

    # ------------------------------------------------------------------------------------------------------
    # setup: device (and on the CPU this process's settings), model and its class names, data, backend
    start = select_device_and_tune(args.device, USER_OMP_NUM_THREADS)
    start.report()
    with about("--amp"):
        amp_context(args.amp, start.device)  # rejects --amp fp16/bf16 where it cannot run, before any work
    with about("--ckpt"):
        model, variant = load_model(args.ckpt, args.variant)
        names = load_class_names(args.ckpt, int(model.num_classes))
    if files is None:
        with about("--data"):
            dataset, data_names = load_val_split(args.data, args.image_size)
        with about("--ckpt"):
            check_class_names(args.ckpt, names, args.data, data_names)
    with about("--backend"):
        runner, backend = select_backend(model, args.backend, start.device, args.image_size)
    if files is not None:
        write_json(predict_files(args, files, runner, variant, names, start.device, backend), args.json)
        return
    run = Evaluation(args, model, runner, variant, names, start.device, backend)
    report = run.figures(make_loader(dataset, args.batch_size, args.num_workers))
    report.update(run.exports())
    run.draw_confusion(np.asarray(report["confusion_matrix"]))
    write_json(report, args.json)


class Evaluation:
    """The evaluation of a checkpoint on a data set's val split: the notebook's figures, its throughput, the
    exports, the confusion matrix."""

    def __init__(self, args: argparse.Namespace, model: paddle.nn.Layer, runner: paddle.nn.Layer, variant: str,
                 names: list[str], device: str, backend: str) -> None:
        self.args, self.model, self.runner, self.variant = args, model, runner, variant
        self.names, self.device, self.backend = names, device, backend
        self.split = "CIFAR-10 test" if data_kind(args.data) == CIFAR10 else f"{args.data} val split"
        self.images: paddle.Tensor | None = None  # the loader's first batch: timed, and checked by the exports

    def figures(self, loader: BatchLoader) -> dict:
        """The notebook's validation pass (accuracy, loss, per class; untimed: its loss and metrics are not the
        notebook's timed loop), its throughput loop timed on its own, and the model-only throughput: printed, and
        returned as the JSON report."""
        args, progress = self.args, progress_wanted(self.args.progress)
        with about("--data"):  # an unreadable image, a data loader worker that died: one line
            stats = evaluate(self.runner, loader, LabelSmoothingCrossEntropy(), amp=args.amp, device=self.device,
                             num_classes=len(self.names), progress=progress)
            loop = notebook_loop(self.runner, loader, args.amp, self.device, progress)
            self.images = next(iter(loader))[0]
        # model-only: the forward pass on one device-resident batch, repeated
        forward = model_throughput(self.runner, self.images, self.device, args.amp, args.warmup_batches,
                                   args.timed_batches)
        per_class = {name: {"correct": c, "total": t, "acc": c / t if t else None}
                     for name, c, t in zip(self.names, stats["per_class_correct"], stats["per_class_total"])}
        self.print_figures(stats, per_class, loop, forward)
        return {
            "checkpoint": args.ckpt, "variant": self.variant, "num_classes": len(self.names), "device": self.device,
            "amp": args.amp, "backend": self.backend, "image_size": args.image_size, "batch_size": args.batch_size,
            "images": stats["images"], "correct": stats["correct"], "top1": stats["top1"],
            "notebook_val_acc": stats["acc"], "notebook_val_loss": stats["loss"], "per_class": per_class,
            "data": args.data, "classes": self.names,
            "confusion_matrix": stats["confusion"],  # rows: true, columns: predicted
            "throughput": {"notebook_line": loop.notebook_line(), "notebook_loop_images_per_s": loop.images_per_s,
                           "notebook_loop_images": loop.images, "notebook_loop_seconds": loop.seconds,
                           "model_images_per_s": forward, "model_batch": int(self.images.shape[0]),
                           "warmup_batches": args.warmup_batches, "timed_batches": args.timed_batches},
        }

    def print_figures(self, stats: dict, per_class: dict, loop: LoopTiming, forward: float) -> None:
        args = self.args
        print(f"UniNeXt-{self.variant} from {args.ckpt} on {self.device}: {self.split}, {stats['images']} images at "
              f"{args.image_size}x{args.image_size}, batch {args.batch_size}, amp {args.amp}, backend "
              f"{self.backend}")
        print(f"top-1 accuracy: {stats['top1'] * 100:.2f}% ({stats['correct']}/{stats['total']})")
        print(f"val acc as the notebook computes it (mean of per-batch accuracies): {stats['acc'] * 100:.2f}%")
        print(f"val loss as the notebook computes it (label-smoothed CE): {stats['loss']:.4f}")
        print("per-class accuracy:")
        width = max(10, *map(len, self.names))  # CIFAR-10's column as before
        for name, row in per_class.items():
            acc = f"{row['acc'] * 100:6.2f}%" if row["total"] else "    n/a"
            print(f"  {name:<{width}} {acc} ({row['correct']}/{row['total']})")
        print(loop.notebook_line())
        print(f"throughput, the notebook's way (its loop over the test loader: forward passes, data loading "
              f"included): {loop.images_per_s:.1f} images/s ({loop.images} images in {loop.seconds:.2f} s)")
        print(f"model-only throughput (batch of {self.images.shape[0]} on {self.device}, {args.warmup_batches} "
              f"warm-up + {args.timed_batches} timed): {forward:.1f} images/s")

    def exports(self) -> dict:
        """--export and --export-onnx: a static graph / an ONNX model for any batch size, loaded back and checked
        against the checkpoint on the first batch; their part of the report."""
        args, images, report = self.args, self.images.to(self.device), {}
        checked = int(images.shape[0])
        for key, flag, folder, write, check, name, written_as in (
                ("export", "--export", args.export, export_model, check_export, "prefix",
                 "{}.json/.pdiparams; reloaded with paddle.jit.load"),
                ("export_onnx", "--export-onnx", args.export_onnx, export_onnx, check_onnx_export, "path",
                 "{}; loaded with onnxruntime")):
            if folder is None:
                continue
            with about(flag):
                written = write(self.model, folder, args.image_size)
                max_diff = check(written, self.model, images)
            print(f"exported to {written_as.format(written)}, same predictions on {checked} images (largest logit "
                  f"difference {max_diff:.2e})")
            report[key] = {name: written, "checked_images": checked, "max_logit_diff": max_diff}
        return report

    def draw_confusion(self, confusion: np.ndarray) -> None:
        """--confusion: the confusion matrix, normalised per true class, as a PNG."""
        if self.args.confusion is not None:
            with about("--confusion"):
                figure = plot_confusion_matrix(confusion, self.names, title=f"UniNeXt-{self.variant}, {self.split}")
                print(f"wrote {save_figure(figure, self.args.confusion)}")


if __name__ == "__main__":
    run_cli(main)
