"""Which channels hear a page: the route of its Deployment, and the levels the page is for.

Pure: a Deployment's facts (namespace, labels, the ``rollbackd.io/team``
annotation) choose the first matching route, else the default route; the
page's kind and reason choose the levels; the route gives the channels.

- on-call hears about every rollback: started, completed, superseded, dry
  runs, escalations;
- the lead level is paged as well when a human must act now: any
  escalation (verification failed, a manual rollback is needed, the rollback
  could not finish), except "not caused by a recent rollout" and "paused by
  a human", which reach the lead only when still unresolved
  ``escalate_after`` later (``rollbackd.notify.reescalate``);
- a re-escalation by time (``details["level"] == "lead"``) goes to the lead
  level only: on-call already has that page, it is not repeated (unless the
  lead's channel is down: its failover copy goes to on-call);
- a failover copy stays within its page's levels: an on-call page never
  climbs to the lead.

Without ``notify.routes`` there is one default route whose on-call level is
every channel and which has no lead level: rollbackd behaves as it did with
one audience.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from rollbackd.model import ANNOTATION_PREFIX, StrEnum, Target
from rollbackd.notify.model import (
    DETAIL_FAILOVER_FROM,
    DETAIL_REASON_CODE,
    Notification,
    NotificationKind,
)
from rollbackd.reasons import ReasonCode

if TYPE_CHECKING:
    from rollbackd.config.notify import NotifySettings

__all__ = [
    "ANNOTATION_TEAM",
    "DETAIL_LEVEL",
    "DETAIL_ROUTE",
    "ONCALL_FIRST",
    "Level",
    "Route",
    "RouteChoice",
    "Router",
    "TargetFacts",
    "audience",
    "choose_route",
    "levels_for",
    "routes_from_settings",
]

log = structlog.get_logger("rollbackd.notify")

ANNOTATION_TEAM = ANNOTATION_PREFIX + "team"
# Set on a page meant for one level only (a re-escalation by time: "lead").
DETAIL_LEVEL = "level"
# The route that chose the channels, for the reader of a page.
DETAIL_ROUTE = "route"
DEFAULT_ROUTE = "default"

# Escalations that say "the deploy did not do this" or "a human holds the
# rollout": on-call first, the lead only if still unresolved later.
ONCALL_FIRST = frozenset({ReasonCode.NO_RECENT_ROLLOUT.value, ReasonCode.PAUSED.value})


class Level(StrEnum):
    ONCALL = "oncall"
    LEAD = "lead"


@dataclass(frozen=True)
class TargetFacts:
    """What routing may look at; ``known`` is False when the Deployment was not seen."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    team: str | None = None
    known: bool = True


@dataclass(frozen=True)
class Route:
    """One entry of ``notify.routes``; empty criteria never restrict (the default matches all)."""

    name: str
    oncall: tuple[str, ...]
    lead: tuple[str, ...] = ()
    escalate_after: timedelta | None = None
    namespaces: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    teams: frozenset[str] = frozenset()
    default: bool = False

    def matches(self, facts: TargetFacts) -> bool:
        if self.default:
            return True
        if self.namespaces and facts.namespace not in self.namespaces:
            return False
        if any(facts.labels.get(key) != value for key, value in self.labels.items()):
            return False
        return not self.teams or facts.team in self.teams

    def channels(self, level: Level) -> tuple[str, ...]:
        return self.oncall if level is Level.ONCALL else self.lead


@dataclass(frozen=True)
class RouteChoice:
    route: Route
    defaulted: bool  # no route but the default one matched


def choose_route(routes: Sequence[Route], facts: TargetFacts) -> RouteChoice:
    """The first route that matches (config order), else the default route."""
    for route in routes:
        if not route.default and route.matches(facts):
            return RouteChoice(route, defaulted=False)
    default = next((r for r in routes if r.default), None)
    if default is None:  # load-time checks make this unreachable from a config
        raise ValueError("no default route")
    return RouteChoice(default, defaulted=True)


def levels_for(n: Notification) -> frozenset[Level]:
    """The levels a page is for (see the module docstring)."""
    if n.details.get(DETAIL_LEVEL) == Level.LEAD.value:
        # Its failover copy (the lead's channel is down) falls back to on-call.
        if n.details.get(DETAIL_FAILOVER_FROM):
            return frozenset({Level.ONCALL, Level.LEAD})
        return frozenset({Level.LEAD})
    if (
        n.kind is NotificationKind.ESCALATION
        and not n.resolves
        and str(n.details.get(DETAIL_REASON_CODE) or "") not in ONCALL_FIRST
    ):
        return frozenset({Level.ONCALL, Level.LEAD})
    return frozenset({Level.ONCALL})


def audience(n: Notification, route: Route) -> frozenset[str]:
    """The channels of ``route`` that ``n`` is for."""
    return frozenset(name for level in levels_for(n) for name in route.channels(level))


def routes_from_settings(notify: NotifySettings) -> tuple[Route, ...]:
    """The configured routes in order; without any, every channel on-call and no lead."""
    if not notify.routes:
        return (Route(DEFAULT_ROUTE, oncall=notify.channel_names(), default=True),)
    routes = []
    for index, r in enumerate(notify.routes):
        match = r.match
        routes.append(
            Route(
                name=r.name or (DEFAULT_ROUTE if match is None else f"routes[{index}]"),
                oncall=tuple(r.oncall),
                lead=tuple(r.lead),
                escalate_after=r.effective_escalate_after(notify.escalate_after),
                namespaces=frozenset(match.namespaces) if match else frozenset(),
                labels=dict(match.labels) if match else {},
                teams=frozenset(match.teams) if match else frozenset(),
                default=match is None,
            )
        )
    return tuple(routes)


class Router:
    """Routes pages by the Deployment's current facts (``facts_of``: a watch-cache read)."""

    def __init__(self, routes: Sequence[Route], facts_of: Callable[[Target], TargetFacts]) -> None:
        if not any(r.default for r in routes):
            raise ValueError("expected a default route")
        self._routes = tuple(routes)
        self._facts_of = facts_of

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def route_for(self, target: Target) -> Route:
        """The route of ``target`` now (quiet: the periodic lead check asks often)."""
        return choose_route(self._routes, self._facts_of(target)).route

    def channels_for(self, n: Notification) -> frozenset[str]:
        """The channels ``n`` is for; a page only the default route takes is logged."""
        facts = self._facts_of(n.target)
        choice = choose_route(self._routes, facts)
        if choice.defaulted and len(self._routes) > 1:
            # Never silence: the default route pages; say why it was chosen.
            log.info(
                "notify_route_default",
                target=str(n.target),
                team=facts.team,
                deployment_known=facts.known,
                route=choice.route.name,
                dedup_key=n.dedup_key,
            )
        return audience(n, choice.route)
