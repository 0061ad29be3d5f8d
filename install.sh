#!/usr/bin/env bash
# Installs everything the project needs into the current Python environment.
#   bash install.sh                    # Paddle for this machine: the GPU build its NVIDIA driver runs, else the CPU one
#   PADDLE_GPU=cu126 bash install.sh   # force a GPU build: cu118, cu126, cu129 or cu130
#   PADDLE_GPU=cpu bash install.sh     # force the CPU wheel (from PyPI)
#   bash install.sh --dry-run          # or INSTALL_DRY_RUN=1: print the pip commands instead of running them
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
PADDLE_VERSION=3.3.1
PADDLE_INDEX=https://www.paddlepaddle.org.cn/packages/stable
# Paddle 3.3.1's GPU builds on its own index, oldest first, and the CUDA version each needs from the driver.
BUILDS=(cu118 cu126 cu129 cu130)
BUILD_CUDA=(11.8 12.6 12.9 13.0)
# CUDA 13 dropped the GPUs older than Turing (compute capability 7.5): cu130 has no code for them.
CU130_MIN_CAPABILITY=7.5

dry_run=0
[[ ${INSTALL_DRY_RUN:-0} != 0 ]] && dry_run=1
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=1 ;;
    *) echo "install.sh: unknown argument $arg (the only one is --dry-run)" >&2; exit 2 ;;
  esac
done

say() { echo "install.sh: $*"; }
run() {
  if [[ $dry_run == 1 ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# "12.4" -> 1204, so that versions compare as numbers.
version_number() {
  local major=${1%%.*} minor=0
  [[ $1 == *.* ]] && minor=${1#*.}
  echo $((10#$major * 100 + 10#$minor))
}

# Sets `build` to the newest GPU build this machine's driver runs, or to "" (the CPU wheel), saying why.
# nvidia-smi's header names the newest CUDA version the driver runs ("CUDA Version: 12.4").
choose_build() {
  build=""
  if ! command -v nvidia-smi >/dev/null; then
    say "no nvidia-smi (no NVIDIA driver): installing the CPU wheel"
    return
  fi
  local header
  if ! header=$(nvidia-smi 2>&1); then
    say "nvidia-smi sees no usable GPU (${header%%$'\n'*}): installing the CPU wheel"
    return
  fi
  local driver="?"
  [[ $header =~ Driver\ Version:\ *([0-9.]+) ]] && driver=${BASH_REMATCH[1]}
  if ! [[ $header =~ CUDA\ Version:\ *([0-9]+\.[0-9]+) ]]; then
    say "nvidia-smi names no CUDA version (driver $driver): installing the CPU wheel;" \
        "PADDLE_GPU=${BUILDS[0]} (or newer) forces a GPU build"
    return
  fi
  local cuda=${BASH_REMATCH[1]}
  # The oldest compute capability among the GPUs ("7.0"); empty if this driver cannot tell, and then no cu130.
  local capability
  capability=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
               grep -E '^[0-9]+\.[0-9]+$' | sort -V | head -n 1 || true)
  local i skipped=""
  for ((i = ${#BUILDS[@]} - 1; i >= 0; i--)); do
    (($(version_number "${BUILD_CUDA[i]}") <= $(version_number "$cuda"))) || continue
    if [[ ${BUILDS[i]} == cu130 ]] && ! { [[ -n $capability ]] &&
        (($(version_number "$capability") >= $(version_number $CU130_MIN_CAPABILITY))); }; then
      skipped="; not cu130: CUDA 13 needs compute capability $CU130_MIN_CAPABILITY or newer,"
      skipped+=" this GPU's is ${capability:-unknown}"
      continue
    fi
    build=${BUILDS[i]}
    say "NVIDIA driver $driver runs CUDA $cuda and older: installing paddlepaddle-gpu==$PADDLE_VERSION" \
        "built for CUDA ${BUILD_CUDA[i]} ($build$skipped); PADDLE_GPU=<build> or PADDLE_GPU=cpu overrides"
    return
  done
  say "NVIDIA driver $driver runs CUDA $cuda and older, but paddlepaddle-gpu==$PADDLE_VERSION needs CUDA" \
      "${BUILD_CUDA[0]} at least (driver 520 or newer): installing the CPU wheel instead; update the driver and" \
      "run install.sh again for the GPU build" >&2
}

case ${PADDLE_GPU:-} in
  "") choose_build ;;
  cpu) build=""; say "PADDLE_GPU=cpu: installing the CPU wheel" ;;
  *)
    if [[ " ${BUILDS[*]} " != *" $PADDLE_GPU "* ]]; then
      echo "install.sh: PADDLE_GPU=$PADDLE_GPU is not a paddlepaddle-gpu==$PADDLE_VERSION build;" \
           "choose one of ${BUILDS[*]}, or cpu" >&2
      exit 2
    fi
    build=$PADDLE_GPU
    say "PADDLE_GPU=$build: installing paddlepaddle-gpu==$PADDLE_VERSION built for $build"
    ;;
esac

# The CPU and GPU wheels both install the module `paddle`: the other one goes first, or their files would mix.
if [[ -n $build ]]; then
  run "$PY" -m pip uninstall -y -qq paddlepaddle
  run "$PY" -m pip install "paddlepaddle-gpu==$PADDLE_VERSION" -i "$PADDLE_INDEX/$build/"
  # requirements.txt without its CPU wheel, from PyPI as usual
  mapfile -t requirements < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' requirements.txt |
                              grep -v -e '^$' -e '^paddlepaddle==')
  run "$PY" -m pip install "${requirements[@]}"
else
  run "$PY" -m pip uninstall -y -qq paddlepaddle-gpu
  run "$PY" -m pip install -r requirements.txt
fi
# interpretdl 0.8.0 declares scikit-learn<=0.24 (no wheel for Python 3.11, and it only needs Ridge); its real
# dependencies are in requirements.txt. uninext_paddle.explain adapts it to the current scikit-learn at run time.
run "$PY" -m pip install --no-deps "interpretdl==0.8.0"

# The C++ CPU kernels (uninext_paddle/csrc, Paddle custom operators) where a C++ compiler exists. Without them the
# scripts run Paddle's own kernels, slower on the CPU, and say so in one line (uninext_paddle/kernels.py).
build_kernels() {
  if ! command -v "${CXX:-c++}" >/dev/null && ! command -v g++ >/dev/null; then
    say "no C++ compiler: the C++ CPU kernels (uninext_paddle/csrc) are not built; the scripts run Paddle's own" \
        "kernels, slower on the CPU"
    return
  fi
  say "building the C++ CPU kernels (uninext_paddle/csrc/cpu_kernels.cc, about 20 s)"
  # each build is installed as its own version: earlier ones go first
  local builds i log=uninext_paddle/csrc/build/build.log
  builds=$("$PY" -c 'import importlib.metadata as m
print(sum(d.metadata["Name"] == "uninext_cpu_kernels" for d in m.distributions()))' 2>/dev/null || true)
  for ((i = 0; i < ${builds:-0}; i++)); do run "$PY" -m pip uninstall -y -qq uninext_cpu_kernels; done
  mkdir -p "$(dirname "$log")"
  if ! (cd uninext_paddle/csrc && run "$PY" setup.py -q install) >"$log" 2>&1; then
    say "the C++ CPU kernels did not build (the end of $log follows); the scripts run Paddle's own kernels" >&2
    tail -n 20 "$log" >&2
  fi
}
build_kernels
