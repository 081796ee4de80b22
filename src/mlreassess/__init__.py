"""mlreassess: re-assess ImageNet classifiers as multi-label predictors.

Python API: `mlreassess.assess(model, data=[...], name=...)` and `mlreassess.predict(...)`
(docs/python-api.md); the CLI is `mlreassess --help`.
"""

from mlreassess.api import assess, predict
from mlreassess.constants import VERSION as __version__

__all__ = ["assess", "predict", "__version__"]
