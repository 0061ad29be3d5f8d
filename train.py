"""Train UniNeXt on CIFAR-10 (or your own images): the notebook's sections 2.2 and 2.4 as a command-line script.

    python train.py --variant T                          # the notebook's run (GPU if Paddle sees one)
    python train.py --variant T --image-size 32 --device cpu --epochs 2
    python train.py --variant T --resume                 # continue from work/model/last.pdckpt
    python -m paddle.distributed.launch --gpus 0,1 train.py --variant T   # data parallel

Defaults are the notebook's: batch 128, Adam(weight_decay=1e-5), CosineAnnealingDecay(1e-4,
T_max=steps_per_epoch * epochs) stepped every batch, LabelSmoothingCrossEntropy(0.1), 100 epochs, seed 42.
Writes the notebook's best_model.pdparams/best_optimizer.pdopt (on every val-accuracy improvement) and
final_model.pdparams/final_optimizer.pdopt (``--save-format safetensors``: the weights as .safetensors), plus
history.json (loss_record/acc_record), the resumable last.pdckpt after every epoch and train.log (everything
printed).
"""
from __future__ import annotations

import os
import warnings

# Importing Paddle sets OMP_NUM_THREADS=1 when it is unset: the user's own value is read before that.
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
# Paddle warns on import when ccache (a C++ build cache for custom operators) is absent: noise for this script.
warnings.filterwarnings("ignore", message="No ccache found")

import argparse
import math
import shlex
import signal
import sys
from typing import Any

import numpy as np
import paddle

from uninext_paddle import LabelSmoothingCrossEntropy, create_model
from uninext_paddle.checkpoint import (BEST_MODEL, BEST_MODEL_EMA, BEST_OPTIMIZER, FINAL_MODEL, FINAL_OPTIMIZER,
                                       WEIGHTS_FORMATS, load_backbone, save_weights, weights_file)
from uninext_paddle.cli import (ArgumentParser, about, add_amp_flag, add_data_flags, add_device_flag,
                                add_loader_flags, add_progress_flag, check_ranges, check_writable, fail,
                                progress_wanted, run_cli, select_device_and_tune)
from uninext_paddle.config_file import apply_config
from uninext_paddle.data import build_loaders, ensure_cifar10, start_train_epoch
from uninext_paddle.device import init_distributed, is_main_process, make_grad_scaler, rank, world_size
from uninext_paddle.ema import ModelEma, check_ema
from uninext_paddle.engine import EpochMeter, StopRequests, TrainStep, evaluate, nonfinite_parameters, train_one_epoch
from uninext_paddle.errors import DataError, DivergedError, UninextError
from uninext_paddle.fileio import atomic_save
from uninext_paddle.image_data import CIFAR10, data_kind
from uninext_paddle.loader import BatchLoader
from uninext_paddle.mixing import MixupCutmix, check_mixing
from uninext_paddle.model import VARIANTS
from uninext_paddle.optim import OPTIMIZERS, build_optimizer, build_scheduler, check_optimizer, check_schedule
from uninext_paddle.records import HISTORY_FILE, Records
from uninext_paddle.runlog import tee_to_file
from uninext_paddle.train_state import LAST_CHECKPOINT, RunState, TrainingState, restore, snapshot

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
    p.add_argument("--lr", type=float, default=1e-4, help="peak of the cosine schedule")
    p.add_argument("--weight-decay", type=float, default=1e-5, help="Adam's (L2) weight decay")
    p.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    p.add_argument("--drop-path-rate", type=float, default=0.0, help="stochastic depth of the last block")
    add_data_flags(p, data_help="the CIFAR-10 python tarball (downloaded there if absent), an image folder "
                                "(DIR/train/<class>/*.jpg, DIR/val/...) or list files (DIR/train_list.txt, ...)")
    p.add_argument("--work-dir", default=os.path.join("work", "model"), help="where checkpoints go")
    add_loader_flags(p, batch_help="per process")
    p.add_argument("--seed", type=int, default=42)
    add_device_flag(p)
    add_amp_flag(p)
    p.add_argument("--log-interval", type=int, default=10,
                   help="record the train loss (loss_record) and refresh the progress bar every N batches")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help=f"continue from PATH (default: WORK_DIR/{LAST_CHECKPOINT})")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="fine-tune: start from these weights (the notebook's or ours); a head of another class "
                        "count is initialised afresh")
    p.add_argument("--freeze-backbone", action="store_true", help="with --init: train the head only")
    p.add_argument("--visualdl", default=None, metavar="DIR", help="also log scalars for VisualDL to DIR")
    p.add_argument("--save-format", default="pdparams", choices=list(WEIGHTS_FORMATS),
                   help="the best and final weights as the notebook's .pdparams or as .safetensors")
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
    """One clear line for values argparse's types let through, before any work."""
    check_ranges(args, positive=("epochs", "batch_size", "lr", "image_size", "log_interval", "accum_steps"),
                 non_negative=("num_workers",))
    if not 0 <= args.smoothing < 1 or not 0 <= args.drop_path_rate < 1:
        fail("--smoothing and --drop-path-rate must be in [0, 1)")
    with about("recipe"):
        check_schedule(args.lr, args.epochs, args.warmup_epochs, args.min_lr)
        check_optimizer(args.optimizer, args.weight_decay, args.clip_grad)
        check_mixing(args.mixup, args.cutmix, args.mix_prob, args.mix_switch_prob)
        if args.ema is not None:
            check_ema(args.ema)
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


