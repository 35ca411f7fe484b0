"""Text tasks."""

from flashdist.text.classification import TextClassifier

__all__ = ["TextClassifier"]
