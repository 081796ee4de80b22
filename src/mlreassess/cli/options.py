"""CLI flags generated from the options schema (`mlreassess.options`), so choices, defaults and help
are written once. Bounds are checked by the schema's dataclasses (one-line errors)."""

from __future__ import annotations

import argparse
from typing import Any, Iterable

from mlreassess.options import Option, options_of


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 2,3,4,6,9") from None


def _or_words(base: type, words: tuple[str, ...]):
    """An argparse type: one of `words`, or a value of `base`."""
    def convert(text: str):
        if text in words:
            return text
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {base.__name__} or {' or '.join(words)}") from None

    return convert


def _help(opt: Option, default: Any) -> str:
    text = opt.spec.help
    if default is not None and opt.base is not bool and "default" not in text:
        text += f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"
    return text


def _argument(opt: Option, default: Any) -> tuple[str, dict[str, Any]]:
    """(flag, add_argument keywords) for one option."""
    kwargs: dict[str, Any] = {"dest": opt.name, "default": default, "help": _help(opt, default)}
    if opt.base is bool:
        if default:  # an option that is on by default is turned off by --no-<name>
            return "--no-" + opt.name.replace("_", "-"), {**kwargs, "action": "store_false"}
        return opt.flag, {**kwargs, "action": "store_true"}
    kwargs["type"] = int_list if opt.base is tuple else _or_words(opt.base, opt.spec.words) if opt.spec.words else opt.base
    if opt.spec.choices is not None:
        kwargs["choices"] = opt.spec.choices
    if opt.spec.metavar:
        kwargs["metavar"] = opt.spec.metavar
    if default is None and not opt.optional:
        kwargs["required"] = True
    return opt.flag, kwargs


def add_options(parser: argparse.ArgumentParser, cls: type, only: Iterable[str] | None = None,
                exclude: Iterable[str] = (), defaults: dict[str, Any] | None = None) -> None:
    """Add a flag for each CLI option of schema `cls` (or only those named): required ones first, then
    in schema order."""
    only, exclude, defaults = set(only or ()), set(exclude), defaults or {}
    for opt in sorted(options_of(cls), key=lambda o: not (o.default is None and not o.optional)):
        if not opt.spec.cli or (only and opt.name not in only) or opt.name in exclude:
            continue
        flag, kwargs = _argument(opt, defaults.get(opt.name, opt.default))
        parser.add_argument(flag, **kwargs)


def options_from(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of schema `cls` from the parsed flags it has (validated by the dataclass)."""
    values = {o.name: getattr(args, o.name) for o in options_of(cls) if hasattr(args, o.name)}
    return cls(**{**values, **overrides})
