"""Strategy routes: one module per strategy, one small interface (:class:`StrategyRoute`)."""

from __future__ import annotations

from typing import Any

from flashdist.strategies.base import OptimizerChoice, StrategyRoute

# Filled by the strategy modules: Lightning strategy class → route class. Checked in order,
# most specific first; anything unlisted takes the default route.
_ROUTES: list[tuple[type, type[StrategyRoute]]] = []


def register_route(strategy_type: type, route: type[StrategyRoute]) -> None:
    _ROUTES.insert(0, (strategy_type, route))


def route_for(strategy: Any) -> StrategyRoute:
    """The route for a live Lightning strategy, cached on it so the choice can be reported."""
    cached = getattr(strategy, "_flashdist_route", None)
    if cached is not None:
        return cached
    route_cls = next((route for kind, route in _ROUTES if isinstance(strategy, kind)), StrategyRoute)
    route = route_cls(strategy)
    strategy._flashdist_route = route
    return route


__all__ = ["OptimizerChoice", "StrategyRoute", "register_route", "route_for"]


# The strategy modules register their routes on import; imported last, as they use register_route.
from flashdist.strategies import deepspeed as _deepspeed  # noqa: E402,F401
from flashdist.strategies import fsdp as _fsdp  # noqa: E402,F401
