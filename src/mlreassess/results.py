"""The RESULTS folder: every stage names its files through `ResultsLayout`, and nowhere else.

    RESULTS/data/<name>.parquet                   manifests built by `mlreassess run`
    RESULTS/data/<patchml name>/manifest.parquet  PatchML sets built by `mlreassess run`
    RESULTS/predictions/<dataset>/<model>.parquet one file per (model, dataset)   (infer)
    RESULTS/manifests/<dataset>.parquet           the manifest the predictions came from (infer)
    RESULTS/failures.jsonl                        failed (model, dataset) units   (infer)
    RESULTS/retired/<dataset>/<model>.parquet     stale predictions being redone  (infer)
    RESULTS/metrics.parquet                       every metric, long format       (evaluate)
    RESULTS/tables/, RESULTS/figures/             the paper's tables and figures  (report)
    RESULTS/index.html                            the results page                (report)
    RESULTS/.run/<step>.json                      what made each finished step of `mlreassess run`

Dataset and model names become path parts, so `check_name` rejects those that could escape the
folder. RESULTS is a boundary (docs/outputs.md): the root may itself be a symbolic link, but every
path below it that a stage reads or writes must resolve inside it. Each path `ResultsLayout` hands
out is checked (`inside`), and so is each file it lists (`files`); a link that leads out is refused
in one line naming it, before anything is read or written. Imports nothing of the package but
`errors`: every layer may use it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mlreassess.errors import InputError

PATCHML_MANIFEST = "manifest.parquet"  # the manifest inside a PatchML folder
PATCHML_IMAGES = "images"  # its rendered canvases, <sample_id>.png


def check_name(name: str, what: str = "dataset name") -> str:
    """`name` if it is safe as one path part (no separator, not '.', '..', empty or absolute)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{what} {name!r}: must be a non-empty string")
    if not name.isprintable():  # control characters, or a file name's bytes that are not UTF-8
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InputError(f"{what} '{shown}': not printable UTF-8 text (a file name in another encoding?); rename it")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise InputError(f"{what} {name!r}: must be one plain name (no '/', '\\', '.' or '..')")
    return name


# Characters a model's file stem keeps as they are (every timm name is made of them).
FILE_NAME_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
# Longest stem: a file name may have 255 bytes, and the temporary file of an atomic write adds 46.
MAX_STEM = 200


def model_file_name(model: str) -> str:
    """File stem of a model's outputs, one path part: timm names stay as they are; every other
    character is %XX-escaped (its UTF-8 bytes, as in URLs) and so is a leading '.', so two names
    never share a file (`hf:org/repo` -> `hf%3Aorg%2Frepo`, never `hf:org_repo`'s); a stem over
    MAX_STEM characters is cut and ends in `~` and a hash of the whole name."""
    if not isinstance(model, str) or not model.strip() or not model.isprintable():
        raise InputError(f"model name {model!r}: must be a non-empty string of printable characters")
    stem = "".join(c if c in FILE_NAME_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in model)
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem) > MAX_STEM:  # '~' is escaped everywhere else, so a cut stem never equals another's
        stem = stem[: MAX_STEM - 17] + "~" + hashlib.sha256(model.encode()).hexdigest()[:16]
    return stem


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` (a path below `root`, lexically) if it resolves inside `root` once every symbolic link
    on its way is followed (a path that does not exist yet: as far as it exists); InputError naming
    the link that leads out otherwise. `root` itself may be a link: its target is the boundary."""
    root, path = Path(root), Path(path)
    real_root = Path(os.path.realpath(root))
    if _within(Path(os.path.realpath(path)), real_root):
        return path
    rel = Path(os.path.relpath(path, root))
    if rel.parts[:1] == ("..",):
        raise InputError(f"{path}: not inside {root}")
    here = root
    for part in rel.parts:
        here = here / part
        if here.is_symlink() and not _within(Path(os.path.realpath(here)), real_root):
            raise InputError(f"{here}: a symbolic link to {os.readlink(here)}, outside {root}; refusing to read or "
                             f"write through it (replace the link with the folder or file it points to)")
    raise InputError(f"{path}: resolves to {os.path.realpath(path)}, outside {root}")


def files_in(root: str | os.PathLike, folder: str | os.PathLike, pattern: str) -> list[Path]:
    """The regular files of `folder` (below `root`) matching `pattern`, sorted, each checked to resolve
    inside `root` (`inside`): a listed link to a file elsewhere is refused, not read."""
    folder = inside(root, folder)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob(pattern)) if inside(root, p).is_file()]


@dataclass(frozen=True)
class ResultsLayout:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def inside(self, path: str | os.PathLike) -> Path:
        """`path` (below the root) if it resolves inside RESULTS; InputError naming the link otherwise."""
        return inside(self.root, path)

    def files(self, folder: str | os.PathLike, pattern: str) -> list[Path]:
        """The files of a RESULTS folder matching `pattern`, each checked to resolve inside RESULTS."""
        return files_in(self.root, folder, pattern)

    # --- inference -------------------------------------------------------------------------------
    @property
    def predictions_dir(self) -> Path:
        return self.inside(self.root / "predictions")

    def predictions_of(self, dataset: str) -> Path:
        return self.inside(self.predictions_dir / check_name(dataset))

    def prediction(self, dataset: str, model: str) -> Path:
        return self.inside(self.predictions_of(dataset) / f"{model_file_name(model)}.parquet")

    @property
    def manifests_dir(self) -> Path:
        return self.inside(self.root / "manifests")

    def manifest_copy(self, dataset: str) -> Path:
        return self.inside(self.manifests_dir / f"{check_name(dataset)}.parquet")

    def manifest_copies(self) -> list[Path]:
        return self.files(self.manifests_dir, "*.parquet")

    @property
    def failures(self) -> Path:
        return self.inside(self.root / "failures.jsonl")

    def retired(self, dataset: str, model: str) -> Path:
        """Where a stale predictions file waits while it is redone (out of what evaluate reads); it
        stays there, beside a failures.jsonl entry, when the redo fails."""
        return self.inside(self.retired_of(dataset) / f"{model_file_name(model)}.parquet")

    def retired_of(self, dataset: str) -> Path:
        return self.inside(self.root / "retired" / check_name(dataset))

    @property
    def claims_dir(self) -> Path:
        """Where torchrun ranks claim passes (removed at the end of the sweep)."""
        return self.inside(self.root / ".claims")

    # --- evaluate and report ---------------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.inside(self.root / "metrics.parquet")

    @property
    def tables(self) -> Path:
        return self.inside(self.root / "tables")

    @property
    def figures(self) -> Path:
        return self.inside(self.root / "figures")

    @property
    def index_html(self) -> Path:
        return self.inside(self.root / "index.html")

    # --- `mlreassess run` ------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.inside(self.root / "data")

    def data_manifest(self, name: str) -> Path:
        return self.inside(self.data_dir / f"{check_name(name)}.parquet")

    def patchml_dir(self, name: str) -> Path:
        return self.inside(self.data_dir / check_name(name))

    @property
    def stamps_dir(self) -> Path:
        return self.inside(self.root / ".run")

    def stamp(self, step: str) -> Path:
        return self.inside(self.stamps_dir / (step.replace("/", "__") + ".json"))
