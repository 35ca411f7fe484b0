"""The package version, in the lowest layer so that anything (a checkpoint manifest) may record it."""

__version__ = "0.1.0"
