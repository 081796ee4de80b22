"""Numbers the whole package agrees on, defined once.

Nothing here imports anything: every layer may import this module.
"""

# The package's version (pyproject.toml's), as `mlreassess.__version__` re-exports it and manifests record it.
VERSION = "0.1.0"

# ImageNet-1k: class indices 0..NUM_CLASSES-1; its val set: ILSVRC2012_val_00000001 .. _00050000.
NUM_CLASSES = 1000
MANIFEST_KINDS = ("imagenet_v1", "imagenet_v2", "patchml")  # what a manifest can be (its metadata `kind`)
NUM_VAL_IMAGES = 50_000

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

# Bootstrap resamples and confidence level (percent) of the intervals. 5,000: an interval's width
# varies by ~1.5% between bootstrap seeds (~3% at 1,000), for ~1.8x the CPU time (docs/metrics.md).
DEFAULT_BOOTSTRAP = 5000
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
# torch.compile modes (--compile-mode); reduce-overhead adds CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# --compile-when: compile every model, or only those whose saved forward time exceeds their compile time.
COMPILE_WHEN = ("always", "pays")

# Entries of a `file:` training checkpoint that hold weights. The raw weights are the default: an EMA
# copy is a different model, loaded only when asked for (--checkpoint-key state_dict_ema).
CHECKPOINT_KEYS = ("state_dict", "state_dict_ema", "model")
DEFAULT_CHECKPOINT_KEY = "state_dict"

# Multi-label sets by name (one module each in datasets/labelsets/; a test checks the two agree):
# name -> (the manifest kind it labels, the default dataset name of a build with it; None: the kind's).
LABEL_SETS = {
    "real": ("imagenet_v1", None),  # Beyer et al. 2020, the V1 default
    "shankar": ("imagenet_v1", "imagenet_v1_shankar"),  # Shankar et al. 2020, 20,000 val images
    "imagenet-m": ("imagenet_v1", "imagenet_m"),  # Vasudevan et al. 2022, 68 val images
    "anzaku-v2": ("imagenet_v2", None),  # Anzaku et al.'s refined ImageNetV2 labels (the paper's)
}
DEFAULT_V1_LABEL_SET = "real"
DEFAULT_V2_LABEL_SET = "anzaku-v2"
# A build stops when fewer of its images than this (percent) have their original label in their
# label set: ReaL agrees for 90.0% of the 50,000 val images (93.0% of the mini set), Anzaku et al.'s
# V2 labels for 89.1%; a file shifted by one image, or made for other images, for about 0.1-0.3%.
DEFAULT_MIN_AGREEMENT = 50.0
# ... judged only on at least this many images with a label set (a handful can disagree by chance).
MIN_AGREEMENT_IMAGES = 10
# Beyond the oracle (SPEC 8, docs/metrics.md): sets the model picks itself. Headline parameters
# (evaluate options) and the grids their curves are drawn over (point estimates, no interval).
# tau = 0.1 > 1 / (K + 1) for the default K = 10: a threshold set is then always exact from the top-K.
DEFAULT_SET_TAU = 0.1
DEFAULT_SET_MASS = 0.9  # = the "naive" sets of Angelopoulos et al. at alpha = 0.1
DEFAULT_CONFORMAL_ALPHA = 0.1
SET_TAU_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SET_MASS_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
# mAP over classes is not a sum over samples: each resample re-ranks every class (cost ~ B x positives,
# ~30 ns each: results/benchmarks/metrics.md), so its interval uses the first this-many resamples.
DEFAULT_MAP_BOOTSTRAP = 100
# Benchmark windows (`bench infer`, `bench data`): at least this many timed batches, and samples read,
# so the decode workers' start-up and the batches they made ahead are a small part of the figure.
BENCH_TIMED_BATCHES = 150
BENCH_MIN_SAMPLES = 8192
