"""Train UniNeXt on CIFAR-10 (or your own images): the notebook's sections 2.2 and 2.4 as a command-line script.

    python train.py --variant T                          # the notebook's run (GPU if Paddle sees one)
    python train.py --variant T --image-size 32 --device cpu --epochs 2
    python train.py --variant T --resume                 # continue from work/model/last.pdckpt
    python -m paddle.distributed.launch --gpus 0,1 train.py --variant T   # data parallel

Defaults are the notebook's: batch 128, Adam(weight_decay=1e-5), CosineAnnealingDecay(1e-4,
T_max=steps_per_epoch * epochs) stepped every batch, LabelSmoothingCrossEntropy(0.1), 100 epochs, seed 42.
Writes the notebook's best_model.pdparams/best_optimizer.pdopt (on every val-accuracy improvement) and
final_model.pdparams/final_optimizer.pdopt, plus history.json (loss_record/acc_record), the resumable
last.pdckpt after every epoch and train.log (everything printed).
"""
from __future__ import annotations

import warnings

# Paddle warns on import when ccache (a C++ build cache for custom operators) is absent: noise for this script.
warnings.filterwarnings("ignore", message="No ccache found")

import argparse
import math
import os
import shlex
import signal
import sys

import numpy as np
import paddle

from uninext_paddle import LabelSmoothingCrossEntropy, create_model
from uninext_paddle.checkpoint import (BEST_MODEL, BEST_MODEL_EMA, BEST_OPTIMIZER, FINAL_MODEL, FINAL_OPTIMIZER,
                                       load_backbone, load_weights, save_class_names)
from uninext_paddle.config_file import apply_config, check_recipe
from uninext_paddle.cli import (ArgumentParser, about, add_data_flags, add_device_flag, add_progress_flag,
                                check_writable, fail, progress_wanted, run_cli)
from uninext_paddle.data import CIFAR10_CLASSES, build_loaders, ensure_cifar10, start_train_epoch
from uninext_paddle.device import (AMP_MODES, cpu_build_on_gpu_machine_note, init_distributed, is_main_process,
                                   make_grad_scaler, rank, select_device, world_size)
from uninext_paddle.engine import EpochMeter, StopRequests, evaluate, nonfinite_parameters, train_one_epoch
from uninext_paddle.ema import ModelEma
from uninext_paddle.errors import DivergedError, UninextError
from uninext_paddle.fileio import atomic_save
from uninext_paddle.image_data import CIFAR10, data_kind
from uninext_paddle.loss import SoftTargetCrossEntropy
from uninext_paddle.mixing import MixupCutmix
from uninext_paddle.model import VARIANTS
from uninext_paddle.optim import OPTIMIZERS, build_optimizer, build_scheduler
from uninext_paddle.records import HISTORY_FILE, Records
from uninext_paddle.runlog import tee_to_file
from uninext_paddle.runtime import tune_cpu_runtime
from uninext_paddle.train_state import (LAST_CHECKPOINT, TrainingState, capture_rng, portable_optimizer_state,
                                        restore_optimizer_state, restore_rng)

