"""The CPU process settings (uninext_paddle/runtime.py): when MKL's AVX2 path is asked for, that the allocator
setting really stops the page faults, that select_device applies them (eager transposes included), the opt-out."""
import resource
import subprocess
import sys

import paddle
import pytest

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


def _minor_faults_of(fn) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_page_faults_of_fresh_tensors():
    x = paddle.randn([4, 1024, 1024])  # 16 MB: glibc would mmap each result and unmap it when freed
    assert runtime.keep_freed_memory()
    (x + x).numpy()  # the first result grows the heap once
    faults = _minor_faults_of(lambda: [float((x + x).sum()) for _ in range(5)])
    assert faults < 1000, f"{faults} page faults for 5 reused 16 MB results (4096 per fresh one)"


def test_opt_out_applies_nothing():
    code = ("import os, paddle; from uninext_paddle import runtime; print(runtime.tune_cpu_runtime(), "
            "os.environ.get('MKL_DEBUG_CPU_TYPE'), paddle.get_flags('FLAGS_use_stride_kernel')['FLAGS_use_stride_kernel'])")
    env = {"UNINEXT_CPU_TUNING": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "None", "True"]


def test_select_device_tunes_the_cpu_process():
    code = ("import os, paddle; from uninext_paddle.device import select_device; select_device('cpu'); "
            "from uninext_paddle import runtime; "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE') == ('5' if runtime.mkl_avx2_wanted("
            "open('/proc/cpuinfo').read(), {}) else None), "
            "paddle.get_flags('FLAGS_use_stride_kernel')['FLAGS_use_stride_kernel'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})  # not this process's MKL_DEBUG_CPU_TYPE
    assert out.stdout.split()[-2:] == ["True", "False"]
