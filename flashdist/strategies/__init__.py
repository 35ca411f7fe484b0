"""Strategy routes: one module per strategy, one small interface (:class:`StrategyRoute`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flashdist.plan import StepPlan
from flashdist.strategies.base import OptimizerChoice, RouteAware, StrategyRoute

# Filled by the strategy modules: Lightning strategy class → route class. Checked in order,
# most specific first; anything unlisted takes the default route.
_ROUTES: list[tuple[type, type[StrategyRoute]]] = []


def register_route(strategy_type: type, route: type[StrategyRoute]) -> None:
    _ROUTES.insert(0, (strategy_type, route))


def route_for(strategy: Any, plan: Callable[[], StepPlan] | None = None) -> StrategyRoute:
    """A new route for a live Lightning strategy; ``plan`` gives the fit's step plan when asked.

    flashdist's Trainer makes one per fit (its ``FitRun.route``) and hands it the plan; a
    strategy of flashdist's that consults its route (:class:`RouteAware`) is given it here.

    Example:
        >>> from lightning.pytorch.strategies import DDPStrategy
        >>> route_for(DDPStrategy()).name
        'ddp'
    """
    route_cls = next((route for kind, route in _ROUTES if isinstance(strategy, kind)), StrategyRoute)
    route = route_cls(strategy, plan)
    if isinstance(strategy, RouteAware):
        strategy.route = route
    return route


def route_name(strategy: Any) -> str:
    """The name of the route a fit under ``strategy`` takes ("ddp", "deepspeed", "fsdp", ...), without making one.

    For checks before launch: :func:`route_for` also hands a route to the strategy, which only a fit should do.

    Example:
        >>> from lightning.pytorch.strategies import DDPStrategy
        >>> route_name(DDPStrategy())
        'ddp'
    """
    return next((route.name for kind, route in _ROUTES if isinstance(strategy, kind)), StrategyRoute.name)


__all__ = ["OptimizerChoice", "RouteAware", "StrategyRoute", "register_route", "route_for", "route_name"]


# The strategy modules register their routes on import; imported last, as they use register_route.
from flashdist.strategies import deepspeed as _deepspeed  # noqa: E402,F401
from flashdist.strategies import fsdp as _fsdp  # noqa: E402,F401
