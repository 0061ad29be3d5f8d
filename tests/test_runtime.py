"""The CPU process settings (uninext_paddle/runtime.py): when MKL's AVX2 path is asked for, that the allocator
setting really stops the page faults, how many math threads, the opt-out, and that nothing but the scripts applies
them. Every test that changes a process setting runs it in a child process, so the suite passes in any order."""
import os
import subprocess
import sys

import paddle
import pytest

from tests.conftest import ROOT
from uninext_paddle import runtime

AMD = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"


@pytest.mark.parametrize("cpuinfo, environ, wanted", [
    (AMD, {}, True),
    (AMD.replace(" avx2", ""), {}, False),  # a processor without AVX2 would crash on MKL's AVX2 kernels
    (AMD.replace(" fma", ""), {}, False),
    (AMD.replace("AuthenticAMD", "GenuineIntel"), {}, False),  # MKL already takes its fast path there
    (AMD, {"MKL_DEBUG_CPU_TYPE": "4"}, False),  # never over the user's own value
    ("", {}, False),
])
def test_mkl_avx2_wanted(cpuinfo, environ, wanted):
    assert runtime.mkl_avx2_wanted(cpuinfo, environ) is wanted


_FAULTS_OF_FRESH_TENSORS = """
import resource, sys, paddle
from uninext_paddle import runtime
x = paddle.randn([4, 1024, 1024])  # 16 MB: glibc would mmap each result and unmap it when freed
if sys.argv[1] == "tuned":
    assert runtime.keep_freed_memory()
[float((x + x).sum()) for _ in range(2)]  # the first results grow the heap once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
[float((x + x).sum()) for _ in range(5)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_page_faults_of_fresh_tensors():
    # in child processes: the allocator setting is process-wide and would leak into the other tests
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS_OF_FRESH_TENSORS, mode], cwd=ROOT,
                                       capture_output=True, text=True, check=True).stdout.split()[-1])
              for mode in ("as_is", "tuned")}
    # 5 fresh 16 MB results fault in about 5 x 4096 pages; reused heap memory almost none (a busy machine's
    # page reclaim and Paddle's helper threads add a few thousand at most)
    assert faults["as_is"] > 4 * 4096 and faults["tuned"] < faults["as_is"] / 4, faults


@pytest.mark.parametrize("user, environ, usable_cpus, threads", [
    (None, {}, 2, 2),
    (None, {}, 1, 1),
    ("3", {}, 2, 3),  # the user's own count wins
    ("1", {}, 2, 1),
    ("nonsense", {}, 4, 4),
    ("0", {}, 4, 4),
    (None, {"PADDLE_LOCAL_SIZE": "2"}, 8, 4),  # paddle.distributed.launch: the processes of a machine share its CPUs
    (None, {"PADDLE_LOCAL_SIZE": "4"}, 2, 1),
    ("3", {"PADDLE_LOCAL_SIZE": "2"}, 8, 3),
    ("1", {"PADDLE_LOCAL_SIZE": "2"}, 8, 4),  # the launcher's own import of Paddle set 1: not the user's
])
def test_math_threads(user, environ, usable_cpus, threads):
    assert runtime.math_threads(user, environ, usable_cpus) == threads


_MATH_THREADS = """
import ctypes, os, sys
user = os.environ.get("OMP_NUM_THREADS")  # before Paddle, as the scripts read it
import paddle
from uninext_paddle import runtime
applied = runtime.tune_cpu_runtime(user)
x = paddle.randn([64, 64]); x @ x  # the first GEMM starts MKL and OpenMP
libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
mkl, omp = ctypes.CDLL(os.path.join(libs, "libmklml_intel.so")), ctypes.CDLL(os.path.join(libs, "libiomp5.so"))
print(applied[-1].replace(" ", "_"), mkl.MKL_Get_Max_Threads(), omp.kmp_get_blocktime())
"""
USABLE_CPUS = runtime.usable_cpus()


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")),
                    reason="Paddle's Linux CPU wheel ships MKL with Intel's OpenMP")
@pytest.mark.skipif(USABLE_CPUS < 2, reason="one CPU: one math thread")
@pytest.mark.parametrize("environ, threads, blocktime", [({}, USABLE_CPUS, 1), ({"KMP_BLOCKTIME": "7"}, USABLE_CPUS, 7),
                                                         ({"OMP_NUM_THREADS": "2"}, 2, 1)])
def test_math_threads_are_set_and_idle_ones_sleep_soon_unless_the_user_chose(environ, threads, blocktime):
    """Without OMP_NUM_THREADS (which importing Paddle sets to 1), every usable CPU; the user's count wins."""
    env = {"PATH": "/usr/bin:/bin", **environ}
    out = subprocess.run([sys.executable, "-c", _MATH_THREADS], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-3:] == [f"{threads}_math_threads_(KMP_BLOCKTIME={blocktime})", str(threads),
                                       str(blocktime)]


@pytest.mark.skipif(USABLE_CPUS < 2, reason="one CPU: one math thread")
@pytest.mark.parametrize("omp, says", [(None, f"{USABLE_CPUS} math threads"), ("1", None), ("3", "3 math threads")])
def test_a_script_process_uses_the_cpus_unless_the_user_set_omp_num_threads(omp, says, tmp_path):
    """train.py as a user runs it (no stubbed environment): the CPU settings line, before the data is read."""
    env = {name: value for name, value in os.environ.items() if name not in ("UNINEXT_CPU_TUNING", "OMP_NUM_THREADS")}
    env.update({} if omp is None else {"OMP_NUM_THREADS": omp})
    done = subprocess.run([sys.executable, "train.py", "--device", "cpu", "--data", str(tmp_path / "missing"),
                           "--work-dir", str(tmp_path / "w")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    settings = next(line for line in done.stdout.splitlines() if line.startswith("CPU settings: "))
    assert (says in settings) if says else ("math threads" not in settings), settings
    assert done.returncode == 2 and "missing does not exist" in done.stderr


def test_opt_out_applies_nothing():
    code = ("import os, paddle; from uninext_paddle import runtime; print(runtime.tune_cpu_runtime(None), "
            "os.environ.get('MKL_DEBUG_CPU_TYPE'), "
            "paddle.get_flags('FLAGS_use_stride_kernel')['FLAGS_use_stride_kernel'])")
    env = {"UNINEXT_CPU_TUNING": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "None", "True"]


def test_selecting_the_cpu_changes_no_process_setting():
    """select_device selects a device and nothing else: the scripts apply the tuning themselves, in the open."""
    code = ("import os, paddle; from uninext_paddle.device import select_device; select_device('cpu'); "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE'), "
            "paddle.get_flags('FLAGS_use_stride_kernel')['FLAGS_use_stride_kernel'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})  # not this process's MKL_DEBUG_CPU_TYPE
    assert out.stdout.split()[-2:] == ["None", "True"]
