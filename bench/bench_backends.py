"""Benchmark: the inference backends of evaluate.py and visualize.py on the CPU, as the scripts run them.

Rows: the forward pass at 224 (batch 8) and at 32 (batch 64), the notebook's timed loop at 32 (batch 64, no
workers; evaluate.py's ``Throughout`` figure, over a CIFAR-format tarball of ``--loop-images`` images) and LIME
at 224 (visualize.py --lime: ``--lime-samples`` samples, batch 10; seconds per image). Contestants: the port's
eager model, Paddle Inference with oneDNN, and ONNX Runtime in its two layouts (one session on every core; one
single-threaded session per core, each running its share of a batch), as evaluate.py and visualize.py build them
(``--backend auto`` times them and runs the fastest); also one ONNX Runtime session whose idle threads spin rather
than sleep. UniNeXt-T, random weights, in a process with the scripts' CPU settings (``runtime.tune_cpu_runtime``).

The machine is shared: every contestant is run ``--runs`` times, the contestants alternating, and its best run is
reported (a forward run: one warm-up call, then the median of three timed calls).

    python -m bench.bench_backends --runs 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")  # as the scripts read it: before importing Paddle
# Paddle warns on import when ccache (a C++ build cache for custom operators) is absent: noise for a benchmark.
warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import uninext_paddle as up  # noqa: E402
from bench.bench_model import timed  # noqa: E402
from tests.cifar_fixture import make_cifar_tarball  # noqa: E402
from uninext_paddle.backends import (ORT_MAX_SESSIONS, OnnxRuntimeModel, compile_onednn,  # noqa: E402
                                     compile_onnxruntime, probe_difference)
from uninext_paddle.data import build_test_transforms, load_cifar10  # noqa: E402
from uninext_paddle.export import onnx_model_bytes, onnxruntime_session  # noqa: E402
from uninext_paddle.runtime import tune_cpu_runtime, usable_cpus  # noqa: E402
from uninext_paddle.throughput import notebook_loop  # noqa: E402

LIME_BATCH = 10  # visualize.py's --batch-size default


def spinning_onnxruntime(model: paddle.nn.Layer, image_size: int) -> paddle.nn.Layer:
    """One ONNX Runtime session on every core whose idle threads spin (ONNX Runtime's default)."""
    return OnnxRuntimeModel([onnxruntime_session(onnx_model_bytes(model, image_size), 0, spinning=True)])


SESSIONS = min(ORT_MAX_SESSIONS, usable_cpus())
# contestant -> how the port is turned into it for an image size; all but the last are evaluate.py's candidates
CONTESTANTS: dict[str, Callable[[paddle.nn.Layer, int], paddle.nn.Layer]] = {
    "eager": lambda model, size: model,
    "onednn": compile_onednn,
    "onnxruntime, 1 session": compile_onnxruntime,
    f"onnxruntime, {SESSIONS} sessions": lambda model, size: compile_onnxruntime(model, size, SESSIONS),
    "onnxruntime, 1 session, spinning": spinning_onnxruntime,
}
BACKEND_CONTESTANTS = ("eager", "onednn", "onnxruntime, 1 session", f"onnxruntime, {SESSIONS} sessions")


def best_of(runs: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each contestant's largest value of ``measure()`` over ``runs`` runs, the contestants alternating."""
    values: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(runs):
        for name, measure in measures.items():
            values[name].append(measure())
    return {name: max(v) for name, v in values.items()}


def forward_rate(model: paddle.nn.Layer, x: paddle.Tensor) -> Callable[[], float]:
    """One run: a warm-up call, then images/s of the median of three timed calls."""
    def measure() -> float:
        with paddle.no_grad():
            model(x)
            return x.shape[0] / statistics.median(timed(lambda: model(x)) for _ in range(3))
    return measure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs per contestant, best reported (default: 2)")
    p.add_argument("--loop-images", type=int, default=640,
                   help="test images of the notebook's loop row, 0 to skip it (default: 640)")
    p.add_argument("--lime-samples", type=int, default=1000,
                   help="LIME's samples per image (visualize.py's default), 0 to skip that row (default: 1000)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows to PATH")
    args = p.parse_args(argv)

    paddle.set_device("cpu")
    applied = tune_cpu_runtime(USER_OMP_NUM_THREADS)
    print(f"UniNeXt-T, Paddle {paddle.__version__}, runs {args.runs} (best), CPU settings: {'; '.join(applied)}")
    paddle.seed(0)
    port = up.create_model("T")
    port.eval()
    rows: dict[str, dict[str, float]] = {}

    def report(row: str, values: dict[str, float], unit: str) -> None:
        rows[row] = values
        print(f"| {row} | " + " | ".join(f"{name}: {v:.2f} {unit}" for name, v in values.items()) + " |", flush=True)

    compiled = {}
    for size, batch in ((224, 8), (32, 64)):
        compiled[size] = {name: fn(port, size) for name, fn in CONTESTANTS.items()}
        diffs = {name: probe_difference(port, model, size)[0] for name, model in compiled[size].items()}
        print(f"logit differences to eager at {size}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        x = paddle.randn([batch, 3, size, size])
        report(f"forward {size} b{batch}", best_of(args.runs, {name: forward_rate(model, x)
                                                                for name, model in compiled[size].items()}), "img/s")

    if args.loop_images:
        with tempfile.TemporaryDirectory() as tmp:
            tarball = make_cifar_tarball(Path(tmp) / "cifar.tar.gz", train_per_class=1,
                                         test_per_class=max(args.loop_images // 10, 1))
            loader = paddle.io.DataLoader(load_cifar10(str(tarball), "test", build_test_transforms(32)),
                                          batch_size=64, shuffle=False, num_workers=0)
            report("notebook loop 32 b64", best_of(args.runs, {
                name: (lambda model=model: notebook_loop(model, loader).images_per_s)
                for name, model in compiled[32].items()}), "img/s")

    if args.lime_samples:
        from uninext_paddle.explain import explain_image

        image = np.random.RandomState(0).standard_normal((3, 224, 224)).astype(np.float32)

        def lime_rate(model: paddle.nn.Layer) -> Callable[[], float]:
            return lambda: 1 / timed(lambda: explain_image(model, image, 0, num_samples=args.lime_samples,
                                                           batch_size=LIME_BATCH, seed=0))
        best = best_of(args.runs, {name: lime_rate(compiled[224][name]) for name in BACKEND_CONTESTANTS})
        report(f"LIME 224, {args.lime_samples} samples", {name: 1 / v for name, v in best.items()}, "s/image")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"applied": applied, "runs": args.runs, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
