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


@pytest.mark.parametrize("environ, usable_cpus, threads", [
    ({}, 2, 2),
    ({}, 1, 1),
    ({"OMP_NUM_THREADS": "3"}, 2, 3),  # the user's own count wins
    ({"OMP_NUM_THREADS": "nonsense"}, 4, 4),
    ({"OMP_NUM_THREADS": "0"}, 4, 4),
    ({"PADDLE_LOCAL_SIZE": "2"}, 8, 4),  # paddle.distributed.launch: the processes of a machine share its CPUs
    ({"PADDLE_LOCAL_SIZE": "4"}, 2, 1),
    ({"PADDLE_LOCAL_SIZE": "2", "OMP_NUM_THREADS": "3"}, 8, 3),
])
def test_math_threads(environ, usable_cpus, threads):
    assert runtime.math_threads(environ, usable_cpus) == threads


_MATH_THREADS = """
import ctypes, os, paddle
from uninext_paddle import runtime
applied = runtime.tune_cpu_runtime()
x = paddle.randn([64, 64]); x @ x  # the first GEMM starts MKL and OpenMP
libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
mkl, omp = ctypes.CDLL(os.path.join(libs, "libmklml_intel.so")), ctypes.CDLL(os.path.join(libs, "libiomp5.so"))
print(applied[-1].replace(" ", "_"), mkl.MKL_Get_Max_Threads(), omp.kmp_get_blocktime())
"""


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")),
                    reason="Paddle's Linux CPU wheel ships MKL with Intel's OpenMP")
@pytest.mark.parametrize("blocktime, expected", [(None, 1), ("7", 7)])
def test_math_threads_are_set_and_idle_ones_sleep_soon_unless_the_user_chose(blocktime, expected):
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", **({"KMP_BLOCKTIME": blocktime} if blocktime else {})}
    out = subprocess.run([sys.executable, "-c", _MATH_THREADS], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-3:] == [f"2_math_threads_(KMP_BLOCKTIME={expected})", "2", str(expected)]


def test_opt_out_applies_nothing():
    code = ("import os, paddle; from uninext_paddle import runtime; print(runtime.tune_cpu_runtime(), "
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
