"""`anzaku-v2`: the refined ImageNetV2 labels of Anzaku et al., the file behind the paper's V2 results.

Published as `assets/ImageNetV2_refined_labels/imagenetv2_refined_labels.json` in esla/Multilabelfy
(Apache-2.0), for `imagenetv2-matched-frequency`: one JSON object of 10,000 keys `<sha1>.jpeg`
(no class folder), each a list of class indices written as strings (`["356", "359"]`), 129 of
them empty. Its label counts are the paper's Table 1 V2 row.

The same reader takes any V2 multi-label file of that shape (SPEC 1): JSON `{key: [labels]}` with
labels as integers or integer strings, or CSV `key,labels` with labels separated by spaces (a header
line is skipped). A key is `<sha1>.jpeg`, `<sha1>`, `<class>/<sha1>.jpeg` with the class as its
number or its wnid, or a longer relative path; `datasets.imagenetv2` matches keys to images.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from mlreassess.datasets.labelsets.base import LabelSet, label_list, read_json
from mlreassess.errors import InputError, short_repr
from mlreassess.io import read_text

WHAT = "ImageNetV2 labels (JSON {key: [labels]} or CSV key,labels)"
Entry = tuple[str, tuple[int, ...], str]  # (key, labels, where in the file)
_INTEGER = re.compile(r"[+-]?[0-9]+")


def read(path: Path) -> list[Entry]:
    """(key, labels, where) of every entry of a JSON or CSV V2 label file, in file order."""
    if not path.is_file():
        raise InputError(f"{path}: {WHAT} not found")
    head = path.read_bytes()[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if path.suffix.lower() == ".json" or head.startswith((b"{", b"[")):
        return _read_json(path)
    return _read_csv(path)


def _read_json(path: Path) -> list[Entry]:
    data = read_json(path, WHAT)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{key: [labels]}}, got a JSON {type(data).__name__}")
    if not data:
        raise InputError(f"{path}: no entries (an empty JSON object)")
    entries = []
    for key, value in data.items():
        where = f"{path}: key {short_repr(key)}"
        if not key.strip():
            raise InputError(f"{where}: empty key")
        entries.append((key, label_list(value, where), where))
    return entries


def _read_csv(path: Path) -> list[Entry]:
    try:
        text = read_text(path)
    except InputError as exc:
        raise InputError(f"{exc}; expected {WHAT}") from None
    entries = []
    for i, row in enumerate(csv.reader(text.splitlines())):
        where = f"{path}:{i + 1}"
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise InputError(f"{where}: expected 2 fields 'key,labels', got {len(row)}")
        key, tokens = row[0].strip(), row[1].split()
        if i == 0 and not all(_INTEGER.fullmatch(t) for t in tokens):
            continue  # a header row ('path,labels'); a first row of numbers is data, checked below
        if not key:
            raise InputError(f"{where}: empty key")
        entries.append((key, label_list(tokens, f"{where}: key {short_repr(key)}"), where))
    if not entries:
        raise InputError(f"{path}: no entries; expected {WHAT}")
    return entries


LABEL_SET = LabelSet(
    name="anzaku-v2",
    kind="imagenet_v2",
    title="refined ImageNetV2 labels (Anzaku et al.), the paper's V2 multi-labels",
    file_hint="imagenetv2_refined_labels.json of esla/Multilabelfy (assets/ImageNetV2_refined_labels/), "
              "or any JSON {key: [labels]} / CSV key,labels",
    read=read,
)
