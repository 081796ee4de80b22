#!/usr/bin/env bash
# The study on several GPUs of one machine with torchrun: every rank runs `mlreassess run`; rank 0
# builds the manifests and PatchML sets, all ranks share the inference, rank 0 evaluates and reports.
#   scripts/run_torchrun.sh [CONFIG] [NPROC]     (defaults: configs/paper.yaml, every visible GPU)
# To shard only the inference of existing manifests, call infer the same way:
#   python -m torch.distributed.run --standalone --nproc-per-node N -m mlreassess infer --data ... --model ...
# Env: PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/paper.yaml}
PYTHON=${PYTHON:-.venv/bin/python}
if [ -n "${2:-}" ]; then
  NPROC=$2
else
  NPROC=$("$PYTHON" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
fi
echo "torchrun: $NPROC process(es) on this machine, config $CONFIG" >&2
exec "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m mlreassess run "$CONFIG"
