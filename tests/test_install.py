"""install.sh picks Paddle's wheel for the machine: the newest GPU build the NVIDIA driver runs (as nvidia-smi's
header says), the CPU wheel without a usable GPU, PADDLE_GPU's choice when set. Each test runs the real script
with a PATH of its own: a fake nvidia-smi, and a fake python that records the pip commands instead of running
them, so nothing is installed and no network is needed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://www.paddlepaddle.org.cn/packages/stable"
CPU_COMMANDS = ["-m pip uninstall -y -qq paddlepaddle-gpu", "-m pip install -r requirements.txt",
                "-m pip install --no-deps interpretdl==0.8.0"]  # what CI's real run of `bash install.sh` does


def nvidia_smi_header(driver: str, cuda: str) -> str:
    """The top of ``nvidia-smi``'s table as drivers print it (the layout changed with the 530 drivers)."""
    if int(driver.split(".")[0]) < 530:
        return ("Tue Nov 26 10:28:00 2025\n"
                "+-----------------------------------------------------------------------------+\n"
                f"| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}     |\n"
                "|-------------------------------+----------------------+----------------------+\n"
                "| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |\n"
                "|   0  Tesla V100-SXM2...  On   | 00000000:00:1E.0 Off |                    0 |\n")
    return ("Tue Nov 26 10:28:00 2025\n"
            "+-----------------------------------------------------------------------------------------+\n"
            f"| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |\n"
            "|-----------------------------------------+------------------------+----------------------+\n"
            "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
            "|   0  NVIDIA A100-SXM4-40GB          On  |   00000000:07:00.0 Off |                    0 |\n")


class Machine:
    """A PATH holding the few tools install.sh uses, a fake ``python`` that logs its arguments, and optionally
    a fake ``nvidia-smi``."""

    def __init__(self, folder: Path):
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.pip_log = folder / "pip.log"
        for tool in ("dirname", "sed", "grep", "sort", "head", "mkdir", "tail"):
            (self.bin / tool).symlink_to(shutil.which(tool))
        self._script("python", f"with open({str(self.pip_log)!r}, 'a') as log:\n"
                               "    log.write(' '.join(sys.argv[1:]) + '\\n')\n")

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{sys.executable} -S\nimport sys\n{body}")
        path.chmod(0o755)

    def gpu(self, driver: str, cuda: str, capabilities: list[str] | None = None) -> None:
        """nvidia-smi of a working driver; ``capabilities`` None: a driver too old to report them (before 510)."""
        answer = ("sys.stdout.write(''.join(c + '\\n' for c in CAPS))" if capabilities is not None else
                  "sys.exit('Field \"compute_cap\" is not a valid field to query.')")
        self._script("nvidia-smi", f"CAPS = {capabilities!r}\n"
                                   "if sys.argv[1:2] == ['--query-gpu=compute_cap']:\n"
                                   f"    {answer}\n"
                                   f"else:\n    sys.stdout.write({nvidia_smi_header(driver, cuda)!r})\n")

    def compiler(self) -> None:
        """A ``c++`` on PATH (install.sh only asks whether there is one)."""
        self._script("c++", "")

    def broken_driver(self) -> None:
        self._script("nvidia-smi", "print(\"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                                   "driver. Make sure that the latest NVIDIA driver is installed and running.\")\n"
                                   "sys.exit(9)\n")

    def install(self, *args: str, **environ: str) -> subprocess.CompletedProcess:
        env = {"PATH": str(self.bin), "HOME": str(self.bin.parent), **environ}
        return subprocess.run([shutil.which("bash"), str(ROOT / "install.sh"), *args], env=env, cwd=self.bin.parent,
                              capture_output=True, text=True, timeout=60)

    def pip_commands(self) -> list[str]:
        return self.pip_log.read_text().splitlines() if self.pip_log.exists() else []


@pytest.fixture
def machine(tmp_path) -> Machine:
    return Machine(tmp_path)


def gpu_commands(build: str) -> list[str]:
    """The GPU path: Paddle's GPU wheel from its index, then requirements.txt without the CPU wheel."""
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    assert "paddlepaddle==3.3.1" in pins
    others = " ".join(pin for pin in pins if not pin.startswith("paddlepaddle=="))
    return ["-m pip uninstall -y -qq paddlepaddle", f"-m pip install paddlepaddle-gpu==3.3.1 -i {INDEX}/{build}/",
            f"-m pip install {others}", "-m pip install --no-deps interpretdl==0.8.0"]


def test_without_nvidia_smi_the_cpu_wheel_is_installed_as_ci_does(machine):
    done = machine.install()
    assert done.returncode == 0, done.stderr
    assert machine.pip_commands() == CPU_COMMANDS
    assert "no nvidia-smi" in done.stdout and "CPU wheel" in done.stdout


