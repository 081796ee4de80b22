#!/usr/bin/env bash
# The paper's whole study on one GPU: manifests, PatchML, inference, metrics, tables, figures.
# Resumable: after a crash or a new checkpoint in the models file, run it again; finished work is skipped.
#   scripts/run_1gpu.sh [CONFIG]            (default configs/paper.yaml)
# Env: MLREASSESS (the command, default .venv/bin/mlreassess), CUDA_VISIBLE_DEVICES (which GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/paper.yaml}
MLREASSESS=${MLREASSESS:-.venv/bin/mlreassess}
exec "$MLREASSESS" run "$CONFIG"
