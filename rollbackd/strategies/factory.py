"""The strategy factory: which Strategy rolls a given Deployment back."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rollbackd.strategies import Strategy
from rollbackd.strategies.rolling import RollingStrategy

# One entry per implementation; blue/green and canary register here.
STRATEGIES: Mapping[str, Callable[[], Strategy]] = {RollingStrategy.name: RollingStrategy}
DEFAULT = RollingStrategy.name


def by_name(name: str) -> Strategy:
    """The strategy called ``name``; KeyError names the known ones."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise KeyError(
            f"unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        ) from None
