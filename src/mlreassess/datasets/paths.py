"""Paths a dataset names stay inside its root: the one check every reader of image files uses.

A manifest, a PatchML source id or a shard index is data that someone else may have written; a path
it names is taken relative to the dataset's root folder and must stay inside it *as written*:
relative, no `..` part, no empty name, no NUL. `/abs/x.JPEG`, `../x.JPEG` and `a/../../x` are refused
with one line naming the file and the sample, before any image is opened.

Symlinks inside the root are followed, wherever they point (docs/data.md, "Paths and symlinks"):
the root folder is the user's own data, and a link in it was made by whoever made the folder
(ImageFolder trees of links into a flat val/ are common); a manifest cannot create one.

File names that are not valid UTF-8 (`decoded_name`) cannot be stored in a manifest (parquet
strings are UTF-8); listing code asks here what to do with them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mlreassess.errors import InputError, short_repr

# A `..` part anywhere (`..`, `../x`, `a/../b`, `a/..`), an absolute path, a Windows drive or a NUL.
_ESCAPES = r"(^|/)\.\.(/|$)|^/|^[A-Za-z]:[/\\]|\x00|^$"


def relative_problem(relative: object) -> str | None:
    """Why `relative` may not name a file under a dataset root (None: it may)."""
    if not isinstance(relative, str) or not relative:
        return "not a non-empty relative path"
    if "\0" in relative:
        return "holds a NUL character"
    if os.path.isabs(relative) or (len(relative) > 2 and relative[1] == ":" and relative[2] in "/\\"):
        return "is an absolute path (paths are relative to the dataset root)"
    if ".." in Path(relative).parts:
        return "has a '..' part (it would leave the dataset root)"
    return None


def bad_relative(paths) -> pa.Array:
    """Per path of a string array, whether `relative_problem` would refuse it (one regex pass)."""
    return pc.fill_null(pc.match_substring_regex(paths, _ESCAPES), True)


# A separator or NUL anywhere, '.' or '..' alone, or nothing but spaces: not one plain file name.
_NOT_A_NAME = r"[/\\\x00]|^\.\.?$|^\s*$"


def bad_names(names) -> pa.Array:
    """Per name of a string array, whether `results.check_name` would refuse it as one path part."""
    return pc.fill_null(pc.match_substring_regex(names, _NOT_A_NAME), True)


def inside_root(root: str | os.PathLike, relative: str, where: str) -> Path:
    """`root / relative`, or InputError naming `where` when `relative` would leave `root`."""
    problem = relative_problem(relative)
    if problem is not None:
        raise InputError(f"{where}: path {short_repr(relative)} {problem}")
    return Path(root) / relative


def check_path_column(table: pa.Table, where: str, column: str = "path") -> None:
    """Every non-null value of `column` stays inside the dataset root (one vectorised pass; the
    first offender named, with its sample)."""
    if column not in table.column_names:
        return
    paths = table.column(column)
    if not (pa.types.is_string(paths.type) or pa.types.is_large_string(paths.type)):
        return  # the schema check names the type
    bad = pc.fill_null(pc.match_substring_regex(paths, _ESCAPES), False)
    if len(paths) == 0 or not pc.any(bad).as_py():
        return
    i = pc.index(bad, True).as_py()
    ids = table.column("sample_id") if "sample_id" in table.column_names else None
    sample = f"sample {short_repr(ids[i].as_py())}: " if ids is not None else f"row {i}: "
    problem = relative_problem(paths[i].as_py()) or "leaves the dataset root"
    raise InputError(f"{where}: {sample}{column} {short_repr(paths[i].as_py())} {problem}")


def decoded_name(name: str) -> str | None:
    """`name` (a file name from os.listdir / Path.iterdir) if it is valid UTF-8, else None: Python
    hands undecodable bytes over as lone surrogates, which no manifest can store."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


NOT_UTF8 = "file name is not valid UTF-8 (rename it)"


def printable(path: str | os.PathLike) -> str:
    """A path fit for a one-line message and a manifest's metadata: bytes that are not UTF-8 shown as
    `\\xff` escapes instead of lone surrogates (which no parquet string or terminal takes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
