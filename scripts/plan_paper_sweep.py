"""`infer --plan` for the paper's sweep, without its images: manifests of the paper's sizes, then the plan.

The plan needs only each dataset's sample count and the models, so the manifests here hold the
paper's samples without pixels: V1 = the 50,000 val image ids of the real boxes file, V2 = the
10,000 keys of the published refined labels, PatchML seeds 1-5 composed from the real 80,477 boxes
(72,903 canvases each). Nothing is downloaded and no weights are needed.

    python scripts/plan_paper_sweep.py OUT --device-memory 80 --device-memory 141 [--throughput CSV]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mlreassess.datasets.manifest import base_meta, core_table, write_manifest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def placeholder_manifest(path: Path, kind: str, name: str, ids: list[str]) -> Path:
    table = core_table(ids, [f"{i}.JPEG" for i in ids], [None] * len(ids), [[] for _ in ids])
    write_manifest(path, table, base_meta(kind, name, path.parent))
    return path


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    boxes = SHARED / "imagenet-val-boxes" / "LOC_val_solution.csv"
    v1_ids = sorted(line.split(",", 1)[0] for line in boxes.read_text().splitlines()[1:] if line)
    v2_keys = sorted(json.loads((SHARED / "imagenetv2-refined-labels" / "imagenetv2_refined_labels.json").read_text()))
    paths = [placeholder_manifest(out / "v1.parquet", "imagenet_v1", "imagenet_v1", v1_ids),
             placeholder_manifest(out / "v2.parquet", "imagenet_v2", "imagenet_v2_matched-frequency",
                                  [k.rsplit(".", 1)[0] for k in v2_keys])]
    for seed in range(1, 6):
        folder = out / f"patchml{seed}"
        if not (folder / "manifest.parquet").exists():
            subprocess.run([sys.executable, "-m", "mlreassess", "patchml", "--boxes", str(boxes), "--seed", str(seed),
                            "--out", str(folder)], check=True)
        paths.append(folder / "manifest.parquet")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device-memory", action="append", default=[], metavar="GIB")
    parser.add_argument("--throughput", metavar="CSV")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", default="256")
    args = parser.parse_args()
    manifests = build(args.out)
    data = [a for m in manifests for a in ("--data", str(m))]
    for gib in args.device_memory or [None]:
        cmd = [sys.executable, "-m", "mlreassess", "infer", *data, "--models",
               str(REPO / "data_manifests" / "paper_checkpoints.txt"), "--out", str(args.out / "results"), "--plan",
               "--precision", args.precision, "--batch-size", args.batch_size]
        cmd += ["--device-memory", gib] if gib else []
        cmd += ["--throughput", args.throughput] if args.throughput else []
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"(plan took {time.perf_counter() - start:.1f} s)\n", flush=True)


if __name__ == "__main__":
    main()
