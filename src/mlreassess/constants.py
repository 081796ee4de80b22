"""Numbers the whole package agrees on, defined once.

Nothing here imports anything: every layer may import this module.
"""

# ImageNet-1k: class indices 0..NUM_CLASSES-1.
NUM_CLASSES = 1000

# ASMA on ImageNet V1 and V2 averages the subgroups with these label counts (the paper, Sec. 4.2:
# "calculated for samples with one to five labels").
IMAGENET_ASMA_RANGE = (1, 2, 3, 4, 5)

# ASMA leaves out (but still reports) a label-count subgroup with fewer samples than this: one
# canvas, or a handful of images, must not weigh as much as a group of thousands.
DEFAULT_MIN_GROUP_N = 30

# PatchML: the paper's patch counts per canvas (Table 2), canvas side and smallest box side kept.
PATCHML_DEFAULT_COUNTS = (2, 3, 4, 6, 9)
PATCHML_DEFAULT_CANVAS = 448
PATCHML_DEFAULT_MIN_BOX_SIDE = 100
PATCHML_DEFAULT_SEEDS = (1, 2, 3, 4, 5)

# Bootstrap resamples and confidence level (percent) of the intervals.
DEFAULT_BOOTSTRAP = 1000
DEFAULT_CI_LEVEL = 95.0

# ImageNetV2 variants (folder `imagenetv2-<variant>-format-val`).
IMAGENETV2_VARIANTS = ("matched-frequency", "threshold-0.7", "top-images")

# PatchML resize filters (Pillow's names) and the default.
PATCHML_RESAMPLE_CHOICES = ("nearest", "bilinear", "bicubic", "lanczos")
PATCHML_DEFAULT_RESAMPLE = "bicubic"
# PatchML source images in a folder: the file name of a source image from its id.
PATCHML_DEFAULT_SOURCE_PATTERN = "{id}.JPEG"

# ImageNet val input formats (`datasets.formats`): image files, Hugging Face parquet shards,
# WebDataset tar shards. `data imagenet-val --format` overrides the detection.
INPUT_FORMATS = ("files", "hf-parquet", "webdataset")

# Inference choices: autocast precisions, and crops (none = resize-only, the paper's setting).
PRECISIONS = ("fp32", "bf16", "fp16")
CROPS = ("none", "center")
DEVICES = ("cuda", "cpu")
# Where images are decoded and resized: cpu = PIL in DataLoader workers (the reference pixels);
# gpu = torchvision on the inference device (nvjpeg on CUDA; the same tensor code on a CPU device).
DECODES = ("cpu", "gpu")

# Entries of a `file:` training checkpoint that hold weights. The raw weights are the default: an EMA
# copy is a different model, loaded only when asked for (--checkpoint-key state_dict_ema).
CHECKPOINT_KEYS = ("state_dict", "state_dict_ema", "model")
DEFAULT_CHECKPOINT_KEY = "state_dict"