class CpuSpeedNote:
    """After a few batches on the CPU, one line with the projected time per epoch and the practical alternative,
    when the projection is long (the notebook's 224x224 run takes days per epoch on a CPU)."""

    AFTER_BATCHES = 3

    def __init__(self, batches_per_epoch: int, image_size: int) -> None:
        self.batches, self.image_size, self.steps = batches_per_epoch, image_size, 0

    def __call__(self, seconds: float) -> None:
        self.steps += 1  # batches this process has run (a resumed epoch starts part-way)
        if self.steps != self.AFTER_BATCHES:
            return
        projected = seconds / self.AFTER_BATCHES * self.batches
        if projected > SLOW_EPOCH_SECONDS:
            fewer = (self.image_size / 32) ** 2
            alternative = f"; --image-size 32 has {fewer:.0f}x fewer pixels per image" if fewer > 1 else ""
            print(f"note: on the CPU one epoch of {self.batches} batches will take about {projected / 3600:.1f} h "
                  f"at this speed{alternative}; going on", file=sys.stderr, flush=True)


class StepHooks:
    """What runs after every optimizer step: the EMA update and, on the CPU, the speed note."""

    def __init__(self, run: RunState, speed_note: CpuSpeedNote | None) -> None:
        self.run, self.speed_note = run, speed_note

    def __call__(self, meter: EpochMeter, seconds: float) -> None:
        if self.run.ema is not None:
            self.run.ema.update(self.run.model_without_ddp)
        if self.speed_note is not None:
            self.speed_note(seconds)


