"""Benchmark: the port's train step as train.py runs it on the CPU, against PyTorch's eager train step.

Both train UniNeXt-T at 32x32, batch 64, from the same random weights on the same batch: the port through
``engine.train_one_epoch`` (forward, label-smoothing loss, accuracy, backward, the notebook's Adam with L2 decay
and its cosine schedule) in a process tuned as train.py tunes it (``runtime.tune_cpu_runtime``), PyTorch with the
notebook's model in PyTorch (``notebook_model_torch.py`` of the anchors folder), ``Adam(lr=1e-4,
weight_decay=1e-5)`` and ``CrossEntropyLoss(label_smoothing=0.1)``, bare steps, its default threads (as
``vs_pytorch.py`` runs it). Every contestant runs in a fresh process of its own; the rounds alternate them, and
each contestant's best round counts (the machine is shared: noise only ever slows a run down). The losses of the
first and of the last step are printed: the same weights, batch and updates must give the same losses (to float
rounding), which also shows that every contestant really trains.

Extra contestants, each measured against the port as it is: ``--baseline DIR`` (the port of another checkout,
e.g. the code before a change), ``--ablate`` (the port without each CPU formulation of
``uninext_paddle/fastpath.py``, the C++ kernels among them), ``--threads 1`` (Paddle's math library on 1 thread
rather than ``runtime.math_threads``), and prototypes of changes to files other than the model's: ``--static``
(the model as a ``paddle.jit.to_static`` program, forward and backward), ``--multi-tensor-adam`` (Paddle's Adam
with ``use_multi_tensor=True``); ``--torch-one-thread`` adds PyTorch on 1 thread.

    python -m bench.bench_train --torch-python /work/torch-venv/bin/python --anchors /work/shared/anchors --ablate

Paddle is imported in the port's processes only, so the PyTorch side runs in an environment without it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# Importing Paddle (the --ablate listing does, in this process) sets OMP_NUM_THREADS=1 when it is unset, which every
# contestant's process would inherit: they get the user's own value, read before.
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
BATCH, IMAGE_SIZE, CLASSES = 64, 32, 10
WEIGHTS, BATCH_FILE = "weights.npz", "batch.npz"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def rates(step_seconds: list[float]) -> dict[str, float]:
    """Images per second of the timed steps: their median and their best."""
    return {"median": BATCH / statistics.median(step_seconds), "best": BATCH / min(step_seconds)}


# ---------------------------------------------------------------------------------------------------
# The contestants, each in its own process.

def make_inputs(work: str) -> None:
    """The shared starting point: random UniNeXt-T weights (Paddle's init, seed 0) and one batch."""
    import numpy as np
    import paddle

    import uninext_paddle as up

    paddle.seed(0)
    model = up.create_model("T", num_classes=CLASSES)
    np.savez(os.path.join(work, WEIGHTS), **{k: v.numpy() for k, v in model.state_dict().items()})
    rs = np.random.RandomState(1)
    np.savez(os.path.join(work, BATCH_FILE), x=rs.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE).astype("float32"),
             y=rs.randint(0, CLASSES, BATCH).astype("int64"))


