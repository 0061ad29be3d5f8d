"""The CPU process settings (uninext_paddle/runtime.py): when MKL's AVX2 path is asked for, that the allocator
setting really stops the page faults, the opt-out, and that nothing but the scripts applies them. Every test that
changes a process setting runs it in a child process, so the suite passes in any order."""
import subprocess
import sys

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
(x + x).numpy()  # the first result grows the heap once
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
    assert faults["tuned"] < 1000, f"{faults['tuned']} page faults for 5 reused 16 MB results (4096 per fresh one)"
    assert faults["as_is"] > 4 * 4096, faults


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


def test_importing_the_package_changes_no_warning_filter():
    code = ("import warnings; before = list(warnings.filters); import uninext_paddle, uninext_paddle.cli; "
            "print(warnings.filters == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split()[-1] == "True"
