"""The few lines that describe a freshly built V1/V2 manifest (printed by `mlreassess data` and
logged by `mlreassess run`); it knows the metadata keys the builders write."""

from __future__ import annotations

from mlreassess.datasets.labelsets.agreement import describe
from mlreassess.datasets.manifest import Manifest, label_count_distribution


def summary(manifest: Manifest, out: str) -> str:
    """Samples, label-count distribution, where the labels came from, what was dropped, the file."""
    meta = manifest.meta
    dist = ", ".join(f"{k}: {v:,}" for k, v in label_count_distribution(manifest.table).items())
    lines = [
        f"{meta['dataset']} ({meta['kind']}, {meta.get('layout') or meta.get('variant')}): {len(manifest):,} samples",
        f"  label counts: {dist}",
        f"  labels from: {meta['label_source']}",
    ]
    if meta.get("label_set"):
        lines.append(f"  label set {meta['label_set']}: {meta['label_file']} (sha256 {meta['label_sha256'][:12]}...)")
    if meta.get("label_agreement"):
        lines.append(f"  original label in the label set: {describe(meta['label_agreement'])}")
    for why, n in (meta.get("label_set_left_out") or {}).items():
        lines.append(f"  left out, {why}: {n:,}")
    if meta.get("label_entries_other_images"):
        lines.append(f"  label-file entries for images other than ILSVRC-2012 val (ignored): "
                     f"{meta['label_entries_other_images']:,}")
    if meta.get("ground_truth_entries_unused"):
        lines.append(f"  ground-truth entries for images not present (ignored): {meta['ground_truth_entries_unused']:,}")
    if meta.get("label_entries_unmatched"):
        lines.append(f"  label-file entries for images not present (ignored): {meta['label_entries_unmatched']:,}")
    if meta.get("kept_original_label"):
        lines.append(f"  images missing from the labels file, kept with [label]: {meta['kept_original_label']:,}")
    if meta.get("skipped"):
        first = meta["skipped"][0]
        lines.append(f"  skipped {len(meta['skipped']):,} bad samples (first: {first['file']}: {first['error']})")
    lines.append(f"  wrote {out}")
    return "\n".join(lines)