def run_port(work: str, warmup: int, steps: int, disable: str | None, static: bool, threads: int,
             multi_tensor_adam: bool) -> dict[str, Any]:
    """The port's train step as train.py runs it (the engine's loop over a loader of the same batch), in a
    tuned process; options: a CPU formulation off, the model through ``paddle.jit.to_static``, a math thread
    count, Adam's multi-tensor update."""
    user_omp_threads = os.environ.get("OMP_NUM_THREADS")  # as train.py reads it: before importing Paddle
    import numpy as np
    import paddle

    paddle.set_device("cpu")
    from uninext_paddle.runtime import tune_cpu_runtime

    tune_cpu_runtime(user_omp_threads)  # as train.py does on the CPU, before the first matmul
    if threads:
        paddle.base.core.set_num_threads(threads)
    import uninext_paddle as up
    from uninext_paddle import fastpath
    from uninext_paddle.engine import EpochMeter, TrainStep, train_one_epoch
    from uninext_paddle.optim import build_optimizer, build_scheduler
    from uninext_paddle.records import Records

    model = up.create_model("T", num_classes=CLASSES)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in np.load(os.path.join(work, WEIGHTS)).items()})
    if disable:
        fastpath.install(model, cpu=True, disabled=(disable,))
    batch = np.load(os.path.join(work, BATCH_FILE))
    scheduler = build_scheduler(1e-4, 782, 100)  # train.py's defaults: 50000 // 64 steps per epoch, 100 epochs
    if multi_tensor_adam:
        optimizer = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=scheduler, weight_decay=1e-5,
                                          use_multi_tensor=True)
    else:
        optimizer = build_optimizer("adam", model, scheduler, 1e-5)
    criterion = up.LabelSmoothingCrossEntropy(0.1)
    net = paddle.jit.to_static(model, full_graph=True) if static else model

    def loader(n: int) -> paddle.io.DataLoader:
        x, y = np.concatenate([batch["x"]] * n), np.concatenate([batch["y"]] * n)  # the same batch n times
        data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])
        return paddle.io.DataLoader(data, batch_size=BATCH, shuffle=False, num_workers=0)

    ends: list[float] = []  # seconds from the start of the timed epoch to the end of each of its steps
    losses: list[float] = []  # each step's loss: the growth of its epoch's running sum
    previous_sum = [0.0]

    def after_step(meter: EpochMeter, seconds: float, timed: bool) -> None:
        losses.append(meter.loss_sum - (previous_sum[0] if meter.step > 1 else 0.0))
        previous_sum[0] = meter.loss_sum
        if timed:
            ends.append(seconds)

    for n, timed in ((warmup, False), (steps, True)):
        train_one_epoch(net, loader(n), TrainStep(optimizer, scheduler, criterion), Records(), EpochMeter(),
                        epoch=0, after_step=lambda meter, seconds: after_step(meter, seconds, timed))
    return {"first_loss": losses[0], "last_loss": losses[-1], **rates(list(np.diff([0.0, *ends])))}


def run_pytorch(work: str, anchors: str, warmup: int, steps: int, threads: int | None) -> dict[str, Any]:
    """PyTorch's eager train step on the notebook's model in PyTorch, as ``vs_pytorch.py`` times it."""
    import numpy as np
    import torch

    sys.path.insert(0, anchors)
    import notebook_model_torch as anchor

    if threads:
        torch.set_num_threads(threads)
    model = anchor.UniNeXt()
    anchor.load_paddle_state(model, dict(np.load(os.path.join(work, WEIGHTS))))
    batch = np.load(os.path.join(work, BATCH_FILE))
    x, y = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> float:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss)

    seconds, losses = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        losses.append(step())
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return {"first_loss": losses[0], "last_loss": losses[-1], "threads": torch.get_num_threads(), **rates(seconds)}


# ---------------------------------------------------------------------------------------------------
# The driver: contestants in fresh processes, alternating over the rounds.

def contestants(args: argparse.Namespace) -> dict[str, tuple[list[str], str]]:
    """Contestant name -> (command line of its child process, folder of the ``uninext_paddle`` it imports)."""
    port = [sys.executable, os.path.abspath(__file__), "--child", "port", "--work", args.work,
            "--warmup", str(args.warmup), "--steps", str(args.steps)]
    runs = {"port": (port, ROOT)}
    if args.baseline:
        runs[f"port at {args.baseline}"] = (port, os.path.abspath(args.baseline))
    if args.ablate:
        import uninext_paddle.fastpath as fastpath

        for name in fastpath.FORMULATIONS:
            runs[f"port, no {name}"] = ([*port, "--disable", name], ROOT)
    threads = f"port, {args.threads} math thread{'s' * (args.threads > 1)}"
    for wanted, name, option in ((args.static, "port, to_static model", ["--static"]),
                                 (args.threads, threads, ["--threads", str(args.threads)]),
                                 (args.multi_tensor_adam, "port, multi-tensor Adam", ["--multi-tensor-adam"])):
        if wanted:
            runs[name] = ([*port, *option], ROOT)
    if args.torch_python:
        torch = [args.torch_python, os.path.abspath(__file__), "--child", "pytorch", "--work", args.work,
                 "--anchors", args.anchors, "--warmup", str(args.warmup), "--steps", str(args.steps)]
        runs["pytorch"] = (torch, ROOT)
        if args.torch_one_thread:
            runs["pytorch, 1 thread"] = ([*torch, "--torch-threads", "1"], ROOT)
    return runs


