#!/usr/bin/env bash
# Installs everything the project needs into the current Python environment.
#   bash install.sh                 # CPU (paddlepaddle wheel from PyPI)
#   PADDLE_GPU=cu126 bash install.sh  # GPU: paddlepaddle-gpu from Paddle's own index (cu118, cu126, cu129, ...)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

if [[ -n "${PADDLE_GPU:-}" ]]; then
  "$PY" -m pip uninstall -y paddlepaddle >/dev/null 2>&1 || true
  "$PY" -m pip install "paddlepaddle-gpu==3.3.1" -i "https://www.paddlepaddle.org.cn/packages/stable/${PADDLE_GPU}/"
  grep -v '^paddlepaddle==' requirements.txt > .requirements-gpu.txt
  "$PY" -m pip install -r .requirements-gpu.txt
  rm -f .requirements-gpu.txt
else
  "$PY" -m pip install -r requirements.txt
fi
# interpretdl 0.8.0 declares scikit-learn<=0.24 (no wheel for Python 3.11, and it only needs Ridge); its real
# dependencies are in requirements.txt. uninext_paddle.explain adapts it to the current scikit-learn at run time.
"$PY" -m pip install --no-deps "interpretdl==0.8.0"
