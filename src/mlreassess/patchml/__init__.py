"""PatchML: seed-controlled synthetic multi-label canvases from ImageNet boxes (SPEC 2).

- `pool`: stage 1, boxes file -> pool of patches (box records, no pixels).
- `layout`: stage 2, Algorithm 1: the canvases' placements -> manifest table.
- `render`: pixels: one canvas on the fly (`render_row`) or all of them to PNG.
- `build`: the whole thing, `generate` / `generate_from` (what `mlreassess patchml` calls).
"""

from mlreassess.patchml.build import IMAGES_DIR, MANIFEST_NAME, GenerateResult, generate, generate_from, sha256_file

__all__ = ["IMAGES_DIR", "MANIFEST_NAME", "GenerateResult", "generate", "generate_from", "sha256_file"]
