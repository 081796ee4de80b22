"""The results page at ImageNet scale: a synthetic RESULTS of N images (default 50,000, as the V1 val
set) with real small JPEGs and three models' top-5, then `evaluate`, the page (thumbnails included)
and headless Chromium: the page's size, its load time, and the explorer's filter and sort times.

    python scripts/bench_results_page.py [OUT] [--n 50000]

Prints one line per measurement; docs/results-page.md quotes them. Needs Debian's chromium and
chromium-driver and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from mlreassess.cli.main import main
from mlreassess.datasets.manifest import base_meta, core_table, write_manifest
from mlreassess.io import write_table
from mlreassess.report.html import write_results_page
from mlreassess.results import ResultsLayout

MODELS = ("model_a", "model_b", "model_c")
DATASET = "imagenet_v1"


def make_results(out: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images, root = out / "images", out / "R"
    images.mkdir(parents=True, exist_ok=True)
    ids = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(n)]
    label = rng.integers(0, 1000, n)
    labels = [sorted({int(label[i]), *rng.integers(0, 1000, int(rng.integers(0, 3))).tolist()}) for i in range(n)]
    base = (rng.random((120, 160, 3)) * 255).astype(np.uint8)  # some texture: a JPEG of realistic cost
    for i, sid in enumerate(ids):
        path = images / f"{sid}.JPEG"
        if not path.exists():
            Image.fromarray(np.roll(base, i, axis=1)).save(path, quality=85)
    table = core_table(ids, [f"{s}.JPEG" for s in ids], label.tolist(), labels)
    write_manifest(ResultsLayout(root).manifest_copy(DATASET), table, base_meta("imagenet_v1", DATASET, images, label_set="real"))
    for j, model in enumerate(MODELS):
        right = rng.random(n) < 0.7 + 0.05 * j
        other = np.array([ls[-1] if ls[-1] != lb else ls[0] for ls, lb in zip(labels, label)])  # another label, if any
        start = np.where(right, label, np.where(rng.random(n) < 0.3, other, rng.integers(0, 1000, n)))
        top = (start[:, None] + np.arange(5) * rng.integers(1, 200, (n, 1))) % 1000  # 5 distinct classes
        prob = np.sort(rng.dirichlet(np.ones(6), n)[:, :5], axis=1)[:, ::-1]
        t = pa.table({"sample_id": pa.array(ids, pa.string()), "topk_idx": pa.array(top.tolist(), pa.list_(pa.int32())),
                      "topk_prob": pa.array(prob.tolist(), pa.list_(pa.float32()))})
        write_table(ResultsLayout(root).prediction(DATASET, model), t,
                    {"model": model, "dataset": DATASET, "dataset_kind": "imagenet_v1", "n_samples": n, "topk": 5})
    return root


def timed(label: str, fn):
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    print(f"{label}: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU", flush=True)
    return value


def browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


CHANGE = """var t0 = performance.now(), el = document.getElementById(arguments[0]);
el.value = arguments[1]; el.dispatchEvent(new Event('change'));
return [performance.now() - t0, document.getElementById('ex-count-text').textContent];"""


def measure_page(page: Path, rounds: int = 3) -> None:
    d = browser()
    try:
        for r in range(rounds):
            d.get("about:blank")
            t0 = time.perf_counter()
            d.get(page.as_uri())
            WebDriverWait(d, 120).until(lambda x: x.execute_script("return document.documentElement.dataset.ready === '1'"))
            wall = time.perf_counter() - t0
            ready = d.execute_script("return performance.now()")
            heap = d.execute_script("return performance.memory ? performance.memory.usedJSHeapSize : null")
            print(f"round {r + 1}: page ready in {wall:.2f} s (performance.now {ready / 1000:.2f} s), JS heap "
                  f"{(heap or 0) / 2**20:.0f} MiB", flush=True)
            for control, value in (("ex-view", "wrong-right"), ("ex-sort", "unsure"), ("ex-agree", "disagree"),
                                   ("ex-view", "all"), ("ex-sort", "id")):
                ms, count = d.execute_script(CHANGE, control, value)
                print(f"  {control}={value}: {ms:.0f} ms ({count})", flush=True)
    finally:
        d.quit()


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="/tmp/bench_results_page")
    p.add_argument("--n", type=int, default=50_000)
    args = p.parse_args(argv)
    out = Path(args.out)
    root = timed(f"synthetic RESULTS of {args.n:,} images", lambda: make_results(out, args.n))
    assert main(["evaluate", "--results", str(root), "--bootstrap", "100"]) == 0
    page = timed("results page, thumbnails made", lambda: write_results_page(root))
    timed("results page, thumbnails kept", lambda: write_results_page(root))
    thumbs = sum(f.stat().st_size for f in ResultsLayout(root).thumbs_of(DATASET).glob("*.jpg"))
    print(f"index.html: {page.stat().st_size / 2**20:.1f} MiB; thumbs/: {thumbs / 2**20:.0f} MiB", flush=True)
    measure_page(page)
    return 0


if __name__ == "__main__":
    sys.exit(run())
