"""`imagenet-m`: ImageNet-Major (Vasudevan et al. 2022, "When does dough become a bagel?"), the 68
val images of "major" mistakes that several top models make, as its own dataset (`imagenet_m`).

Read from Shankar et al.'s `human_accuracy_v3.0.0.json` (see `shankar`): its `imagenet_m` list names
the images, their labels are their correct and unclear classes in `initial_annots`. All 68 are
kept, as TFDS's `imagenet_m` split and the ImageNet-M task of shift-happens evaluate them.
"""

from __future__ import annotations

from pathlib import Path

from mlreassess.datasets.labelsets.base import LabelSet, V1Labels
from mlreassess.datasets.labelsets.shankar import multi_labels, read_human_accuracy


def read(path: Path) -> V1Labels:
    ha = read_human_accuracy(path)
    return V1Labels(labels={n: multi_labels(ha.annots[n]) for n in ha.imagenet_m}, subset=True)


LABEL_SET = LabelSet(
    name="imagenet-m",
    kind="imagenet_v1",
    title="ImageNet-M (Vasudevan et al. 2022), 68 val images",
    file_hint="human_accuracy_v3.0.0.json (its imagenet_m list; TFDS imagenet2012_multilabel)",
    read=read,
)
