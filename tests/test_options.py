"""The options schema: one definition gives the CLI flags, the YAML keys and the validation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from mlreassess.cli.main import build_parser
from mlreassess.config import load_config
from mlreassess.errors import InputError
from mlreassess.options import (
    EvaluateOptions,
    ImagenetV2Options,
    ImagenetValOptions,
    InferOptions,
    PatchMLOptions,
    options_of,
    result_options,
)

# (command words, schema, YAML section path). The study config spells `--seed` as `seeds` (a list).
SURFACES = [
    (("infer",), InferOptions, ("inference",)),
    (("evaluate",), EvaluateOptions, ("evaluate",)),
    (("data", "imagenet-val"), ImagenetValOptions, ("datasets", "imagenet_v1")),
    (("data", "imagenetv2"), ImagenetV2Options, ("datasets", "imagenet_v2")),
    (("patchml",), PatchMLOptions, ("datasets", "patchml")),
]
YAML_SPELLING = {("patchml", "seed"): "seeds"}


def _subparser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _cli_dests(words) -> set[str]:
    return {a.dest for a in _subparser(words)._actions}


@pytest.mark.parametrize("words, cls, _", SURFACES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else None)
def test_every_result_option_is_a_cli_flag(words, cls, _):
    missing = {o.name for o in options_of(cls) if o.spec.result} - _cli_dests(words)
    assert not missing, f"mlreassess {' '.join(words)} lacks flags for {missing}"


@pytest.mark.parametrize("words, cls, section", SURFACES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else None)
def test_every_result_flag_is_a_yaml_key_and_back(words, cls, section, tmp_path):
    """Each result-affecting option is accepted as a YAML key; each YAML key of the section is an option
    that has a CLI flag (or its documented YAML spelling)."""
    accepted = _yaml_keys_accepted(cls, section, tmp_path)
    for o in options_of(cls):
        key = YAML_SPELLING.get((words[0], o.name), o.name)
        if o.spec.result:
            assert key in accepted, f"{'.'.join(section)}: no YAML key for --{o.name.replace('_', '-')}"
    flags = _cli_dests(words)
    for key in accepted:
        name = {v: k[1] for k, v in YAML_SPELLING.items()}.get(key, key)
        assert name in flags or key == "render", f"YAML key {'.'.join(section)}.{key} has no CLI flag"


def _yaml_keys_accepted(cls, section, tmp_path) -> set[str]:
    """The keys the config reader accepts in `section`, read from its 'unknown key' message."""
    data = _base_config(tmp_path)
    node = data
    for part in section[:-1]:
        node = node.setdefault(part, {})
    node[section[-1]] = {**_required(section, tmp_path), "no_such_key": 1}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="unknown key") as info:
        load_config(path)
    known = str(info.value).split("known here: ")[1].rstrip(")")
    return {k.strip() for k in known.split(",")}


def _base_config(tmp_path: Path) -> dict:
    (tmp_path / "boxes.csv").write_text("ImageId,PredictionString\n")
    (tmp_path / "images").mkdir(exist_ok=True)
    return {"out": "o", "datasets": {"patchml": {"boxes": "boxes.csv", "images": "images"}}, "models": ["m"],
            "report": False}


def _required(section, tmp_path) -> dict:
    if section[-1] in ("imagenet_v1", "imagenet_v2"):
        return {"root": "images"}
    if section[-1] == "patchml":
        return {"boxes": "boxes.csv", "images": "images"}
    return {}


def test_schema_validates_whoever_builds_it():
    with pytest.raises(InputError, match=r"--topk: must be at most 1000"):
        InferOptions(topk=1001)
    with pytest.raises(InputError, match=r"--precision: 'fp64' is not one of"):
        InferOptions(precision="fp64")
    with pytest.raises(InputError, match=r"--canvas: must be at most 4096"):
        PatchMLOptions(boxes="b.csv", seed=1, canvas=10**20)
    with pytest.raises(InputError, match=r"--source-pattern .*must contain '\{id\}'"):
        PatchMLOptions(boxes="b.csv", seed=1, source_pattern="{name}.jpg")
    with pytest.raises(InputError, match=r"--seed: required"):
        PatchMLOptions(boxes="b.csv")
    with pytest.raises(InputError, match=r"--ci: expected a finite number, got nan"):
        EvaluateOptions(ci=float("nan"))
    with pytest.raises(InputError, match=r"--bootstrap: must be at most 100000"):
        EvaluateOptions(bootstrap=10**12)
    with pytest.raises(InputError, match=r"--batch-size: must be at most 65536"):
        InferOptions(batch_size=10**30)


def test_cli_range_errors_are_one_line(capsys):
    from mlreassess.cli import main

    assert main(["infer", "--data", "x.parquet", "--model", "m", "--out", "o", "--topk", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlreassess: error: --topk: must be at least 1, not 0"]


def test_result_options_are_what_changes_outputs():
    assert set(result_options(InferOptions())) == {"weights", "precision", "crop", "topk", "save_softmax",
                                                   "checkpoint_key", "test_input_size", "decode"}
    assert result_options(InferOptions(precision="bf16"))["precision"] == "bf16"


def test_infer_and_evaluate_options_share_no_name():
    """`mlreassess.assess(**options)` takes both schemas' options by name: one name, one meaning."""
    from mlreassess.options import EvaluateOptions, InferOptions

    assert not {o.name for o in options_of(InferOptions)} & {o.name for o in options_of(EvaluateOptions)}
