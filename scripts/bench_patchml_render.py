"""Benchmark: PatchML rendering to PNG, the tool's renderer vs a plain single-process PIL loop.

Both render the same canvases (one manifest composed from the mini set's boxes) in one run. The
naive loop opens the source JPEG for every patch, crops, resizes, pastes, and saves each PNG with
PIL's default settings; the tool decodes each source once and saves with `--workers` processes.
A sample of canvases is compared pixel by pixel (the two must agree exactly).

    .venv/bin/python scripts/bench_patchml_render.py [--data ../shared/data/imagenet-val-mini]
        [--min-box-side 20] [--workers 2] [--limit N] [--write results/benchmarks/patchml_render.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mlreassess.patchml import generate
from mlreassess.patchml.render import canvases, default_workers, render_to_dir

REPO = Path(__file__).resolve().parents[1]


def naive_render(manifest, root: Path, out: Path, rows: list[int]) -> None:
    """The baseline: no caching, no parallelism, PIL's default PNG settings."""
    meta = manifest.meta
    resample = getattr(Image.Resampling, meta["resample"].upper())
    for c in canvases(manifest.table, rows):
        canvas = Image.new("RGB", (meta["canvas_size"], meta["canvas_size"]))
        for src, (x0, y0, x1, y1), size, pos in zip(c.src_ids, c.boxes, c.sizes, c.positions):
            with Image.open(root / meta["source_pattern"].format(id=src)) as im:
                patch = im.convert("RGB").crop((x0, y0, x1 + 1, y1 + 1)).resize(size, resample)
            canvas.paste(patch, pos)
        canvas.save(out / f"{c.sample_id}.png")


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (the render workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenet-val-mini"))
    parser.add_argument("--min-box-side", type=int, default=20, help="the mini images are 227x227: scale the filter down")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--limit", type=int, help="render only the first N canvases (quick check)")
    parser.add_argument("--write", help="write the result as markdown to this file")
    args = parser.parse_args()

    load_start = os.getloadavg()
    data = Path(args.data)
    images = data / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    with tempfile.TemporaryDirectory(prefix="bench_patchml_") as tmp:
        tmp = Path(tmp)
        result = generate(data / "LOC_val_solution.csv", args.seed, tmp / "set", images=None,
                          min_box_side=args.min_box_side, progress=False)
        manifest = result.manifest
        manifest.meta["source_root"] = str(images)  # composed boxes-only; render from the images
        n = len(manifest) if args.limit is None else min(args.limit, len(manifest))
        if n < len(manifest):
            manifest.table = manifest.table.slice(0, n)
        rows = list(range(n))

        (tmp / "naive").mkdir()
        t, c = time.perf_counter(), cpu_s()
        naive_render(manifest, images, tmp / "naive", rows)
        naive_s, naive_cpu = time.perf_counter() - t, cpu_s() - c

        t, c = time.perf_counter(), cpu_s()
        summary = render_to_dir(manifest, tmp / "tool", images, workers=args.workers, progress=False)
        tool_s, tool_cpu = time.perf_counter() - t, cpu_s() - c
        assert summary.rendered == n, summary

        check = rows[:: max(1, n // 50)]
        for i in check:
            sid = manifest.sample_ids[i]
            a = np.asarray(Image.open(tmp / "naive" / f"{sid}.png"))
            b = np.asarray(Image.open(tmp / "tool" / f"{sid}.png"))
            if not np.array_equal(a, b):
                print(f"MISMATCH: {sid} differs between the naive and the tool render", file=sys.stderr)
                return 1
        naive_bytes = sum(p.stat().st_size for p in (tmp / "naive").iterdir())
        tool_bytes = sum(p.stat().st_size for p in (tmp / "tool").iterdir())

    naive_rate, tool_rate = n / naive_s, n / tool_s
    load = os.getloadavg()
    command = "  ".join([".venv/bin/python scripts/bench_patchml_render.py"]) + " " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    lines = [
        f"canvases: {n} (mini set, k = {','.join(map(str, manifest.meta['counts']))}, "
        f"min box side {args.min_box_side} px, seed {args.seed}, {manifest.meta['pool_size']} patches)",
        f"naive single-process PIL loop: {naive_s:.1f} s, {naive_rate:.1f} canvases/s, "
        f"{naive_cpu / n * 1e3:.1f} CPU ms/canvas, {naive_bytes / 2**20:.0f} MiB of PNG",
        f"tool ({args.workers} workers): {tool_s:.1f} s, {tool_rate:.1f} canvases/s, "
        f"{tool_cpu / n * 1e3:.1f} CPU ms/canvas, {tool_bytes / 2**20:.0f} MiB of PNG, {summary.sources_decoded} source decodes",
        f"speed-up: {tool_rate / naive_rate:.2f}x in canvases/s (wall clock); "
        f"{naive_cpu / tool_cpu:.2f}x less CPU per canvas",
        f"pixels identical on {len(check)} sampled canvases",
        f"load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in load)}, on {os.cpu_count()} cores",
    ]
    print("\n".join(lines))
    if args.write:
        md = [
            "# PatchML rendering benchmark",
            "",
            "Command (from the repository root):",
            "",
            "```",
            command.strip(),
            "```",
            "",
            *[f"- {line}" for line in lines],
            "",
            "Both renderers run in the same process, one after the other, over the same canvases. The",
            "machine may be shared (see the load average): wall-clock rates then depend on what else runs;",
            "CPU ms per canvas (this process and its worker processes) depends on it much less.",
            "",
        ]
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
