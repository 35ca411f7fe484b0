"""Strategy names flashdist accepts, resolved to Lightning strategy objects.

Unknown to flashdist → passed to Lightning unchanged (its own names and objects keep working).
"""

from __future__ import annotations

from typing import Any


def resolve_strategy(strategy: Any, accelerator: Any) -> Any:
    return strategy