def run_child(command: list[str], package_root: str) -> dict[str, Any]:
    """One contestant's process, importing ``uninext_paddle`` from ``package_root``; its result is the last line
    it prints (JSON)."""
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, "PYTHONPATH": package_root}
    if USER_OMP_NUM_THREADS is not None:
        env["OMP_NUM_THREADS"] = USER_OMP_NUM_THREADS
    done = subprocess.run(command, cwd=package_root, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every contestant ``args.rounds`` times, alternating; each one's best round, and the ratios."""
    runs = contestants(args)
    best: dict[str, dict[str, Any]] = {}
    for i in range(args.rounds):
        for name, (command, package_root) in runs.items():
            result = run_child(command, package_root)
            print(f"round {i + 1} {name:32s} {result['median']:6.1f} img/s median, {result['best']:6.1f} best "
                  f"step, losses {result['first_loss']:.6f} -> {result['last_loss']:.6f}", flush=True)
            if name not in best or result["median"] > best[name]["median"]:
                best[name] = result
    return {"best": best, "rounds": args.rounds, "warmup": args.warmup, "steps": args.steps,
            "machine": platform.processor() or platform.machine(), "python": platform.python_version()}


def print_table(report: dict[str, Any]) -> None:
    """Markdown rows: best-round median img/s of each contestant, against the port and against PyTorch."""
    best = report["best"]
    print(f"\nbest of {report['rounds']} rounds, median of {report['steps']} steps after {report['warmup']} warm-up")
    print("| contestant | img/s | / port | / pytorch | loss of the first and the last step |")
    print("|---|---|---|---|---|")
    for name, r in best.items():
        vs_torch = f"{r['median'] / best['pytorch']['median']:.2f}x" if "pytorch" in best else ""
        print(f"| {name} | {r['median']:.1f} | {r['median'] / best['port']['median']:.2f}x | {vs_torch} | "
              f"{r['first_loss']:.6f} -> {r['last_loss']:.6f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch-python", default=None, help="a Python with PyTorch: adds the PyTorch contestant")
    p.add_argument("--anchors", default=os.path.join(ROOT, "..", "shared", "anchors"),
                   help="folder of notebook_model_torch.py")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, in each process")
    p.add_argument("--steps", type=int, default=8, help="timed steps, in each process")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="add the port of another checkout, e.g. the last commit: git archive HEAD | tar -x -C DIR")
    p.add_argument("--ablate", action="store_true", help="add the port without each CPU formulation")
    p.add_argument("--static", action="store_true", help="add the port with the model through to_static")
    p.add_argument("--threads", type=int, default=0, help="add the port with this many math threads")
    p.add_argument("--multi-tensor-adam", action="store_true", help="add the port with Adam(use_multi_tensor)")
    p.add_argument("--torch-one-thread", action="store_true", help="add PyTorch on 1 thread")
    p.add_argument("--json", default=None, help="also write the results here")
    # a contestant's own process
    p.add_argument("--child", choices=("port", "pytorch"), help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--disable", default=None, help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)  # 0: PyTorch's default
    args = p.parse_args(argv)
    if args.child == "port":
        print(json.dumps(run_port(args.work, args.warmup, args.steps, args.disable, args.static, args.threads,
                                  args.multi_tensor_adam)))
        return
    if args.child == "pytorch":
        print(json.dumps(run_pytorch(args.work, args.anchors, args.warmup, args.steps, args.torch_threads)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        args.work = work
        subprocess.run([sys.executable, "-c", "import sys; from bench.bench_train import make_inputs; "
                        "make_inputs(sys.argv[1])", work], cwd=ROOT, check=True, capture_output=True)
        report = run_benchmark(args)
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
