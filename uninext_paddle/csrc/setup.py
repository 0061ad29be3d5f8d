"""Builds and installs uninext-paddle's CPU kernels (cpu_kernels.cc) as the Python module ``uninext_cpu_kernels``,
with Paddle's documented ahead-of-time build (``paddle.utils.cpp_extension.setup``). install.sh runs it where a
C++ compiler exists:

    cd uninext_paddle/csrc && python setup.py install

The version is a hash of the source: ``uninext_paddle.kernels`` uses an installed module only if it was built from
the source in this checkout. OpenMP goes through the Intel OpenMP runtime Paddle ships (libiomp5), so the kernels
share the threads of Paddle's math library. ``-march=x86-64-v3`` (AVX2, FMA): every x86 CPU of the last decade;
``uninext_paddle.kernels`` checks the CPU's flags before it loads them.
"""
import hashlib
import os

import paddle
from paddle.utils.cpp_extension import CppExtension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cpu_kernels.cc")
LIBS = os.path.join(os.path.dirname(paddle.__file__), "libs")

with open(SOURCE, "rb") as f:
    version = "1.0+" + hashlib.sha256(f.read()).hexdigest()[:16]

setup(name="uninext_cpu_kernels", version=version,
      ext_modules=CppExtension(sources=[SOURCE],
                               extra_compile_args={"cxx": ["-O3", "-ffast-math", "-fopenmp", "-march=x86-64-v3"]},
                               extra_link_args=[f"-L{LIBS}", "-l:libiomp5.so", f"-Wl,-rpath,{LIBS}"]))