LOG_FILE = "train.log"
# On the CPU, a projected epoch longer than this gets a note with the practical alternative.
SLOW_EPOCH_SECONDS = 3600
# Resuming with another value of these is reported: the run will not repeat the original.
_REPORTED_CHANGES = ("epochs", "batch_size", "lr", "weight_decay", "seed", "image_size", "amp")


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
    add_data_flags(p, data_help="the CIFAR-10 python tarball (downloaded there if absent), an image folder "
                                "(DIR/train/<class>/*.jpg, DIR/val/...) or list files (DIR/train_list.txt, ...)")
    p.add_argument("--work-dir", default=os.path.join("work", "model"), help="where checkpoints go")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=42)
    add_device_flag(p)
    p.add_argument("--amp", default="off", choices=AMP_MODES, help="mixed precision (paddle.amp O1), GPU")
    p.add_argument("--log-interval", type=int, default=10,
                   help="record the train loss (loss_record) and refresh the progress bar every N batches")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help=f"continue from PATH (default: WORK_DIR/{LAST_CHECKPOINT})")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="fine-tune: start from these weights (the notebook's or ours); a head of another class "
                        "count is initialised afresh")
    p.add_argument("--freeze-backbone", action="store_true", help="with --init: train the head only")
    p.add_argument("--visualdl", default=None, metavar="DIR", help="also log scalars for VisualDL to DIR")
    add_progress_flag(p)
    recipe = p.add_argument_group("recipe options beyond the notebook (their defaults are its run)")
    recipe.add_argument("--config", default=None, metavar="FILE",
                        help="JSON/YAML recipe whose keys are these flags' names; flags given here win")
    recipe.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                        help="adam: the notebook's (L2 decay); adamw: decoupled decay, none on norms and biases")
    recipe.add_argument("--warmup-epochs", type=int, default=0, help="linear warmup from 0 into the cosine")
    recipe.add_argument("--min-lr", type=float, default=0.0, help="floor of the cosine (eta_min)")
    recipe.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                        help="clip the gradients to this global L2 norm")
    recipe.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="Mixup Beta(alpha, alpha); 0: off")
    recipe.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                        help="CutMix Beta(alpha, alpha); 0: off")
    recipe.add_argument("--mix-prob", type=float, default=1.0, help="share of batches mixed")
    recipe.add_argument("--mix-switch-prob", type=float, default=0.5,
                        help="CutMix rather than Mixup when both are on")
    recipe.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="also keep an EMA of the weights, e.g. 0.9998; best_model_ema.pdparams")
    recipe.add_argument("--ema-warmup", action="store_true", help="EMA decay min(DECAY, (1 + n) / (10 + n))")
    recipe.add_argument("--accum-steps", type=int, default=1, metavar="K",
                        help="split each batch into K micro-batches (the same update, a K-th of the memory)")
    recipe.add_argument("--paper-stage3-heads", action="store_true",
                        help="stage 3 with heads[2]/ws[2] as in the paper (the notebook uses stage 2's)")
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
    with about("recipe"):
        check_recipe(lr=args.lr, epochs=args.epochs, weight_decay=args.weight_decay, optimizer=args.optimizer,
                     warmup_epochs=args.warmup_epochs, min_lr=args.min_lr, clip_grad=args.clip_grad,
                     mixup=args.mixup, cutmix=args.cutmix, mix_prob=args.mix_prob,
                     mix_switch_prob=args.mix_switch_prob, ema=args.ema, accum_steps=args.accum_steps)
    if args.batch_size % args.accum_steps:
        fail(f"--accum-steps {args.accum_steps} does not divide --batch-size {args.batch_size}")
    if args.init is not None and args.resume is not None:
        fail("--init starts a run from given weights, --resume continues one: give one of them")
    if args.freeze_backbone and args.init is None:
        fail("--freeze-backbone needs --init (a backbone worth keeping)")


def load_resume_state(path: str, variant: str, processes: int) -> TrainingState:
    """The training state to resume, checked to fit this run (variant, number of processes)."""
    with about("--resume"):
        state = TrainingState.load(path)
    if state.variant() != variant:
        fail(f"{path} is a UniNeXt-{state.variant()} checkpoint but --variant is {variant}; "
             f"resume it with --variant {state.variant()}")
    trained_on = int(state.config.get("world_size", 1))
    if trained_on != processes:
        # each process's share of every epoch, and with it the schedule's length, depend on the count
        fail(f"{path} was written by a run of {trained_on} process(es); resume it with {trained_on}, not "
             f"{processes}")
    return state


def gather_rng(mixer: MixupCutmix | None) -> list[dict]:
    """Every process's random generators (the mixer's too), indexed by rank (a collective call: all processes
    make it)."""
    mine = {**capture_rng(), "mixing": None if mixer is None else mixer.get_state()}
    if world_size() == 1:
        return [mine]
    states: list[dict] = []
    paddle.distributed.all_gather_object(states, mine)
    return states


