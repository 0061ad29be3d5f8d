"""Evaluate a UniNeXt checkpoint on the CIFAR-10 test split: the notebook's section 2.5 numbers.

    python evaluate.py --ckpt work/model/best_model.pdparams
    python evaluate.py --ckpt work/model/best_model.pdparams --image-size 32 --device cpu --json work/eval.json
    python evaluate.py --ckpt work/model/best_model.pdparams --export work/inference   # + Paddle inference model

Reports top-1 accuracy, the notebook's label-smoothed val loss and val accuracy, per-class accuracy, the
throughput measured the notebook's way (images over the wall time of the whole test loop, data loading
included; the notebook printed 403 on its GPU) and the model-only throughput (warm-up, then timed forward
passes on a batch already on the device). On the CPU the forward passes run through Paddle Inference with oneDNN
when it matches the eager model (``--backend``; uninext_paddle/inference.py): 2-3x faster, same logits up to float
rounding.
"""
from __future__ import annotations

import argparse
import os
import sys

from uninext_paddle import LabelSmoothingCrossEntropy
from uninext_paddle.checkpoint import atomic_write_json
from uninext_paddle.cli import ArgumentParser, check_writable, fail, run_cli
from uninext_paddle.data import CIFAR10_CLASSES, DEFAULT_DATA, build_test_transforms, load_cifar10
from uninext_paddle.device import AMP_MODES, DEVICES, amp_context, select_device
from uninext_paddle.engine import evaluate
from uninext_paddle.inference import (BACKENDS, check_export, export_model, load_model, model_throughput,
                                     select_backend)
from uninext_paddle.model import VARIANTS

import paddle  # noqa: E402  (after uninext_paddle, which silences Paddle's import-time ccache warning)


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", default=os.path.join("work", "model", "best_model.pdparams"),
                   help="model weights: a train.py checkpoint or the notebook's state_dict")
    p.add_argument("--variant", default=None, choices=list(VARIANTS), help="UniNeXt variant; None: inferred from the weights' shapes")
    p.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 python tarball")
    p.add_argument("--image-size", type=int, default=224, help="side the test images are resized to")
    p.add_argument("--batch-size", type=int, default=128, help="test images per forward pass")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: the GPU when Paddle sees one")
    p.add_argument("--amp", default="off", choices=AMP_MODES, help="mixed precision (paddle.amp O1), GPU")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="what runs the forward passes: eager (the dynamic model), onednn (Paddle Inference with "
                        "oneDNN, CPU), auto: onednn on the CPU when it matches the eager model, else eager")
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed forward passes before the model-only timing")
    p.add_argument("--timed-batches", type=int, default=10, help="forward passes timed for the model-only throughput")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every figure to PATH as JSON")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also save a Paddle inference model (paddle.jit.save) to DIR and check it reloads")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear line for values argparse's types let through."""
    for name in ("image_size", "batch_size", "timed_batches"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("num_workers", "warmup_batches"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if args.image_size < 16:
        fail(f"--image-size {args.image_size} is too small: UniNeXt downsamples 16x before its last stage")


def write_json(path: str, report: dict) -> None:
    """``report`` as JSON at ``path``, atomically; an unwritable place fails with one line."""
    try:
        atomic_write_json(report, path)
    except OSError as err:
        fail(f"cannot write --json {path}: {err.strerror or err}")


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    check_args(args)
    if args.json is not None:
        check_writable(os.path.dirname(os.path.abspath(args.json)), "--json")
    if args.export is not None:
        check_writable(args.export, "--export")

    # ------------------------------------------------------------------------------------------------------
    # setup: device, model, data
    device = select_device(args.device)
    amp_context(args.amp, device)  # rejects --amp fp16/bf16 where it cannot run, before any work
    model, variant = load_model(args.ckpt, args.variant)
    num_classes = int(model.num_classes)
    runner, backend = select_backend(model, args.backend, device, args.image_size)
    dataset = load_cifar10(args.data, "test", build_test_transforms(args.image_size))
    loader = paddle.io.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=False,
                                  num_workers=args.num_workers)

    # ------------------------------------------------------------------------------------------------------
    # the notebook's validation pass, timed as the notebook timed it: the whole loop, data loading included
    stats = evaluate(runner, loader, LabelSmoothingCrossEntropy(), amp=args.amp, device=device,
                     num_classes=num_classes, progress=sys.stderr.isatty())
    loop_throughput = stats["images"] / stats["seconds"]

    # model-only: the forward pass on one device-resident batch, repeated
    images = next(iter(loader))[0]
    forward_throughput = model_throughput(runner, images, device, args.amp, args.warmup_batches, args.timed_batches)

    names = CIFAR10_CLASSES if num_classes == len(CIFAR10_CLASSES) else [str(c) for c in range(num_classes)]
    per_class = {name: {"correct": c, "total": t, "acc": c / t if t else None}
                 for name, c, t in zip(names, stats["per_class_correct"], stats["per_class_total"])}
    print(f"UniNeXt-{variant} from {args.ckpt} on {device}: CIFAR-10 test, {stats['images']} images at "
          f"{args.image_size}x{args.image_size}, batch {args.batch_size}, amp {args.amp}, backend {backend}")
    print(f"top-1 accuracy: {stats['top1'] * 100:.2f}% ({stats['correct']}/{stats['total']})")
    print(f"val acc as the notebook computes it (mean of per-batch accuracies): {stats['acc'] * 100:.2f}%")
    print(f"val loss as the notebook computes it (label-smoothed CE): {stats['loss']:.4f}")
    print("per-class accuracy:")
    for name, row in per_class.items():
        acc = f"{row['acc'] * 100:6.2f}%" if row["total"] else "    n/a"
        print(f"  {name:<10} {acc} ({row['correct']}/{row['total']})")
    print(f"throughput, the notebook's way (test loop incl. data loading): {loop_throughput:.1f} images/s "
          f"({stats['images']} images in {stats['seconds']:.2f} s)")
    print(f"model-only throughput (batch of {images.shape[0]} on {device}, {args.warmup_batches} warm-up + "
          f"{args.timed_batches} timed): {forward_throughput:.1f} images/s")

    report = {
        "checkpoint": args.ckpt, "variant": variant, "num_classes": num_classes, "device": device,
        "amp": args.amp, "backend": backend, "image_size": args.image_size, "batch_size": args.batch_size,
        "images": stats["images"], "correct": stats["correct"], "top1": stats["top1"],
        "notebook_val_acc": stats["acc"], "notebook_val_loss": stats["loss"], "per_class": per_class,
        "throughput": {"loop_images_per_s": loop_throughput, "loop_seconds": stats["seconds"],
                       "model_images_per_s": forward_throughput, "model_batch": int(images.shape[0]),
                       "warmup_batches": args.warmup_batches, "timed_batches": args.timed_batches},
    }

    # ------------------------------------------------------------------------------------------------------
    # export: a static graph for any batch size, reloaded and checked against the dynamic model
    if args.export is not None:
        prefix = export_model(model, args.export, args.image_size)
        max_diff = check_export(prefix, model, images.to(device))
        print(f"exported to {prefix}.json/.pdiparams; reloaded with paddle.jit.load, same predictions on "
              f"{images.shape[0]} images (largest logit difference {max_diff:.2e})")
        report["export"] = {"prefix": prefix, "checked_images": int(images.shape[0]), "max_logit_diff": max_diff}

    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_cli(main)
