"""Benchmark: the notebook's UniNeXt code against the port, side by side in one process on the same weights.

Rows: forward at 224 (batch 8), forward at 32 (batch 64), one train step at 32 (batch 64: forward, backward,
Adam lr 1e-4 wd 1e-5 on LabelSmoothingCrossEntropy), evaluate.py's test loop end to end at 32, and the
notebook's data transforms at 224 on one worker. Each model row is warmed up, timed ``--reps`` times and
the median reported; the contestants alternate within each repetition so machine noise hits all alike.
Contestants: the notebook's code, the port (eager), the port through each compiled backend (Paddle Inference
with oneDNN, ONNX Runtime; forward rows and the evaluate loop: what evaluate.py and visualize.py run on the CPU,
ONNX Runtime first), and with ``--ablate`` the port with each fast path (uninext_paddle/fastpath.py) switched off.

``--runtime`` sets the process: ``default`` is Paddle as it comes (as the notebook runs), ``tuned`` applies
``uninext_paddle.runtime.tune_cpu_runtime`` first (as the port's scripts do on the CPU; every contestant gets
it), ``both`` (the default) runs the two in turn as child processes and adds the as-shipped comparison: the
port in the tuned process against the notebook in the default one.

    python -m bench.bench_model --variant T --reps 5 --ablate
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")  # as the scripts read it: before importing Paddle

import numpy as np  # noqa: E402
import paddle  # noqa: E402

warnings.filterwarnings("ignore", message="No ccache found")
paddle.set_device("cpu")

import uninext_paddle as up  # noqa: E402
from tests.notebook import notebook_model as nb  # noqa: E402  (the notebook's code, the reference)
from uninext_paddle import fastpath  # noqa: E402
from uninext_paddle.backends import compile_onednn, compile_onnxruntime  # noqa: E402
from uninext_paddle.runtime import cpu_field, read_cpuinfo, tune_cpu_runtime  # noqa: E402

RUNTIMES = ("both", "default", "tuned")
ONEDNN, ONNXRUNTIME = "port, onednn", "port, onnxruntime"
# contestant -> how the port is compiled for it (inference rows only); ONNXRUNTIME is what --backend auto picks
COMPILED = {ONEDNN: compile_onednn, ONNXRUNTIME: compile_onnxruntime}

# (row name, image side, batch, train step?)
MODEL_ROWS = [("forward 224 b8", 224, 8, False), ("forward 32 b64", 32, 64, False),
              ("train step 32 b64", 32, 64, True)]


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_fn(model: paddle.nn.Layer, x: paddle.Tensor) -> Callable[[], Any]:
    def run() -> None:
        with paddle.no_grad():
            model(x)
    return run


def train_step_fn(model: paddle.nn.Layer, loss_fn: paddle.nn.Layer, x: paddle.Tensor,
                  y: paddle.Tensor) -> Callable[[], Any]:
    opt = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=1e-4, weight_decay=1e-5)

    def run() -> None:
        loss_fn(model(x), y).backward()
        opt.step()
        opt.clear_grad()
    return run


def contestants_of(variant: str, notebook: paddle.nn.Layer, port: paddle.nn.Layer,
                   ablate: bool) -> dict[str, tuple[paddle.nn.Layer, tuple[str, ...]]]:
    """Contestant name -> (model, the CPU formulations it goes without): the notebook, the port, the compiled
    backends (compiled per row, for its size) and with ``ablate`` the port without each formulation."""
    contestants: dict[str, tuple[paddle.nn.Layer, tuple[str, ...]]] = {
        "notebook": (notebook, ()), "port": (port, ()), **{name: (port, ()) for name in COMPILED}}
    if ablate:
        for name in fastpath.FORMULATIONS:
            ablated = up.create_model(variant)
            ablated.set_state_dict(notebook.state_dict())
            ablated.eval()
            fastpath.install(ablated, cpu=True, disabled=(name,))
            contestants[f"port, no {name}"] = (ablated, (name,))
    return contestants


def bench_models(variant: str, reps: int, warmup: int, ablate: bool) -> list[dict[str, Any]]:
    """Time every model row for the notebook, the port, and (``ablate``) the port minus each formulation."""
    paddle.seed(0)
    notebook = getattr(nb, f"UniNeXt_{variant}")()
    port = up.create_model(variant)
    port.set_state_dict(notebook.state_dict())
    port.eval()
    contestants = contestants_of(variant, notebook, port, ablate)
    rows = []
    for row, size, batch, train in MODEL_ROWS:
        x = paddle.randn([batch, 3, size, size])
        y = paddle.randint(0, 10, [batch])
        notebook.eval(), port.eval()
        with paddle.no_grad():
            diff = float((notebook(x) - port(x)).abs().max())
        result: dict[str, Any] = {"row": row, "batch": batch, "max_abs_logit_diff": diff, "ips": {}}
        runs = {}
        for name, (model, disabled) in contestants.items():
            if name in COMPILED:
                if not train:  # inference only
                    compiled = COMPILED[name](port, size)
                    with paddle.no_grad():
                        result[f"max_abs_diff {name}"] = float((compiled(x) - port(x)).abs().max())
                    runs[name] = forward_fn(compiled, x)
            elif train:
                # each contestant trains its own copy, from the same weights, so the steps stay comparable
                copy = getattr(nb, f"UniNeXt_{variant}")() if name == "notebook" else up.create_model(variant)
                copy.set_state_dict(notebook.state_dict())
                copy.train()
                if name != "notebook":
                    fastpath.install(copy, cpu=True, disabled=disabled)
                runs[name] = train_step_fn(copy, up.LabelSmoothingCrossEntropy(), x, y)
            else:
                runs[name] = forward_fn(model, x)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(warmup + reps):
            for name, fn in runs.items():
                seconds = timed(fn)
                if i >= warmup:
                    times[name].append(seconds)
        for name, ts in times.items():
            result["ips"][name] = batch / statistics.median(ts)
        rows.append(result)
        print_row(result)
    return rows


def bench_evaluate(variant: str, images: int, reps: int) -> dict[str, Any]:
    """``evaluate.py``'s test loop (``engine.evaluate``: data loading, test transforms at 32, forward, loss and
    metrics; batch 64, no workers) over a CIFAR-format tarball of ``images`` test images, for the notebook's
    model, the port and the port through each compiled backend on the same weights; images/s the notebook's way
    (whole loop, wall time)."""
    from pathlib import Path

    from tests.cifar_fixture import make_cifar_tarball
    from uninext_paddle.data import build_test_transforms, load_cifar10
    from uninext_paddle.engine import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        tarball = make_cifar_tarball(Path(tmp) / "cifar.tar.gz", train_per_class=1,
                                     test_per_class=max(images // 10, 1))
        dataset = load_cifar10(str(tarball), "test", build_test_transforms(32))
        loader = paddle.io.DataLoader(dataset, batch_size=64, shuffle=False, num_workers=0)
        paddle.seed(0)
        notebook = getattr(nb, f"UniNeXt_{variant}")()
        port = up.create_model(variant)
        port.set_state_dict(notebook.state_dict())
        criterion = up.LabelSmoothingCrossEntropy()
        port.eval()
        contestants = {"notebook": notebook, "port": port, **{name: fn(port, 32) for name, fn in COMPILED.items()}}
        seconds: dict[str, list[float]] = {name: [] for name in contestants}
        results = {}
        for _ in range(reps):
            for name, model in contestants.items():
                results[name] = evaluate(model, loader, criterion)
                seconds[name].append(results[name]["seconds"])
    assert len({result["correct"] for result in results.values()}) == 1
    ips = {name: len(dataset) / statistics.median(ts) for name, ts in seconds.items()}
    return {"row": "evaluate loop 32 b64", "batch": 64, "ips": ips,
            "max_abs_logit_diff": abs(results["notebook"]["loss"] - results["port"]["loss"]),
            **{f"max_abs_diff {name}": abs(results["port"]["loss"] - results[name]["loss"]) for name in COMPILED}}


def bench_transforms(image_size: int, images: int) -> dict[str, float]:
    """Images/s of the notebook's train and test transforms (uninext_paddle.data) on one worker, fed the
    way the CIFAR-10 dataset feeds them: uint8 HWC 32x32 RGB arrays (cv2 backend)."""
    from uninext_paddle.data import build_test_transforms, build_train_transforms

    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(images)]
    result = {}
    for name, tfm in (("train transforms", build_train_transforms(image_size)),
                      ("test transforms", build_test_transforms(image_size))):
        for img in batch[:10]:  # warm-up
            tfm(img)
        seconds = timed(lambda: [tfm(img) for img in batch])
        result[name] = images / seconds
    return result


def print_row(r: dict[str, Any]) -> None:
    ips = r["ips"]
    others = "  ".join(f"{k}: {v:6.1f} ({v / ips['notebook']:.2f}x)" for k, v in ips.items()
                       if k not in ("notebook", "port"))
    print(f"| {r['row']:<18} | {ips['notebook']:8.1f} | {ips['port']:8.1f} | {ips['port'] / ips['notebook']:5.2f}x "
          f"| {r['max_abs_logit_diff']:.1e} | {others}", flush=True)


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """All rows in this process, under ``args.runtime`` ('default' or 'tuned'); prints the table, returns it."""
    applied = tune_cpu_runtime(USER_OMP_NUM_THREADS) if args.runtime == "tuned" else []
    cpu = cpu_field(read_cpuinfo(), "model name") or platform.processor()
    print(f"UniNeXt-{args.variant}, Paddle {paddle.__version__}, {cpu}, {paddle.device.cuda.device_count()} GPUs, "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}, reps {args.reps}, warm-up {args.warmup}, runtime "
          f"{args.runtime}: {'; '.join(applied) or 'Paddle as is'}")
    print("| row                | notebook img/s | port img/s | port/notebook | max abs logit diff | other contestants")
    report: dict[str, Any] = {"runtime": args.runtime, "applied": applied,
                              "rows": bench_models(args.variant, args.reps, args.warmup, args.ablate)}
    if args.eval_images:
        report["rows"].append(bench_evaluate(args.variant, args.eval_images, args.reps))
        print_row(report["rows"][-1])  # its logit diff column: the val loss difference
    if args.transform_images:
        report["transforms"] = bench_transforms(224, args.transform_images)
        for name, ips in report["transforms"].items():
            print(f"| {name + ' 224':<18} | one worker: {ips:.1f} img/s")
    return report


def run_both(argv: list[str]) -> None:
    """The default and the tuned process in turn (child processes, one after the other), then the port as its
    scripts run it (tuned process: oneDNN for inference, eager for training) against the notebook as it runs
    (default process)."""
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in ("default", "tuned"):
            path = os.path.join(tmp, f"{runtime}.json")
            subprocess.run([sys.executable, "-m", "bench.bench_model", *argv, "--runtime", runtime, "--json", path],
                           check=True)
            with open(path) as f:
                reports[runtime] = json.load(f)
    print("\nAs shipped: the port in the tuned process (evaluate.py/visualize.py: ONNX Runtime; train.py: eager) "
          "against the notebook's code in the default process")
    print("| row | notebook (Paddle as is) img/s | port as shipped img/s | port / notebook | of which the code "
          "(same process settings) | notebook, tuned process |")
    for default_row, tuned_row in zip(reports["default"]["rows"], reports["tuned"]["rows"]):
        shipped = tuned_row["ips"].get(ONNXRUNTIME, tuned_row["ips"]["port"])
        notebook = default_row["ips"]["notebook"]
        print(f"| {default_row['row']} | {notebook:.1f} | {shipped:.1f} | **{shipped / notebook:.2f}x** | "
              f"{default_row['ips']['port'] / notebook:.2f}x default, "
              f"{tuned_row['ips']['port'] / tuned_row['ips']['notebook']:.2f}x tuned | "
              f"{tuned_row['ips']['notebook']:.1f} |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="T", choices=list(up.VARIANTS), help="UniNeXt variant (default: T)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per row, median reported (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default: 1)")
    p.add_argument("--ablate", action="store_true", help="also time the port with each fast path switched off")
    p.add_argument("--eval-images", type=int, default=640,
                   help="test images for the evaluate.py loop row, 0 to skip it (default: 640)")
    p.add_argument("--transform-images", type=int, default=500,
                   help="images through each transform pipeline, 0 to skip that row (default: 500)")
    p.add_argument("--runtime", default="both", choices=RUNTIMES,
                   help="process settings: default (Paddle as is), tuned (the scripts' CPU settings), both "
                        "(each in a child process, then the as-shipped comparison; the default)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows to PATH (one runtime only)")
    args = p.parse_args(argv)
    if args.runtime == "both":
        if args.json:
            p.error("--json needs --runtime default or tuned")
        run_both([a for a in argv if a != "--runtime" and a not in RUNTIMES])
        return
    report = run_benchmarks(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
