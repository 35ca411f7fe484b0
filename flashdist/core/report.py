"""What a person sees around a fit: the plan before training, a table and plots after.

Placeholder for the CLI work: no callbacks yet.
"""

from __future__ import annotations

from typing import Any


def report_callbacks() -> list[Any]:
    return []
