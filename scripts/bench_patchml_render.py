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
from mlreassess.patchml.render import canvases, render_to_dir, render_workers

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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "imagenet-val-mini"))
    parser.add_argument("--min-box-side", type=int, default=20, help="the mini images are 227x227: scale the filter down")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=render_workers())
    parser.add_argument("--limit", type=int, help="render only the first N canvases (quick check)")
    parser.add_argument("--write", help="write the result as markdown to this file")
    return parser.parse_args()


def run_both(args: argparse.Namespace, tmp: Path) -> dict | None:
    """Render the same canvases naively and with the tool; the measurements (None: pixels differ)."""
    data = Path(args.data)
    images = data / "ILSVRC" / "Data" / "CLS-LOC" / "val"
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
            return None
    return {
        "n": n, "meta": manifest.meta, "checked": len(check), "decodes": summary.sources_decoded,
        "naive_s": naive_s, "naive_cpu": naive_cpu, "tool_s": tool_s, "tool_cpu": tool_cpu,
        "naive_bytes": sum(p.stat().st_size for p in (tmp / "naive").iterdir()),
        "tool_bytes": sum(p.stat().st_size for p in (tmp / "tool").iterdir()),
    }


def result_lines(args: argparse.Namespace, r: dict, load_start: tuple[float, ...]) -> list[str]:
    n, meta = r["n"], r["meta"]
    naive_rate, tool_rate = n / r["naive_s"], n / r["tool_s"]
    load = os.getloadavg()
    return [
        f"canvases: {n} (mini set, k = {','.join(map(str, meta['counts']))}, "
        f"min box side {args.min_box_side} px, seed {args.seed}, {meta['pool_size']} patches)",
        f"naive single-process PIL loop: {r['naive_s']:.1f} s, {naive_rate:.1f} canvases/s, "
        f"{r['naive_cpu'] / n * 1e3:.1f} CPU ms/canvas, {r['naive_bytes'] / 2**20:.0f} MiB of PNG",
        f"tool ({args.workers} workers): {r['tool_s']:.1f} s, {tool_rate:.1f} canvases/s, "
        f"{r['tool_cpu'] / n * 1e3:.1f} CPU ms/canvas, {r['tool_bytes'] / 2**20:.0f} MiB of PNG, "
        f"{r['decodes']} source decodes",
        f"speed-up: {tool_rate / naive_rate:.2f}x in canvases/s (wall clock); "
        f"{r['naive_cpu'] / r['tool_cpu']:.2f}x less CPU per canvas",
        f"pixels identical on {r['checked']} sampled canvases",
        f"load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in load)}, on {os.cpu_count()} cores",
    ]


def write_markdown(path: str, lines: list[str]) -> None:
    command = "  ".join([".venv/bin/python scripts/bench_patchml_render.py"]) + " " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(md))


def main() -> int:
    args = parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_patchml_") as tmp:
        measured = run_both(args, Path(tmp))
    if measured is None:
        return 1
    lines = result_lines(args, measured, load_start)
    print("\n".join(lines))
    if args.write:
        write_markdown(args.write, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