def main(argv: list[str] | None = None) -> None:
    with about("--config"):
        args = apply_config(get_args_parser(), argv)
    check_args(args)
    config = vars(args).copy()

    # ------------------------------------------------------------------------------------------------------
    # setup: device (and on the CPU this process's settings), processes, output folders, log file
    start = select_device_and_tune(args.device, USER_OMP_NUM_THREADS)
    with about("--amp"):
        amp_scaler = make_grad_scaler(args.amp, start.device)  # also rejects fp16/bf16 where they cannot run
    with about("--device"):
        init_distributed(start.device)
    config["world_size"] = world_size()
    if not is_main_process():
        run_explained(args, config, start.device, amp_scaler)
        return
    check_writable(args.work_dir, "--work-dir")
    if args.visualdl:
        check_writable(args.visualdl, "--visualdl")
    with tee_to_file(os.path.join(args.work_dir, LOG_FILE)) as log:
        start.report()
        try:
            run_explained(args, config, start.device, amp_scaler)
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
    if is_main_process():
        with about("--data"):
            if data_kind(args.data) == CIFAR10:
                ensure_cifar10(args.data)  # downloads on rank 0 only; the others wait below
    if world_size() > 1:
        paddle.distributed.barrier()
    resume_path = None if args.resume is None else args.resume or os.path.join(args.work_dir, LAST_CHECKPOINT)
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
    if is_main_process():
        print(f"train_dataset: {len(train_loader.dataset)}")
        shared = f" on rank 0 of {world_size()}" if world_size() > 1 else ""
        print(f"val_dataset: {len(val_loader.dataset)}{shared}")

    # ------------------------------------------------------------------------------------------------------
    # model, loss, schedule, optimizer (section 2.4), from scratch or resumed
    run_state = build_run(args, config, classes, len(train_loader), device, amp_scaler)
    start_epoch, meter = (0, EpochMeter()) if state is None else resume_run(run_state, state, resume_path, config)
    del state  # its arrays are host copies of everything; the run does not need them again
    if world_size() > 1:
        run_state.model = paddle.DataParallel(run_state.model_without_ddp)

    # ------------------------------------------------------------------------------------------------------
    # the loop: train, validate, save, as in the notebook; plus history.json and last.pdckpt every epoch
    train_loop(run_state, args, train_loader, val_loader, start_epoch, meter)

    # ------------------------------------------------------------------------------------------------------
    # the end, as in the notebook
    if is_main_process():
        print(run_state.best_acc)
        save_weights(run_state.model_without_ddp.state_dict(), weights_path(args, FINAL_MODEL), classes)
        atomic_save(run_state.step.optimizer.state_dict(), os.path.join(args.work_dir, FINAL_OPTIMIZER))


def weights_path(args: argparse.Namespace, name: str) -> str:
    """Where the weights file ``name`` (``BEST_MODEL``, ...) goes, in the ``--save-format``."""
    return os.path.join(args.work_dir, weights_file(name, args.save_format))


def build_run(args: argparse.Namespace, config: dict, classes: list[str], steps_per_epoch: int, device: str,
              amp_scaler: paddle.amp.GradScaler | None) -> RunState:
    """The model (from ``--init`` if given), the notebook's loss, schedule and optimizer (or the recipe's), the
    mixer and the EMA, for a run from scratch."""
    model = create_model(args.variant, num_classes=len(classes), drop_path_rate=args.drop_path_rate,
                         paper_stage3_heads=args.paper_stage3_heads)
    if args.init is not None:
        with about("--init"):
            head_kept = load_backbone(model, args.init, args.variant)
        if is_main_process():
            print(f"initialised from {args.init}" + ("" if head_kept else
                  f" (its head has another class count: a new head for {len(classes)} classes)"))
    if args.freeze_backbone:
        for name, param in model.named_parameters():
            param.stop_gradient = not name.startswith("head.")
    if rank() > 0:  # every process its own drop-path masks; rank 0 keeps the single-process stream
        paddle.seed(args.seed + rank())
    # the notebook's CosineAnnealingDecay(lr, T_max = 50000 // batch_size * n_epochs) and Adam unless asked
    scheduler = build_scheduler(args.lr, steps_per_epoch, args.epochs, args.warmup_epochs, args.min_lr)
    optimizer = build_optimizer(args.optimizer, model, scheduler, args.weight_decay, args.clip_grad)
    mixer = MixupCutmix(args.mixup, args.cutmix, args.mix_prob, args.mix_switch_prob, num_classes=len(classes),
                        seed=args.seed + rank(), smoothing=args.smoothing)
    if mixer.enabled and is_main_process():
        print("note: under Mixup/CutMix the train accuracy counts each image's dominant label")
    step = TrainStep(optimizer, scheduler, LabelSmoothingCrossEntropy(args.smoothing),
                     mixer if mixer.enabled else None, args.amp, device, amp_scaler, args.accum_steps,
                     args.log_interval, is_main_process() and progress_wanted(args.progress))
    ema = ModelEma(model, args.ema, args.ema_warmup) if args.ema is not None else None
    return RunState(model=model, model_without_ddp=model, step=step, ema=ema, records=Records(), config=config)


