"""Escalation routes: which named channels hear a Deployment's pages, per level.

``notify.routes`` is an ordered list; the first route whose ``match`` fits a
Deployment (namespace, labels, the ``rollbackd.io/team`` annotation) wins,
and the last route, without ``match``, is the default. Each route names the
channels of two levels: ``oncall`` hears about every rollback, ``lead`` is
paged when a human must act now, or when the problem is still unresolved
``escalate_after`` later. What is checked here, at load, with the key path:
a route naming a channel that does not exist, a level without channels, no
default route, a route after the default one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pydantic import Field, model_validator

from rollbackd.config.types import NamespaceName, NonEmptyStr, PositiveDuration, _Section

__all__ = ["RouteMatch", "RouteSettings", "route_problems"]


class RouteMatch(_Section):
    """Every criterion given must hold; inside one list, any entry will do."""

    namespaces: list[NamespaceName] = Field(default_factory=list)
    # Deployment labels, all of them equal.
    labels: dict[NonEmptyStr, str] = Field(default_factory=dict)
    # Values of the Deployment annotation rollbackd.io/team.
    teams: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> RouteMatch:
        if not (self.namespaces or self.labels or self.teams):
            raise ValueError(
                "expected namespaces, labels or teams (leave match out for the default route)"
            )
        return self


class RouteSettings(_Section):
    name: NonEmptyStr | None = None  # for logs and pages; defaults to "routes[i]"
    match: RouteMatch | None = None  # None: the default route (last in the list)
    oncall: list[NonEmptyStr] = Field(min_length=1)
    lead: list[NonEmptyStr] = Field(min_length=1)
    # Unresolved this long after its page: the lead level is paged once; null: never.
    # Absent: notify.escalate_after.
    escalate_after: PositiveDuration | None = None

    def effective_escalate_after(self, default: timedelta | None) -> timedelta | None:
        # "escalate_after: null" (never) differs from leaving it out (the global value).
        return self.escalate_after if "escalate_after" in self.model_fields_set else default


def route_problems(routes: Sequence[RouteSettings], channels: Sequence[str]) -> list[str]:
    """What is wrong with ``routes`` given the defined ``channels``; empty when nothing."""
    if not routes:
        return []
    problems: list[str] = []
    known = set(channels)
    defined = ", ".join(sorted(known)) or "none"
    for index, route in enumerate(routes):
        for level in ("oncall", "lead"):
            names: list[str] = getattr(route, level)
            for position, name in enumerate(names):
                if name not in known:
                    problems.append(
                        f"routes[{index}].{level}[{position}]: no channel named {name!r}"
                        f" (defined: {defined})"
                    )
            if len(set(names)) != len(names):
                problems.append(f"routes[{index}].{level}: a channel is named twice")
    defaults = [i for i, route in enumerate(routes) if route.match is None]
    if not defaults:
        problems.append(
            f"routes[{len(routes) - 1}]: no default route: end the list with a route without "
            "match, so a Deployment no route matches is still paged"
        )
    elif defaults[0] != len(routes) - 1:
        problems.append(
            f"routes[{defaults[0] + 1}]: never used: routes[{defaults[0]}] has no match"
            " and takes every Deployment (the default route goes last)"
        )
    return problems
