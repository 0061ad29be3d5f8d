"""Device selection and where Paddle would quietly run somewhere else than asked (uninext_paddle/device.py): a CPU
build on a machine with an NVIDIA GPU, AMP on the CPU or on a GPU too old for it, and a CPU process group on a GPU
machine. No GPU is needed: a fake nvidia-smi on PATH and monkeypatched Paddle queries reproduce each machine."""
from __future__ import annotations

import os
import stat
import sys

import paddle
import paddle.distributed as dist
import pytest
from paddle.base import core
from paddle.distributed import parallel

from uninext_paddle import device
from uninext_paddle.device import amp_context, make_grad_scaler, select_device
from uninext_paddle.errors import ConfigError, DeviceError

A100 = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d7e1c2a-3b4f-4c5d-8e9f-0a1b2c3d4e5f)\n"
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
             "latest NVIDIA driver is installed and running.\n")


def fake_nvidia_smi(folder, listing: str, status: int = 0) -> None:
    """An ``nvidia-smi`` in ``folder`` that prints ``listing`` for ``-L`` and exits with ``status``."""
    script = folder / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({listing!r})\nsys.exit({status})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def cpu_build_path(tmp_path, monkeypatch):
    """PATH is only ``tmp_path`` (put a fake nvidia-smi there) and Paddle is the CPU build."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: False)
    return tmp_path


def test_cpu_build_on_a_gpu_machine_says_so_with_the_fix(cpu_build_path):
    fake_nvidia_smi(cpu_build_path, A100)
    note = device.cpu_build_on_gpu_machine_note()
    assert note is not None and "\n" not in note
    assert "an NVIDIA GPU (NVIDIA A100-SXM4-40GB)" in note and "UUID" not in note
    assert "CPU build" in note and "bash install.sh" in note


def test_several_gpus_are_counted_and_named_once(cpu_build_path):
    fake_nvidia_smi(cpu_build_path, A100 + A100.replace("GPU 0", "GPU 1"))
    assert "2 NVIDIA GPUs (NVIDIA A100-SXM4-40GB)," in device.cpu_build_on_gpu_machine_note()


@pytest.mark.parametrize("listing, status", [
    (None, 0),  # no nvidia-smi on PATH: no NVIDIA driver
    (NO_DRIVER, 9),  # nvidia-smi without a loaded driver
    ("No devices were found\n", 6),
])
def test_no_note_without_a_gpu_that_answers(cpu_build_path, listing, status):
    if listing is not None:
        fake_nvidia_smi(cpu_build_path, listing, status)
    assert device.cpu_build_on_gpu_machine_note() is None


def test_no_note_for_the_gpu_build(cpu_build_path, monkeypatch):
    fake_nvidia_smi(cpu_build_path, A100)
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    assert device.cpu_build_on_gpu_machine_note() is None


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA GPU 'gpu:0' whose compute capability the test sets with ``gpu(major, minor)``."""
    def set_capability(major: int, minor: int) -> None:
        queried = []
        monkeypatch.setattr(paddle, "is_compiled_with_rocm", lambda: False)
        monkeypatch.setattr(paddle.device.cuda, "get_device_capability",
                            lambda dev=None: queried.append(dev) or (major, minor))
        monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda dev=None: "Tesla GPU")
        return queried
    return set_capability


@pytest.mark.parametrize("amp, capability, runs", [
    ("fp16", (6, 1), False),  # Pascal: Paddle's autocast would warn and run float32
    ("fp16", (7, 0), True),
    ("bf16", (7, 5), False),
    ("bf16", (8, 0), True),
    ("bf16", (9, 0), True),
])
def test_amp_on_a_gpu_too_old_for_it_is_an_error(gpu, amp, capability, runs):
    queried = gpu(*capability)
    if runs:
        assert device.amp_context(amp, "gpu:0") is not None
    else:
        with pytest.raises(DeviceError) as err:
            device.amp_context(amp, "gpu:0")
        message = str(err.value)
        assert "\n" not in message and f"{capability[0]}.{capability[1]}" in message and "Tesla GPU" in message
        assert message.endswith("use fp16 or off" if capability[0] >= 7 else "use off")
    assert queried and set(queried) == {"gpu:0"}  # the capability of the device the run is on


def test_the_grad_scaler_refuses_fp16_on_a_gpu_too_old_for_it(gpu):
    gpu(6, 0)
    with pytest.raises(DeviceError, match="compute capability 7.0 or newer"):
        device.make_grad_scaler("fp16", "gpu:0")


