"""mlreassess: re-assess ImageNet classifiers as multi-label predictors."""

__version__ = "0.1.0"
