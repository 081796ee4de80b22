"""Multi-label sets by name (`real`, `shankar`, `imagenet-m`, `anzaku-v2`), one module each, each read
in its published format; `registry` lists them, `agreement` checks a set against the original labels."""

from mlreassess.datasets.labelsets.base import LabelSet, V1Labels
from mlreassess.datasets.labelsets.registry import default_dataset, get, label_file, label_sets, provenance, resolve

__all__ = ["LabelSet", "V1Labels", "default_dataset", "get", "label_file", "label_sets", "provenance", "resolve"]
