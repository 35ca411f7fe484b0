"""Image tasks."""

from flashdist.image.classification import ImageClassifier

__all__ = ["ImageClassifier"]
