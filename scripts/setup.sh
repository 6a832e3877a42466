#!/usr/bin/env bash
# Create .venv and install eoembed with everything a notebook user needs.
# CPU machines get the CPU build of torch first (a bare `torch` requirement would
# otherwise pull ~3 GB of CUDA packages); GPU machines get the CUDA build and faiss-gpu.
# The env is the runtime extras (`all`) plus test tools only: the `test` extra holds no
# runtime library, so the suite runs against exactly what `pip install 'eoembed[all]'` gives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -m pip install -q torch
  python -m pip install -q -e '.[all,test]'
  python -m pip install -q -e '.[gpu]' && python -m pip uninstall -q -y faiss-cpu || true
else
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e '.[all,test]'
fi
# Test oracles (parity tests import their model code only). --no-deps: their requirements
# (torchvision, lightning…) would replace the CPU build of torch.
python -m pip install -q --no-deps timm==1.0.31 terratorch==1.2.13
echo "eoembed installed in $(pwd)/.venv"
