#!/usr/bin/env bash
# The first GPU run, in one device call of at most 8 minutes: scripts/gpu_bench.py (its docstring
# says what it measures; rows are appended to $OUT/gpu_bench.csv as it goes, so a cut run reports).
#   scripts/gpu_bench.sh [PACKED]      PACKED: the folder scripts/pack_gpu_bench.sh made (default .gpu_bench)
# Env: OUT (default ./gpu_bench_out), GPU_BENCH_CPU=1 (the same steps on the CPU, tiny, in under 5
# minutes), DEADLINE_S / END_S (no step starts after / runs past), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKED=$(realpath "${1:-.gpu_bench}")
[ -d "$PACKED/shared" ] || { echo "$PACKED: not a folder made by scripts/pack_gpu_bench.sh" >&2; exit 2; }
export PYTHONPATH="$PWD/src:$PACKED/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/gpu_bench.py "$PACKED"
