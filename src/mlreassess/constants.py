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