class CpuSpeedNote:
    """After a few batches on the CPU, one line with the projected time per epoch and the practical alternative,
    when the projection is long (the notebook's 224x224 run takes days per epoch on a CPU)."""

    AFTER_BATCHES = 3

    def __init__(self, batches_per_epoch: int, image_size: int) -> None:
        self.batches, self.image_size, self.steps = batches_per_epoch, image_size, 0

    def __call__(self, meter: EpochMeter, seconds: float) -> None:
        self.steps += 1  # batches this process has run (a resumed epoch starts part-way)
        if self.steps != self.AFTER_BATCHES:
            return
        projected = seconds / self.AFTER_BATCHES * self.batches
        if projected > SLOW_EPOCH_SECONDS:
            fewer = (self.image_size / 32) ** 2
            alternative = f"; --image-size 32 has {fewer:.0f}x fewer pixels per image" if fewer > 1 else ""
            print(f"note: on the CPU one epoch of {self.batches} batches will take about {projected / 3600:.1f} h "
                  f"at this speed{alternative}; going on", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    with about("--config"):
        args = apply_config(get_args_parser(), argv)
    check_args(args)
    config = vars(args).copy()

    # ------------------------------------------------------------------------------------------------------
    # setup: device (and on the CPU this process's settings), processes, output folder, log file
    with about("--device"):
        device = select_device(args.device)
    gpu_note = cpu_build_on_gpu_machine_note()
    cpu_settings = None
    if device == "cpu":
        cpu_settings = "; ".join(tune_cpu_runtime()) or "none (UNINEXT_CPU_TUNING=0)"
    with about("--amp"):
        amp_scaler = make_grad_scaler(args.amp, device)  # also rejects fp16/bf16 where they cannot run
    with about("--device"):
        init_distributed(device)
    config["world_size"] = world_size()
    if not is_main_process():
        run_explained(args, config, device, amp_scaler)
        return
    check_writable(args.work_dir, "--work-dir")
    with tee_to_file(os.path.join(args.work_dir, LOG_FILE)) as log:
        if gpu_note:
            print(f"note: {gpu_note}", file=sys.stderr)
        if cpu_settings is not None:
            print(f"CPU settings: {cpu_settings}")
        try:
            run_explained(args, config, device, amp_scaler)
        except UninextError as err:
            log.write(f"error: {err}\n")  # run_cli prints the same line on the console
            raise


def run_explained(args: argparse.Namespace, config: dict, device: str,
                  amp_scaler: paddle.amp.GradScaler | None) -> None:
    """``run``, with a diverged run's error saying what is left and what to try."""
    try:
        run(args, config, device, amp_scaler)
    except DivergedError as err:
        fail(f"{err}: stopping; the checkpoints in {args.work_dir} are from before it "
             "(try a lower --lr, or --amp off)")


def run(args: argparse.Namespace, config: dict, device: str, amp_scaler: paddle.amp.GradScaler | None) -> None:
    """The run itself, on every process: data, model, the loop, the final files."""
    path = lambda name: os.path.join(args.work_dir, name)  # noqa: E731
    main_process = is_main_process()
    if main_process:
        with about("--data"):
            if data_kind(args.data) == CIFAR10:
                ensure_cifar10(args.data)  # downloads on rank 0 only; the others wait below
    if world_size() > 1:
        paddle.distributed.barrier()
    resume_path = None if args.resume is None else args.resume or path(LAST_CHECKPOINT)
    state = None if resume_path is None else load_resume_state(resume_path, args.variant, world_size())
    paddle.seed(args.seed)
    np.random.seed(args.seed)

    # ------------------------------------------------------------------------------------------------------
    # data (section 2.2)
    with about("--data"):
        train_loader, val_loader, classes = build_loaders(args.data, args.image_size, args.batch_size,
                                                          args.num_workers, args.seed, rank(), world_size())
    config["classes"] = classes
    if state is not None and state.config.get("classes", classes) != classes:
        fail(f"{resume_path} was trained on other classes than --data {args.data} holds")
    if main_process:
        print(f"train_dataset: {len(train_loader.dataset)}")
        shared = f" on rank 0 of {world_size()}" if world_size() > 1 else ""
        print(f"val_dataset: {len(val_loader.dataset)}{shared}")

    # ------------------------------------------------------------------------------------------------------
    # model, loss, schedule, optimizer (section 2.4), from scratch or resumed
    model = create_model(args.variant, num_classes=len(classes), drop_path_rate=args.drop_path_rate,
                         paper_stage3_heads=args.paper_stage3_heads)
    if args.init is not None:
        with about("--init"):
            head_kept = load_backbone(model, args.init, args.variant)
        if main_process:
            print(f"initialised from {args.init}" + ("" if head_kept else
                  f" (its head has another class count: a new head for {len(classes)} classes)"))
    if args.freeze_backbone:
        for name, param in model.named_parameters():
            param.stop_gradient = not name.startswith("head.")
    if rank() > 0:  # every process its own drop-path masks; rank 0 keeps the single-process stream
        paddle.seed(args.seed + rank())
    criterion = LabelSmoothingCrossEntropy(args.smoothing)
    # the notebook's CosineAnnealingDecay(lr, T_max = 50000 // batch_size * n_epochs) and Adam unless asked
    scheduler = build_scheduler(args.lr, len(train_loader), args.epochs, args.warmup_epochs, args.min_lr)
    optimizer = build_optimizer(args.optimizer, model, scheduler, args.weight_decay, args.clip_grad)
    mixer = MixupCutmix(args.mixup, args.cutmix, args.mix_prob, args.mix_switch_prob, num_classes=len(classes),
                        seed=args.seed + rank())
    mixer = mixer if mixer.enabled else None
    if mixer is not None and main_process:
        print("note: under Mixup/CutMix the train accuracy counts each image's dominant label")
    records, best_acc, best_ema_acc, start_epoch, meter = Records(), 0.0, 0.0, 0, EpochMeter()
    if state is not None:
        with about("--resume"):
            load_weights(model, state.model, resume_path, args.variant)
        restore_optimizer_state(optimizer, model, state.optimizer)
        scheduler.set_state_dict(state.scheduler)
        if amp_scaler is not None and state.scaler:
            amp_scaler.load_state_dict(state.scaler)
        records, best_acc = Records(state.records), state.best_acc
        best_ema_acc = float(state.extras.get("best_ema_acc", 0.0))
        start_epoch, meter = state.epoch, EpochMeter(**state.meter)
        not_restored = restore_rng(state.rng[rank()])
        if mixer is not None and state.rng[rank()].get("mixing"):
            mixer.set_state(state.rng[rank()]["mixing"])
        changed = [f"--{k.replace('_', '-')} {state.config.get(k)} -> {config[k]}" for k in _REPORTED_CHANGES
                   if state.config.get(k, config[k]) != config[k]]
        if main_process:
            print(f"resumed from {resume_path}: epoch {start_epoch}, batch {meter.step}, best acc {best_acc:.4f}"
                  + (f" (changed: {', '.join(changed)}; the run will not repeat the original)" if changed else ""))
        if not_restored:
            print(f"note: process {rank()}: {not_restored}", file=sys.stderr)
    ema = ModelEma(model, args.ema, args.ema_warmup) if args.ema is not None else None
    if ema is not None and state is not None and state.extras.get("ema"):
        with about("--resume"):
            ema.set_state_dict(state.extras["ema"])
    del state  # its arrays are host copies of everything; the run does not need them again
    net = model  # the bare model, whose state_dict keys are the notebook's
    if world_size() > 1:
        model = paddle.DataParallel(model)

    def save_state(epoch: int, meter: EpochMeter) -> None:
        rng = gather_rng(mixer)  # collective: every process calls save_state
        if main_process:
            check_finite(net, f"epoch {epoch}, batch {meter.step}")
            extras = {} if ema is None else {"ema": ema.state_dict(), "best_ema_acc": best_ema_acc}
            TrainingState(model=net.state_dict(), optimizer=portable_optimizer_state(optimizer, net),
                          scheduler=scheduler.state_dict(), scaler=amp_scaler.state_dict() if amp_scaler else None,
                          epoch=epoch, meter=meter.state_dict(), best_acc=best_acc, records=records.state_dict(),
                          rng=rng, config=config, extras=extras).save(path(LAST_CHECKPOINT))

    def stop_now(epoch: int, meter: EpochMeter, signum: int | None) -> None:
        """Save where we are and exit like a process killed by ``signum`` would (128 + signum)."""
        signum = signum or signal.SIGTERM  # another process got the signal
        save_state(epoch, meter)
        if main_process:
            print(f"stopped by {signal.Signals(signum).name} at epoch {epoch}, batch {meter.step}; to resume, "
                  f"run the same command with --resume {shlex.quote(path(LAST_CHECKPOINT))}", file=sys.stderr)
        sys.exit(128 + signum)

    visualdl = None
    if args.visualdl and main_process:
        from visualdl import LogWriter  # imported only when asked for: it pulls in a web stack
        visualdl = LogWriter(logdir=args.visualdl)
    progress = main_process and progress_wanted(args.progress)
    speed_note = CpuSpeedNote(len(train_loader), args.image_size) if device == "cpu" and main_process else None

    def after_step(meter: EpochMeter, seconds: float) -> None:
        if ema is not None:
            ema.update(net)
        if speed_note is not None:
            speed_note(meter, seconds)

    # ------------------------------------------------------------------------------------------------------
    # the loop: train, validate, save, as in the notebook; plus history.json and last.pdckpt every epoch
    with StopRequests() as stop:  # Ctrl-C/SIGTERM: stop after the current batch, resumable
        for epoch in range(start_epoch, args.epochs):
            start_train_epoch(train_loader, epoch, skip=meter.step)
            if main_process:
                print("#===epoch: {}, lr={:.10f}===#".format(epoch, optimizer.get_lr()))
            first_record = records.loss_iter
            train = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, records, meter, epoch,
                                    amp=args.amp, device=device, scaler=amp_scaler, log_interval=args.log_interval,
                                    progress=progress, stop=stop, after_step=after_step, mixer=mixer,
                                    soft_criterion=SoftTargetCrossEntropy(args.smoothing),
                                    accum_steps=args.accum_steps)
            if train is None:
                stop_now(epoch, meter, stop.signum)
            check_finite(net, f"epoch {epoch}, batch {meter.step - 1}")
            records.add_train_acc(train["acc"])
            if main_process:
                print("#===epoch: {}, train loss is: {}, train acc is: {:2.2f}%===#".format(
                    epoch, train["loss"], train["acc"] * 100))

            val = evaluate(model, val_loader, criterion, amp=args.amp, device=device, progress=progress,
                           batch_size=args.batch_size, num_classes=len(classes))
            if not math.isfinite(val["loss"]):
                raise DivergedError(f"the validation loss is {val['loss']} after epoch {epoch}")
            records.add_val(val["loss"], val["acc"])
            if main_process:
                print("#===epoch: {}, val loss is: {}, val acc is: {:2.2f}%===#".format(
                    epoch, val["loss"], val["acc"] * 100))

            ema_val = None
            if ema is not None:
                ema_val = evaluate(ema.module, val_loader, criterion, amp=args.amp, device=device,
                                   progress=progress, batch_size=args.batch_size, num_classes=len(classes))
                if main_process:
                    print("#===epoch: {}, ema val loss is: {}, ema val acc is: {:2.2f}%===#".format(
                        epoch, ema_val["loss"], ema_val["acc"] * 100))
            improved = val["acc"] > best_acc
            if improved:
                best_acc = val["acc"]
            ema_improved = ema_val is not None and math.isfinite(ema_val["loss"]) and ema_val["acc"] > best_ema_acc
            if ema_improved:
                best_ema_acc = ema_val["acc"]
            records.add_epoch({"epoch": epoch, "lr": optimizer.get_lr(), "train_loss": train["loss"],
                               "train_acc": train["acc"], "val_loss": val["loss"], "val_acc": val["acc"],
                               "val_top1": val["top1"], "best_acc": best_acc, "train_images": train["images"],
                               "val_images": val["images"], "train_seconds": train["seconds"],
                               "val_seconds": val["seconds"], "skipped_steps": train["skipped"],
                               **({} if ema_val is None else {"ema_val_loss": ema_val["loss"],
                                                              "ema_val_acc": ema_val["acc"],
                                                              "best_ema_acc": best_ema_acc})})
            meter = EpochMeter()
            if main_process:
                if improved:
                    save_weights(net, path(BEST_MODEL), classes)
                    atomic_save(optimizer.state_dict(), path(BEST_OPTIMIZER))
                if ema_improved:
                    save_weights(ema.module, path(BEST_MODEL_EMA), classes)
                records.save(path(HISTORY_FILE), config=config)
            save_state(epoch + 1, meter)
            if visualdl is not None:
                log_scalars(visualdl, records, first_record, epoch, train, val, optimizer.get_lr())
            if stop.requested():
                stop_now(epoch + 1, meter, stop.signum)

    # ------------------------------------------------------------------------------------------------------
    # the end, as in the notebook
    if main_process:
        print(best_acc)
        save_weights(net, path(FINAL_MODEL), classes)
        atomic_save(optimizer.state_dict(), path(FINAL_OPTIMIZER))
    if visualdl is not None:
        visualdl.close()


