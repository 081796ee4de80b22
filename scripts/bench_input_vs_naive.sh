#!/usr/bin/env bash
# PatchML and V1 input against the naive PIL loops (results/benchmarks/input.md, issue 26): CPU ms per
# sample, three interleaved rounds. Builds what it needs in WORK (default /tmp/bench_input):
# the full-size mini set (../shared/tools/make_fullsize_mini.py), PatchML seeds 1-5 (defaults,
# --no-render) and a V1 manifest of it. OLD_SRC (optional): an older checkout's src/ to time beside.
#   scripts/bench_input_vs_naive.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${1:-/tmp/bench_input}
PY=${PYTHON:-.venv/bin/python}
SHARED=$(realpath "${SHARED:-../shared}")
export PYTHONPATH=$REPO/src
mkdir -p "$WORK"
cd "$WORK"
S=full/ILSVRC/Data/CLS-LOC/val
[ -d full ] || "$PY" "$SHARED/tools/make_fullsize_mini.py" full >/dev/null
for seed in 1 2 3 4 5; do
    [ -f "seed$seed/manifest.parquet" ] || "$PY" -m mlreassess patchml --boxes full/LOC_val_solution.csv --seed "$seed" \
        --out "seed$seed" --images "$S" --no-render --image-sizes "$SHARED/data/imagenet-val-boxes/image_sizes.csv" >/dev/null
done
[ -f v1.parquet ] || "$PY" -m mlreassess data imagenet-val --root full --out v1.parquet >/dev/null
D=(); OD=()
for seed in 1 2 3 4 5; do
    D+=(--data "seed$seed/manifest.parquet")
    if [ -n "${OLD_SRC:-}" ] && [ ! -f "old_seed$seed/manifest.parquet" ]; then  # the old code's own manifests
        PYTHONPATH=$OLD_SRC "$PY" -m mlreassess patchml --boxes full/LOC_val_solution.csv --seed "$seed" \
            --out "old_seed$seed" --images "$S" --no-render --image-sizes "$SHARED/data/imagenet-val-boxes/image_sizes.csv" >/dev/null
    fi
    OD+=(--data "old_seed$seed/manifest.parquet")
done
last() { tail -1 | sed 's/cpu_ms_per_sample //'; }
for round in 1 2 3; do
    now=$("$PY" -m mlreassess bench data --model tf_efficientnet_lite0 "${D[@]}" --source-root "$S" --workers 0 2>&1 | last)
    old=-
    if [ -n "${OLD_SRC:-}" ]; then
        old=$(PYTHONPATH=$OLD_SRC "$PY" -m mlreassess bench data --model tf_efficientnet_lite0 "${OD[@]}" --source-root "$S" \
            --workers 0 2>&1 | last)
    fi
    naive=$("$PY" "$REPO/scripts/bench_input_baseline.py" patchml seed*/manifest.parquet --source-root "$S" | last)
    v1=$("$PY" -m mlreassess bench data --model tf_efficientnet_lite0 --data v1.parquet --workers 0 2>&1 | last)
    v1naive=$("$PY" "$REPO/scripts/bench_input_baseline.py" v1-plain v1.parquet | last)
    echo "round $round: PatchML now $now, old $old, naive $naive (ratio $("$PY" -c "print(f'{$naive / $now:.2f}')")); V1 now $v1, naive $v1naive"
done
