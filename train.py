"""Train UniNeXt on CIFAR-10: the notebook's sections 2.2 and 2.4 as a command-line script.

    python train.py --variant T                          # the notebook's run (GPU if Paddle sees one)
    python train.py --variant T --image-size 32 --device cpu --epochs 2
    python train.py --variant T --resume                 # continue from work/model/last.pdckpt
    python -m paddle.distributed.launch --gpus 0,1 train.py --variant T   # data parallel

Defaults are the notebook's: batch 128, Adam(weight_decay=1e-5), CosineAnnealingDecay(1e-4,
T_max=steps_per_epoch * epochs) stepped every batch, LabelSmoothingCrossEntropy(0.1), 100 epochs, seed 42.
Writes the notebook's best_model.pdparams/best_optimizer.pdopt (on every val-accuracy improvement) and
final_model.pdparams/final_optimizer.pdopt, plus history.json (loss_record/acc_record) and the resumable
last.pdckpt after every epoch.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

import numpy as np

from uninext_paddle import LabelSmoothingCrossEntropy, create_model  # before paddle: silences its ccache warning
import paddle  # noqa: E402,I001
from uninext_paddle.checkpoint import (LAST_CHECKPOINT, atomic_save, load_training_checkpoint, load_weights,
                                       restore_rng_states, rng_states)
from uninext_paddle.cli import ArgumentParser, check_writable, fail, run_cli
from uninext_paddle.data import DEFAULT_DATA, build_loaders, ensure_cifar10, start_train_epoch
from uninext_paddle.device import (AMP_MODES, DEVICES, init_distributed, is_main_process,
                                   make_grad_scaler, rank, select_device, world_size)
from uninext_paddle.engine import EpochMeter, NonFiniteLossError, StopRequests, evaluate, train_one_epoch
from uninext_paddle.model import VARIANTS
from uninext_paddle.records import HISTORY_FILE, Records


def get_args_parser() -> argparse.ArgumentParser:
    """The flags; every default is the notebook's value."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variant", default="T", choices=list(VARIANTS), help="UniNeXt_T, _S or _B")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128, help="per process")
    p.add_argument("--lr", type=float, default=1e-4, help="peak of the cosine schedule")
    p.add_argument("--weight-decay", type=float, default=1e-5, help="Adam's (L2) weight decay")
    p.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    p.add_argument("--drop-path-rate", type=float, default=0.0, help="stochastic depth of the last block")
    p.add_argument("--data", default=DEFAULT_DATA, help="CIFAR-10 python tarball; downloaded there if absent")
    p.add_argument("--work-dir", default=os.path.join("work", "model"), help="where checkpoints go")
    p.add_argument("--image-size", type=int, default=224, help="side the images are resized to")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--amp", default="off", choices=AMP_MODES, help="mixed precision (paddle.amp O1), GPU")
    p.add_argument("--log-interval", type=int, default=10,
                   help="record the train loss (loss_record) and refresh the progress bar every N batches")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help=f"continue from PATH (default: WORK_DIR/{LAST_CHECKPOINT})")
    p.add_argument("--visualdl", default=None, metavar="DIR", help="also log scalars for VisualDL to DIR")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear line for values argparse's types let through."""
    for name in ("epochs", "batch_size", "lr", "image_size", "log_interval"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.weight_decay < 0 or args.num_workers < 0:
        fail("--weight-decay and --num-workers must not be negative")
    if not 0 <= args.smoothing < 1 or not 0 <= args.drop_path_rate < 1:
        fail("--smoothing and --drop-path-rate must be in [0, 1)")


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    check_args(args)
    config = vars(args).copy()

    # ------------------------------------------------------------------------------------------------------
    # setup: device, processes, seeds, output folder
    path = lambda name: os.path.join(args.work_dir, name)  # noqa: E731
    device = select_device(args.device)
    amp_scaler = make_grad_scaler(args.amp, device)  # also rejects --amp fp16/bf16 where it cannot run
    init_distributed()
    main_process = is_main_process()
    if main_process:
        check_writable(args.work_dir, "--work-dir")
        ensure_cifar10(args.data)  # downloads on rank 0 only; the others wait below
    if world_size() > 1:
        paddle.distributed.barrier()
    resume_path = None if args.resume is None else args.resume or path(LAST_CHECKPOINT)
    ckpt = None if resume_path is None else load_training_checkpoint(resume_path, args.variant)  # fail early
    paddle.seed(args.seed)
    np.random.seed(args.seed)

    # ------------------------------------------------------------------------------------------------------
    # data (section 2.2)
    train_loader, val_loader = build_loaders(args.data, args.image_size, args.batch_size, args.num_workers,
                                             args.seed, rank(), world_size())
    if main_process:
        print(f"train_dataset: {len(train_loader.dataset)}")
        shared = f" on rank 0 of {world_size()}" if world_size() > 1 else ""
        print(f"val_dataset: {len(val_loader.dataset)}{shared}")

    # ------------------------------------------------------------------------------------------------------
    # model, loss, schedule, optimizer (section 2.4), from scratch or resumed
    model = create_model(args.variant, num_classes=10, drop_path_rate=args.drop_path_rate)
    criterion = LabelSmoothingCrossEntropy(args.smoothing)
    # the notebook's T_max = 50000 // batch_size * n_epochs: every scheduler step of the run
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=args.lr,
                                                         T_max=len(train_loader) * args.epochs, verbose=False)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler,
                                      weight_decay=args.weight_decay)
    records, best_acc, start_epoch, meter = Records(), 0.0, 0, EpochMeter()
    if ckpt is not None:
        load_weights(model, ckpt["model"], resume_path, args.variant)
        optimizer.set_state_dict(ckpt["optimizer"])
        scheduler.set_state_dict(ckpt["scheduler"])
        if amp_scaler is not None and ckpt.get("scaler"):
            amp_scaler.load_state_dict(ckpt["scaler"])
        records, best_acc = Records(ckpt["records"]), float(ckpt["best_acc"])
        start_epoch, meter = int(ckpt["epoch"]), EpochMeter(**ckpt["meter"])
        restore_rng_states(ckpt["rng"])
        changed = [f"--{k.replace('_', '-')} {ckpt['config'].get(k)} -> {v}" for k, v in config.items()
                   if k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "image_size")
                   and ckpt["config"].get(k) != v]
        if main_process:
            print(f"resumed from {resume_path}: epoch {start_epoch}, batch {meter.step}, best acc {best_acc:.4f}"
                  + (f" (changed: {', '.join(changed)}; the run will not repeat the original)" if changed else ""))
    net = model  # the bare model, whose state_dict keys are the notebook's
    if world_size() > 1:
        model = paddle.DataParallel(model)

    def training_checkpoint(epoch: int, meter: EpochMeter) -> dict:
        return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": amp_scaler.state_dict() if amp_scaler else None,
                "epoch": epoch, "step": meter.step, "meter": meter.state_dict(), "best_acc": best_acc,
                "records": records.state_dict(), "rng": rng_states(), "config": config}

    def stop_now(epoch: int, meter: EpochMeter, signum: int | None) -> None:
        """Save where we are and exit like a process killed by ``signum`` would (128 + signum)."""
        signum = signum or signal.SIGTERM  # another process got the signal
        if main_process:
            atomic_save(training_checkpoint(epoch, meter), path(LAST_CHECKPOINT))
            print(f"stopped by {signal.Signals(signum).name} at epoch {epoch}, batch {meter.step}; to resume, "
                  f"run the same command with --resume {shlex.quote(path(LAST_CHECKPOINT))}", file=sys.stderr)
        sys.exit(128 + signum)

    visualdl = None
    if args.visualdl and main_process:
        from visualdl import LogWriter  # imported only when asked for: it pulls in a web stack
        visualdl = LogWriter(logdir=args.visualdl)

    # ------------------------------------------------------------------------------------------------------
    # the loop: train, validate, save, as in the notebook; plus history.json and last.pdckpt every epoch
    with StopRequests() as stop:  # Ctrl-C/SIGTERM: stop after the current batch, resumable
        for epoch in range(start_epoch, args.epochs):
            start_train_epoch(train_loader, epoch, skip=meter.step)
            if main_process:
                print("#===epoch: {}, lr={:.10f}===#".format(epoch, optimizer.get_lr()))
            first_record = records.loss_iter
            try:
                train = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, records, meter,
                                        epoch, amp=args.amp, device=device, scaler=amp_scaler,
                                        log_interval=args.log_interval, progress=main_process,
                                        should_stop=stop.requested)
            except NonFiniteLossError as err:
                fail(f"{err}: stopping; the checkpoints in {args.work_dir} are from before it "
                     "(try a lower --lr, or --amp off)")
            if train is None:
                stop_now(epoch, meter, stop.signum)
            records.add_train_acc(train["acc"])
            if main_process:
                print("#===epoch: {}, train loss is: {}, train acc is: {:2.2f}%===#".format(
                    epoch, train["loss"], train["acc"] * 100))

            val = evaluate(model, val_loader, criterion, amp=args.amp, device=device, progress=main_process,
                           batch_size=args.batch_size)
            records.add_val(val["loss"], val["acc"])
            if main_process:
                print("#===epoch: {}, val loss is: {}, val acc is: {:2.2f}%===#".format(
                    epoch, val["loss"], val["acc"] * 100))

            improved = val["acc"] > best_acc
            if improved:
                best_acc = val["acc"]
            records.add_epoch({"epoch": epoch, "lr": optimizer.get_lr(), "train_loss": train["loss"],
                               "train_acc": train["acc"], "val_loss": val["loss"], "val_acc": val["acc"],
                               "val_top1": val["top1"], "best_acc": best_acc, "train_images": train["images"],
                               "val_images": val["images"], "train_seconds": train["seconds"],
                               "val_seconds": val["seconds"]})
            meter = EpochMeter()
            if main_process:
                if improved:
                    atomic_save(net.state_dict(), path("best_model.pdparams"))
                    atomic_save(optimizer.state_dict(), path("best_optimizer.pdopt"))
                records.save(path(HISTORY_FILE))
                atomic_save(training_checkpoint(epoch + 1, meter), path(LAST_CHECKPOINT))
            if visualdl is not None:
                for i, value in zip(records.loss_record["train"]["iter"][first_record:],
                                    records.loss_record["train"]["loss"][first_record:]):
                    visualdl.add_scalar("train/loss", value, i)
                for tag, value in (("train/acc", train["acc"]), ("train/epoch_loss", train["loss"]),
                                   ("val/loss", val["loss"]), ("val/acc", val["acc"]), ("val/top1", val["top1"]),
                                   ("lr", optimizer.get_lr())):
                    visualdl.add_scalar(tag, value, epoch)
                visualdl.flush()
            if stop.requested():
                stop_now(epoch + 1, meter, stop.signum)

    # ------------------------------------------------------------------------------------------------------
    # the end, as in the notebook
    if main_process:
        print(best_acc)
        atomic_save(net.state_dict(), path("final_model.pdparams"))
        atomic_save(optimizer.state_dict(), path("final_optimizer.pdopt"))
    if visualdl is not None:
        visualdl.close()


if __name__ == "__main__":
    run_cli(main)