def save_weights(model: paddle.nn.Layer, weights_path: str, classes: list[str]) -> None:
    """The notebook's plain state_dict at ``weights_path``; the class names beside it unless they are CIFAR-10's
    (which weights without names are taken to be)."""
    if classes != list(CIFAR10_CLASSES):
        save_class_names(weights_path, classes)
    atomic_save(model.state_dict(), weights_path)


def check_finite(model: paddle.nn.Layer, where: str) -> None:
    """``DivergedError`` when an update left NaN or infinite weights: no file is ever written from them."""
    bad = nonfinite_parameters(model)
    if bad:
        raise DivergedError(f"the weights are not finite after the update at {where} ({len(bad)} parameters, "
                            f"e.g. {bad[0]})")


def log_scalars(visualdl: object, records: Records, first_record: int, epoch: int, train: dict, val: dict,
                lr: float) -> None:
    """The epoch's scalars for VisualDL: the train losses recorded in it, and the epoch's summary figures."""
    for i, value in zip(records.loss_record["train"]["iter"][first_record:],
                        records.loss_record["train"]["loss"][first_record:]):
        visualdl.add_scalar("train/loss", value, i)
    for tag, value in (("train/acc", train["acc"]), ("train/epoch_loss", train["loss"]), ("val/loss", val["loss"]),
                       ("val/acc", val["acc"]), ("val/top1", val["top1"]), ("lr", lr)):
        visualdl.add_scalar(tag, value, epoch)
    visualdl.flush()


if __name__ == "__main__":
    run_cli(main)