def resume_run(run: RunState, state: TrainingState, path: str, config: dict) -> tuple[int, EpochMeter]:
    """Put ``run`` back to ``state`` (from ``path``) and say so; (epoch, meter) to continue from."""
    with about("--resume"):
        epoch, meter, not_restored = restore(run, state, path, rank())
    changed = [f"--{k.replace('_', '-')} {state.config.get(k)} -> {config[k]}" for k in _REPORTED_CHANGES
               if state.config.get(k, config[k]) != config[k]]
    if is_main_process():
        print(f"resumed from {path}: epoch {epoch}, batch {meter.step}, best acc {run.best_acc:.4f}"
              + (f" (changed: {', '.join(changed)}; the run will not repeat the original)" if changed else ""))
    if not_restored:
        print(f"note: process {rank()}: {not_restored}", file=sys.stderr)
    return epoch, meter


def train_loop(run: RunState, args: argparse.Namespace, train_loader: BatchLoader, val_loader: BatchLoader,
               start_epoch: int, meter: EpochMeter) -> None:
    """The notebook's epochs from ``start_epoch`` (``meter``'s batches of it done): train, validate, save; a
    stop signal ends it at a batch boundary with a resumable checkpoint (``StopRequests``)."""
    visualdl = None
    if args.visualdl and is_main_process():
        from visualdl import LogWriter  # imported only when asked for: it pulls in a web stack
        visualdl = LogWriter(logdir=args.visualdl)
    speed_note = CpuSpeedNote(len(train_loader), args.image_size) if run.step.device == "cpu" else None
    hooks = StepHooks(run, speed_note if is_main_process() else None)
    with StopRequests() as stop:  # Ctrl-C/SIGTERM: stop after the current batch, resumable
        for epoch in range(start_epoch, args.epochs):
            start_train_epoch(train_loader, epoch, skip=meter.step)
            if is_main_process():
                print("#===epoch: {}, lr={:.10f}===#".format(epoch, run.step.optimizer.get_lr()))
            first_record = run.records.loss_iter
            train, vals = run_epoch(run, args, (train_loader, val_loader), epoch, meter, stop, hooks)
            improved = record_epoch(run, epoch, train, vals)
            meter = EpochMeter()
            if is_main_process():
                save_epoch_files(run, args, improved)
            save_checkpoint(run, args, epoch + 1, meter)
            if visualdl is not None:
                log_scalars(visualdl, run.records, first_record, epoch, train, vals["val"],
                            run.step.optimizer.get_lr())
            if stop.requested():
                stop_and_exit(run, args, epoch + 1, meter, stop.signum)
    if visualdl is not None:
        visualdl.close()


def run_epoch(run: RunState, args: argparse.Namespace, loaders: tuple[BatchLoader, BatchLoader], epoch: int,
              meter: EpochMeter, stop: StopRequests, hooks: StepHooks) -> tuple[dict, dict[str, dict]]:
    """One epoch's training and validation: (the train figures, {"val": the model's, "ema val": the EMA's}).
    A stop signal saves and exits; a data error (unreadable image, dead loader worker) saves what a stop saves
    and ends the run with one line."""
    train_loader, val_loader = loaders
    try:
        train = train_one_epoch(run.model, train_loader, run.step, run.records, meter, epoch, stop, hooks)
        if train is None:
            stop_and_exit(run, args, epoch, meter, stop.signum)
        check_finite(run.model_without_ddp, f"epoch {epoch}, batch {meter.step - 1}")
        if is_main_process():
            print_epoch_line(epoch, "train", train)
        validated = {"val": run.model, **({} if run.ema is None else {"ema val": run.ema.module})}
        vals = {name: evaluate(model, val_loader, run.step.criterion, amp=run.step.amp, device=run.step.device,
                               progress=run.step.progress, batch_size=args.batch_size,
                               num_classes=len(run.config["classes"]))
                for name, model in validated.items()}
    except DataError as err:
        save_checkpoint(run, args, epoch, meter)  # the records are untouched until validation succeeds
        fail(f"--data: {err}; {os.path.join(args.work_dir, LAST_CHECKPOINT)} holds the run up to epoch {epoch}, "
             f"batch {meter.step}: run the same command with --resume to continue")
    return train, vals


def print_epoch_line(epoch: int, what: str, figures: dict) -> None:
    """The notebook's line of an epoch's figures: ``#===epoch: 0, val loss is: ..., val acc is: ...%===#``."""
    print("#===epoch: {}, {} loss is: {}, {} acc is: {:2.2f}%===#".format(
        epoch, what, figures["loss"], what, figures["acc"] * 100))


