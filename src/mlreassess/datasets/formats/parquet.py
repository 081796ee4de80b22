"""Hugging Face `imagenet-1k` parquet shards, read in place (nothing is extracted).

The shards (`data/validation-00000-of-00014.parquet`, ...) hold an `image` struct (`bytes`: the
encoded file, `path`: its name, `ILSVRC2012_val_00000001_n01751748.JPEG`) and an int `label`
(HF's ClassLabel order, which is the sorted-wnid order timm uses; both are checked: the names'
wnids against the label of every row, the ClassLabel names in the schema metadata against the
standard classes: Hugging Face's own `IMAGENET2012_CLASSES`, where n03126707 is 'crane2', or any
copy naming each class by its description or first lemma). A manifest row names its image by shard (`path`), `row` and `member`
(the name in the shard).

Reading: a row group is the smallest unit parquet decompresses, so a worker reads the `image`
column of one row group (`datasets` writes 100 images per group; newer versions ~100 MB) and keeps
it while the rows it is asked for (in order) are in it. Re-reading a group costs ~0.01 ms per image
on the full-size mini (results/benchmarks/input.md), against ~3-5 ms to decode and resize one.
"""

from __future__ import annotations

import bisect
import json
import logging
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlreassess.constants import NUM_CLASSES
from mlreassess.datasets import labels as lab
from mlreassess.datasets.formats.base import Found, Scan, ShardReader, find_shards, inside, shard_fingerprints, val_name
from mlreassess.errors import InputError, short_repr
from mlreassess.io import atomic_path

log = logging.getLogger(__name__)

NAME = "hf-parquet"
IMAGE, LABEL = "image", "label"
HF_META_KEY = b"huggingface"
EXTRA_COLUMNS = (("row", pa.int64()), ("member", pa.string()))


def detect(root: Path) -> list[str]:
    """The validation-split parquet shards under `root` (relative paths), [] when there are none."""
    return find_shards(root, ".parquet")