def test_rocm_builds_are_not_held_to_cuda_capabilities(gpu, monkeypatch):
    gpu(6, 0)  # Paddle's autocast skips the capability check on ROCm, so AMP runs there
    monkeypatch.setattr(paddle, "is_compiled_with_rocm", lambda: True)
    assert device.amp_context("bf16", "gpu:0") is not None


@pytest.fixture
def launched_on_a_gpu_machine(monkeypatch):
    """A second process of ``paddle.distributed.launch`` on a machine with GPUs and Paddle's GPU build, whose
    ``init_parallel_env`` makes Paddle 3.3.1's choice (distributed/parallel.py): the backend from
    PADDLE_DISTRI_BACKEND ('auto' unless set), and unless that is a CPU-only backend, this process's GPU as the
    default place. Returns the record of what happened."""
    happened = {"device": "cpu", "inits": 0}

    def init_parallel_env():
        happened["inits"] += 1
        if not parallel._is_cpuonly(os.environ.get("PADDLE_DISTRI_BACKEND", "auto")):
            happened["device"] = "gpu:0"

    monkeypatch.setattr(core, "is_compiled_with_cuda", lambda: True)  # what _is_cpuonly asks
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "init_parallel_env", init_parallel_env)
    monkeypatch.setattr(paddle.device, "get_device", lambda: happened["device"])
    monkeypatch.setenv("PADDLE_DISTRI_BACKEND", "auto")  # the launcher sets none when it assigned GPUs
    return happened


def test_a_cpu_process_group_on_a_gpu_machine_stays_on_the_cpu(launched_on_a_gpu_machine):
    device.init_distributed("cpu")
    assert launched_on_a_gpu_machine == {"device": "cpu", "inits": 1}
    assert os.environ["PADDLE_DISTRI_BACKEND"] == "gloo"


def test_a_process_group_that_moves_the_cpu_run_to_a_gpu_is_an_error(launched_on_a_gpu_machine, monkeypatch):
    def init_on_the_gpu_whatever_the_backend():
        launched_on_a_gpu_machine["device"] = "gpu:0"

    monkeypatch.setattr(dist, "init_parallel_env", init_on_the_gpu_whatever_the_backend)
    with pytest.raises(DeviceError, match=r"^the process group put this process on gpu:0, not on the selected cpu "
                                          r"\(PADDLE_DISTRI_BACKEND=gloo"):
        device.init_distributed("cpu")


def test_a_gpu_process_group_with_the_gloo_backend_is_an_error(launched_on_a_gpu_machine, monkeypatch):
    monkeypatch.setenv("PADDLE_DISTRI_BACKEND", "gloo")  # the GPU run is left on the CPU
    with pytest.raises(DeviceError, match="on cpu, not on the selected gpu:0"):
        device.init_distributed("gpu:0")


def test_the_gpu_process_group_keeps_its_backend(launched_on_a_gpu_machine):
    launched_on_a_gpu_machine["device"] = "gpu:0"  # select_device('gpu') under the launcher
    device.init_distributed("gpu:0")
    assert launched_on_a_gpu_machine["inits"] == 1 and os.environ["PADDLE_DISTRI_BACKEND"] == "auto"


def test_a_single_process_joins_no_group(launched_on_a_gpu_machine, monkeypatch):
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    device.init_distributed("cpu")
    assert launched_on_a_gpu_machine["inits"] == 0 and os.environ["PADDLE_DISTRI_BACKEND"] == "auto"


def test_select_device_cpu_and_gpu_without_cuda():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") == ("cpu" if not paddle.is_compiled_with_cuda() else paddle.device.get_device())
    if not paddle.is_compiled_with_cuda():
        with pytest.raises(DeviceError, match="a GPU was asked for"):
            select_device("gpu")
    with pytest.raises(ConfigError, match="unknown device"):
        select_device("tpu")


def test_amp_off_is_a_no_op_and_half_precision_on_cpu_is_refused():
    with amp_context("off", "cpu"):
        pass
    assert make_grad_scaler("off", "cpu") is None
    # Paddle 3.3.1's auto_cast does nothing on CPU
    for amp in ("fp16", "bf16"):
        with pytest.raises(DeviceError, match=f"mixed precision {amp} needs a GPU"):
            amp_context(amp, "cpu")
    with pytest.raises(ConfigError, match="unknown mixed precision"):
        amp_context("int8", "cpu")
