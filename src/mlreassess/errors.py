"""User-facing errors: the CLI prints them as one line, never as a traceback."""

from typing import Any


class MlreassessError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The message should name the file (and row or sample) and what is wrong with it.
    """


class InputError(MlreassessError):
    """Bad input data: a malformed file, a box outside its image, an unknown label, ..."""


def short_repr(value: Any, limit: int = 60) -> str:
    """repr cut to `limit` characters: a hostile value must not flood a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit`: a library's page-long error as one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit] if lines else ''}".rstrip(": ")