@pytest.mark.parametrize("driver, cuda, capabilities, build", [
    ("520.61.05", "11.8", ["8.6"], "cu118"),
    ("535.183.01", "12.2", ["8.0"], "cu118"),
    ("550.54.14", "12.4", ["8.0"], "cu118"),  # CUDA 12.6 needs a newer driver than this
    ("560.35.03", "12.6", ["8.9"], "cu126"),
    ("570.124.06", "12.8", ["8.9"], "cu126"),
    ("575.57.08", "12.9", ["8.9"], "cu129"),
    ("580.95.05", "13.0", ["9.0", "8.0"], "cu130"),
    ("580.95.05", "13.0", ["8.0", "7.0"], "cu129"),  # a V100 among them: CUDA 13 has no code for Volta
    ("580.95.05", "13.0", [], "cu129"),  # capability unknown: not cu130
])
def test_the_newest_build_the_driver_runs(machine, driver, cuda, capabilities, build):
    machine.gpu(driver, cuda, capabilities)
    done = machine.install()
    assert done.returncode == 0, done.stderr
    assert machine.pip_commands() == gpu_commands(build)
    chosen = [line for line in done.stdout.splitlines() if line.startswith("install.sh:") and "C++" not in line]
    assert len(chosen) == 1 and f"driver {driver} runs CUDA {cuda}" in chosen[0] and f"({build}" in chosen[0]


def test_with_a_compiler_the_cpu_kernels_are_built_without_one_it_says_so(machine):
    done = machine.install()
    assert "no C++ compiler: the C++ CPU kernels (uninext_paddle/csrc) are not built" in done.stdout
    assert not any("setup.py" in command for command in machine.pip_commands())
    machine.compiler()
    done = machine.install("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "building the C++ CPU kernels" in done.stdout
    assert (ROOT / "uninext_paddle/csrc/build/build.log").read_text() == "+ python setup.py -q install\n"
    done = machine.install()
    assert done.returncode == 0, done.stderr
    assert machine.pip_commands()[-1] == "setup.py -q install"  # in uninext_paddle/csrc, after the wheels


def test_a_driver_too_old_for_every_build_gets_the_cpu_wheel_and_says_why(machine):
    machine.gpu("470.182.03", "11.4")
    done = machine.install()
    assert done.returncode == 0
    assert machine.pip_commands() == CPU_COMMANDS
    message = done.stderr.strip()
    assert "\n" not in message and "driver 470.182.03 runs CUDA 11.4" in message and "needs CUDA 11.8" in message
    assert "installing the CPU wheel instead; update the driver" in message


def test_nvidia_smi_without_a_working_driver_gets_the_cpu_wheel(machine):
    machine.broken_driver()
    done = machine.install()
    assert done.returncode == 0
    assert machine.pip_commands() == CPU_COMMANDS
    assert "couldn't communicate with the NVIDIA driver" in done.stdout


@pytest.mark.parametrize("forced, commands", [("cu126", gpu_commands("cu126")), ("cpu", CPU_COMMANDS)])
def test_paddle_gpu_overrides_the_driver(machine, forced, commands):
    machine.gpu("580.95.05", "13.0", ["9.0"])
    done = machine.install(PADDLE_GPU=forced)
    assert done.returncode == 0, done.stderr
    assert machine.pip_commands() == commands
    assert f"PADDLE_GPU={forced}" in done.stdout


def test_paddle_gpu_can_force_a_build_without_nvidia_smi(machine):
    assert machine.install(PADDLE_GPU="cu118").returncode == 0
    assert machine.pip_commands() == gpu_commands("cu118")


@pytest.mark.parametrize("args, environ, error", [
    ((), {"PADDLE_GPU": "cu121"}, "PADDLE_GPU=cu121 is not a paddlepaddle-gpu==3.3.1 build; choose one of "
                                  "cu118 cu126 cu129 cu130, or cpu"),
    (("--gpu",), {}, "unknown argument --gpu"),
])
def test_bad_settings_stop_before_pip(machine, args, environ, error):
    done = machine.install(*args, **environ)
    assert done.returncode == 2 and error in done.stderr
    assert machine.pip_commands() == []


@pytest.mark.parametrize("args, environ", [(("--dry-run",), {}), ((), {"INSTALL_DRY_RUN": "1"})])
def test_dry_run_prints_the_pip_commands_and_runs_none(machine, args, environ):
    machine.gpu("560.35.03", "12.6", ["8.9"])
    done = machine.install(*args, **environ)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert printed == [f"+ python {command}" for command in gpu_commands("cu126")]
    assert machine.pip_commands() == []


def test_dry_run_of_the_cpu_path(machine):
    done = machine.install("--dry-run", PYTHON="/opt/py 3/bin/python")  # quoted so it can be pasted
    printed = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert printed == [f"+ /opt/py\\ 3/bin/python {command}" for command in CPU_COMMANDS]
    assert not os.path.exists(machine.pip_log)