def record_epoch(run: RunState, epoch: int, train: dict, vals: dict[str, dict]) -> dict[str, bool]:
    """The epoch's figures into the records and the best accuracies; returns which improved ("model", "ema")."""
    val, ema_val = vals["val"], vals.get("ema val")
    if not math.isfinite(val["loss"]):
        raise DivergedError(f"the validation loss is {val['loss']} after epoch {epoch}")
    run.records.add_train_acc(train["acc"])
    run.records.add_val(val["loss"], val["acc"])
    if is_main_process():
        for name, figures in vals.items():
            print_epoch_line(epoch, name, figures)
    improved = {"model": val["acc"] > run.best_acc,
                "ema": ema_val is not None and math.isfinite(ema_val["loss"]) and ema_val["acc"] > run.best_ema_acc}
    run.best_acc = max(run.best_acc, val["acc"])
    if improved["ema"]:
        run.best_ema_acc = ema_val["acc"]
    run.records.add_epoch({"epoch": epoch, "lr": run.step.optimizer.get_lr(), "train_loss": train["loss"],
                           "train_acc": train["acc"], "val_loss": val["loss"], "val_acc": val["acc"],
                           "val_top1": val["top1"], "best_acc": run.best_acc, "train_images": train["images"],
                           "val_images": val["images"], "train_seconds": train["seconds"],
                           "val_seconds": val["seconds"], "skipped_steps": train["skipped"],
                           **({} if ema_val is None else {"ema_val_loss": ema_val["loss"],
                                                          "ema_val_acc": ema_val["acc"],
                                                          "best_ema_acc": run.best_ema_acc})})
    return improved


def save_epoch_files(run: RunState, args: argparse.Namespace, improved: dict[str, bool]) -> None:
    """The notebook's best weights and optimizer state when the model improved, the EMA's when it did, and
    history.json."""
    classes = run.config["classes"]
    if improved["model"]:
        save_weights(run.model_without_ddp.state_dict(), weights_path(args, BEST_MODEL), classes)
        atomic_save(run.step.optimizer.state_dict(), os.path.join(args.work_dir, BEST_OPTIMIZER))
    if improved["ema"]:
        save_weights(run.ema.module.state_dict(), weights_path(args, BEST_MODEL_EMA), classes)
    run.records.save(os.path.join(args.work_dir, HISTORY_FILE), config=run.config)


def save_checkpoint(run: RunState, args: argparse.Namespace, epoch: int, meter: EpochMeter) -> None:
    """last.pdckpt at ``epoch`` with ``meter``'s batches done (a collective call: every process makes it; the
    main process writes), never from non-finite weights."""
    state = snapshot(run, epoch, meter)
    if is_main_process():
        check_finite(run.model_without_ddp, f"epoch {epoch}, batch {meter.step}")
        state.save(os.path.join(args.work_dir, LAST_CHECKPOINT))


def stop_and_exit(run: RunState, args: argparse.Namespace, epoch: int, meter: EpochMeter,
                  signum: int | None) -> None:
    """Save where we are and exit like a process killed by ``signum`` would (128 + signum)."""
    signum = signum or signal.SIGTERM  # another process got the signal
    save_checkpoint(run, args, epoch, meter)
    if is_main_process():
        print(f"stopped by {signal.Signals(signum).name} at epoch {epoch}, batch {meter.step}; to resume, run the "
              f"same command with --resume {shlex.quote(os.path.join(args.work_dir, LAST_CHECKPOINT))}",
              file=sys.stderr)
    sys.exit(128 + signum)


def check_finite(model: paddle.nn.Layer, where: str) -> None:
    """``DivergedError`` when an update left NaN or infinite weights: no file is ever written from them."""
    bad = nonfinite_parameters(model)
    if bad:
        raise DivergedError(f"the weights are not finite after the update at {where} ({len(bad)} parameters, "
                            f"e.g. {bad[0]})")


def log_scalars(visualdl: Any, records: Records, first_record: int, epoch: int, train: dict, val: dict,
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