def open_shard(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file (truncated or damaged?): {exc}") from None


def _check_schema(pf: pq.ParquetFile, path: Path) -> bool:
    """Whether the shard has a label column; InputError if it is not an HF image dataset's shard."""
    schema = pf.schema_arrow
    image = schema.field(IMAGE).type if IMAGE in schema.names else None
    if image is None or not pa.types.is_struct(image) or image.get_field_index("bytes") < 0:
        raise InputError(f"{path}: no '{IMAGE}' struct column with 'bytes' (the Hugging Face image layout); "
                         f"columns: {', '.join(schema.names)}")
    if LABEL in schema.names and not pa.types.is_integer(schema.field(LABEL).type):
        raise InputError(f"{path}: column '{LABEL}' is {schema.field(LABEL).type}, expected integers")
    return LABEL in schema.names


def hf_features_meta(names: list[str] | None) -> bytes:
    """The `huggingface` schema metadata `datasets` writes for an `image` Image column and a `label`
    ClassLabel of `names` (an int `label` without names when None)."""
    label = {"names": list(names), "_type": "ClassLabel"} if names is not None else {"dtype": "int64", "_type": "Value"}
    return json.dumps({"info": {"features": {IMAGE: {"_type": "Image"}, LABEL: label}}}).encode()


def write_shard(path: Path, rows: list[tuple[bytes, str | None, int | None]], names: list[str] | None,
                row_group: int = 100) -> None:
    """One shard as the hub's imagenet-1k holds them, written atomically: rows of (encoded image,
    its file name, label) as an `image` struct (bytes, path) and an int64 `label`, the `huggingface`
    metadata `datasets` writes (ClassLabel `names`), snappy, `row_group` rows per row group."""
    image = pa.StructArray.from_arrays([pa.array([r[0] for r in rows], pa.binary()),
                                        pa.array([r[1] for r in rows], pa.string())], names=["bytes", "path"])
    schema = pa.schema([pa.field(IMAGE, image.type), pa.field(LABEL, pa.int64())],
                       metadata={HF_META_KEY: hf_features_meta(names)})
    table = pa.table({IMAGE: image, LABEL: pa.array([r[2] for r in rows], pa.int64())}, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group, compression="snappy")


def class_names(pf: pq.ParquetFile) -> list | None:
    """The shard's ClassLabel names (HF schema metadata), None when it names none."""
    raw = (pf.schema_arrow.metadata or {}).get(HF_META_KEY)
    try:
        names = json.loads(raw)["info"]["features"][LABEL]["names"] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    return names if isinstance(names, list) else None


def class_order_problem(names: list) -> str | None:
    """Why ClassLabel names are not ImageNet-1k's classes in the sorted-wnid order (None: they are).
    Each name must name its own class in one of the forms copies use (`labels.names_class`: Hugging
    Face's 'crane2', timm's 'crane', a whole description or its first lemma)."""
    if len(names) != NUM_CLASSES:
        return f"its '{LABEL}' ClassLabel has {len(names)} names, expected {NUM_CLASSES}"
    for i, name in enumerate(names):
        if not isinstance(name, str) or not lab.names_class(name, i):
            elsewhere = lab.classes_named(name) if isinstance(name, str) else []
            other = f", which is class {', '.join(map(str, elsewhere))}" if elsewhere else ""
            return (f"label {i} is {short_repr(name)} here{other}, but class {i} is {lab.hf_class_names()[i]!r} "
                    f"({lab.class_wnid(i)}) in the sorted-wnid order; this copy's class order differs")
    return None


def check_class_order(pf: pq.ParquetFile, path: Path) -> str:
    """How the shard's label order was checked: its ClassLabel names (HF schema metadata) must be the
    standard classes in order; one InputError line names the first that is not."""
    names = class_names(pf)
    if names is None:
        return "no class names in the shard: sorted-wnid order assumed, checked by the names' wnids if any"
    problem = class_order_problem(names)
    if problem is not None:
        raise InputError(f"{path}: {problem}")
    if tuple(names) == lab.hf_class_names():
        return "ClassLabel names checked: Hugging Face's IMAGENET2012_CLASSES, the sorted-wnid order"
    return "ClassLabel names checked: the sorted-wnid order"


def _null_bytes(pf: pq.ParquetFile) -> set[int]:
    """Rows whose image bytes are null (only row groups whose statistics say so are read)."""
    leaves = pf.metadata.schema
    column = next(k for k in range(len(leaves)) if leaves.column(k).path == f"{IMAGE}.bytes")
    out: set[int] = set()
    start = 0
    for g in range(pf.metadata.num_row_groups):
        group = pf.metadata.row_group(g)
        stats = group.column(column).statistics
        if stats is None or stats.null_count:
            values = pf.read_row_group(g, columns=[f"{IMAGE}.bytes"]).column(IMAGE).combine_chunks().field("bytes")
            out |= {start + j for j in range(len(values)) if not values[j].is_valid}
        start += group.num_rows
    return out


def _row(shard: str, path: Path, r: int, name: Any, column_label: Any) -> tuple[Found | None, str | None]:
    """(the image of row r, None) or (None, why it cannot be used). Only the name's last part counts:
    `datasets` records the path a local image was read from (`/data/val/ILSVRC2012_val_...JPEG`)."""
    vn = val_name(PurePath(name).name if name else None)
    label = column_label if column_label is not None and column_label >= 0 else None
    if label is not None and label >= 1000:
        return None, f"label {label} out of range 0..999"
    if vn is not None and vn.wnid is not None:
        if vn.wnid not in lab.wnid_to_index():
            return None, f"unknown wnid {vn.wnid!r} in its name (not an ImageNet-1k class)"
        named = lab.wnid_to_index()[vn.wnid]
        if label is not None and label != named:
            return None, (f"label {label} but its name's wnid {vn.wnid} is class {named} (sorted-wnid order); "
                          "the label column's class order differs")
        label = named
    if label is None:
        return None, "no label (label is -1 or null: the test split?)"
    sample_id = vn.stem if vn else (PurePath(name).name.split(".", 1)[0] if name else f"{shard}:{r}")
    return Found(sample_id, vn.number if vn else None, f"{path} row {r}", label,
                 {"path": shard, "row": r, "member": name}), None


def _group_starts(pf: pq.ParquetFile) -> list[int]:
    """The first row of each row group, and the shard's row count last."""
    starts = [0]
    for g in range(pf.metadata.num_row_groups):
        starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
    return starts


def _warn_if_scattered(root: Path, found: list[Found], starts: dict[str, list[int]]) -> None:
    """One line when reading in sample-id order (the manifest's, the DataLoader's) would jump between
    row groups: each jump reads a whole group again (correct, but slower)."""
    order = sorted(found, key=lambda f: f.sample_id)
    keys = [(f.columns["path"], bisect.bisect_right(starts[f.columns["path"]], f.columns["row"])) for f in order]
    reads = 1 + sum(a != b for a, b in zip(keys, keys[1:])) if keys else 0
    groups = len(set(keys))
    if reads > 2 * groups:
        log.warning(f"{root}: the shards' rows are not in val-image order: reading in sample order reads each "
                    f"row group ~{reads / groups:.0f} times; the input will be slower (scripts/make_shards.py "
                    "writes them in order)")


def scan(root: Path, shards: list[str]) -> Scan:
    """Every row of the shards: its val name and label, without reading any image bytes."""
    found, bad, orders, starts = [], [], set(), {}
    for shard in shards:
        path = inside(root, shard, str(root))
        pf = open_shard(path)
        starts[shard] = _group_starts(pf)
        has_label = _check_schema(pf, path)
        orders.add(check_class_order(pf, path))
        has_names = pf.schema_arrow.field(IMAGE).type.get_field_index("path") >= 0
        n = pf.metadata.num_rows
        columns = [f"{IMAGE}.path"] * has_names + [LABEL] * has_label
        table = pf.read(columns=columns) if columns else None
        names = table.column(IMAGE).combine_chunks().field("path").to_pylist() if has_names else [None] * n
        labels = table.column(LABEL).to_pylist() if has_label else [None] * n
        missing = _null_bytes(pf)
        for r, (name, label) in enumerate(zip(names, labels)):
            entry, problem = _row(shard, path, r, name, label)
            if r in missing:
                entry, problem = None, "no image bytes (image.bytes is null)"
            if entry is None:
                bad.append((f"{path} row {r}", problem))
            else:
                found.append(entry)
    _warn_if_scattered(root, found, starts)
    source = f"the shards' names and '{LABEL}' column ({'; '.join(sorted(orders))})"
    meta = {"format": NAME, "shards": shard_fingerprints(root, shards)}
    return Scan(found, bad, source, meta, EXTRA_COLUMNS)


class Reader(ShardReader):
    """Row i -> its image's bytes, read from its shard (one open file per shard, one row group kept)."""

    columns = EXTRA_COLUMNS

    def __init__(self, root: Path, table: pa.Table, where: str):
        super().__init__(root, table, where)
        self.rows = table.column("row").to_pylist()
        self._files: dict[str, tuple[pq.ParquetFile, list[int]]] = {}
        self._group: tuple[tuple[str, int], pa.Array, pa.Array | None] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}, "_group": None}  # each worker opens its own files

    def where(self, i: int) -> str:
        member = f" ({self.members[i]})" if self.members[i] else ""
        return f"{self.root / str(self.shards[i])} row {self.rows[i]}{member}"

    def _file(self, shard: str) -> tuple[pq.ParquetFile, list[int]]:
        if shard not in self._files:
            pf = open_shard(inside(self.root, shard, self.manifest))
            self._files[shard] = (pf, _group_starts(pf))
        return self._files[shard]

    def _load(self, shard: str, g: int, pf: pq.ParquetFile) -> tuple[pa.Array, pa.Array | None]:
        if self._group is None or self._group[0] != (shard, g):
            self._group = None  # the old group's memory goes before the new one is read
            try:
                image = pf.read_row_group(g, columns=[IMAGE], use_threads=False).column(IMAGE).combine_chunks()
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{self.root / shard}: row group {g} unreadable (damaged?): {exc}") from None
            names = image.field("path") if image.type.get_field_index("path") >= 0 else None
            self._group = ((shard, g), image.field("bytes"), names)
        return self._group[1], self._group[2]

    def read(self, i: int) -> bytes:
        shard, row = self.shards[i], self.rows[i]
        pf, starts = self._file(shard)
        if row is None or not 0 <= row < starts[-1]:
            raise InputError(f"{self.where(i)}: the shard has {starts[-1]} rows now; it changed since the manifest "
                             "was built: rebuild it")
        g = bisect.bisect_right(starts, row) - 1
        data, names = self._load(shard, g, pf)
        j = row - starts[g]
        if self.members[i] is not None and (names is None or names[j].as_py() != self.members[i]):
            now = names[j].as_py() if names is not None else None
            raise InputError(f"{self.where(i)}: the shard holds {now!r} there now; it changed since the manifest "
                             "was built: rebuild it")
        value = data[j].as_py()
        if value is None:
            raise InputError(f"{self.where(i)}: no image bytes")
        return value
