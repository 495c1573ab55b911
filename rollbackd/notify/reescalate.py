"""Re-escalation by time: a problem still unresolved ``escalate_after`` later pages the lead, once.

What is unresolved (the journal says it):

- an escalation record, or a rollback that ended ESCALATED, whose page was
  meant (an outbox row not withdrawn: members of a grouped page are
  represented by the group's record), or that another leader paged (the
  record adopted from the Deployment's ``rollbackd.io/escalated``, see
  ``rollbackd.escalation``: the clock runs from that leader's page);
- a rollback stuck in a phase that is not terminal (PLANNING, ROLLING_BACK,
  VERIFYING...) since it started.

What resolves it, and stops the clock:

- the rollback itself reaching a terminal phase (completed, superseded...);
- a later ROLLBACK_COMPLETED rollback of the same Deployment;
- the alert clearing: a ``signal_resolved`` decision for the Deployment
  after the page (for a grouped page: for every member);
- a human taking it: the Deployment annotation
  ``rollbackd.io/acknowledged: <record id>``.

"Once" is derived from the journal, not from memory: the lead page has the
record's id as dedup key and the kind ``escalation``, so the outbox stores it
once per channel (an immediate lead page, e.g. for a failed verification,
counts too), and an ``escalated_to_lead`` event is journaled after the page
is durable. A restart, a new leader reading the same journal, or a crash
between the two writes never pages the lead a second time; the on-call
level is not paged again at all. A new leader with its own journal reads
the lead's delivery from ``rollbackd.io/escalated`` (every lead channel
among the page's ``delivered``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from rollbackd.durations import format_age
from rollbackd.escalation_pages import KIND_ADOPTED
from rollbackd.incidents import decode_marks
from rollbackd.journal.rows import format_time, loads_json, parse_time
from rollbackd.model import ANNOTATION_ESCALATED, TERMINAL_PHASES, Phase, RecordKind, Target
from rollbackd.notify.model import (
    DETAIL_PHASE,
    DETAIL_REASON,
    DETAIL_REASON_CODE,
    DETAIL_ROLLBACK_ID,
    Notification,
    NotificationKind,
)
from rollbackd.notify.outbox import FAILED, WITHDRAWN
from rollbackd.notify.routing import DETAIL_LEVEL, DETAIL_ROUTE, Level, Route
from rollbackd.reasons import ReasonCode

if TYPE_CHECKING:
    from rollbackd.journal import Journal

__all__ = [
    "ANNOTATION_ACKNOWLEDGED",
    "KIND_LEAD_PAGED",
    "LeadEscalation",
    "Unresolved",
    "is_due",
    "lead_page",
]

log = structlog.get_logger("rollbackd.notify")

ANNOTATION_ACKNOWLEDGED = "rollbackd.io/acknowledged"
KIND_LEAD_PAGED = "escalated_to_lead"
_GROUP_NAME = "*"  # escalation.GROUP_NAME: a namespace-wide record
_BATCH = 2000  # unresolved problems looked at per pass
_NON_TERMINAL = tuple(p.value for p in Phase if p not in TERMINAL_PHASES)


class LeadPager(Protocol):
    async def enqueue(self, n: Notification, *, not_before: datetime | None = None) -> None: ...


@dataclass(frozen=True)
class Unresolved:
    """A record whose problem may still be open; ``since``: when its page went out."""

    record_id: str
    target: Target
    phase: Phase
    since: datetime
    reason_code: str
    reason: str
    members: tuple[str, ...] = ()  # a grouped page's Deployments


def is_due(item: Unresolved, route: Route, now: datetime) -> bool:
    """Pure: the route has a lead level and a deadline, and the deadline has passed."""
    if not route.lead or route.escalate_after is None:
        return False
    return now - item.since >= route.escalate_after


def lead_page(item: Unresolved, route: Route, now: datetime) -> Notification:
    """The lead's page: the record's dedup key, so the record's resolve closes it too."""
    age = format_age(now - item.since)
    if item.phase is Phase.ESCALATED:
        what = f"still unresolved {age} after it was escalated: {item.reason}"
    else:
        what = f"rollback {item.record_id} still in {item.phase} after {age}"
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key=item.record_id,
        target=item.target,
        summary=f"{item.target}: {what}",
        details={
            DETAIL_ROLLBACK_ID: item.record_id,
            DETAIL_REASON_CODE: item.reason_code,
            DETAIL_REASON: item.reason,
            DETAIL_PHASE: str(item.phase),
            DETAIL_LEVEL: Level.LEAD.value,
            DETAIL_ROUTE: route.name,
            "unresolved_for": age,
            # A grouped page's Deployments: the lead sees them, and each is
            # marked as paged (``rollbackd.io/escalated``) once it is delivered.
            **({"deployments": list(item.members)} if item.members else {}),
        },
        created_at=now,
    )


class LeadEscalation:
    """The leader's periodic check; ``check`` is one pass (tests call it directly)."""

    def __init__(
        self,
        journal: Journal,
        pager: LeadPager,
        *,
        route_for: Callable[[Target], Route],
        annotations_of: Callable[[Target], dict[str, str] | None],
        clock: Callable[[], datetime],
        horizon: timedelta,
        interval: float,
        soonest: timedelta = timedelta(0),
    ) -> None:
        self._journal = journal
        self._pager = pager
        self._route_for = route_for
        self._annotations_of = annotations_of
        self._clock = clock
        self._horizon = horizon  # older problems are past notify.max_age: not paged
        self._interval = interval
        self._soonest = soonest  # the shortest escalate_after of any route

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("lead_escalation_check_failed")
            await asyncio.sleep(self._interval)

    async def check(self) -> list[str]:
        """Page the lead for every due, unresolved problem; returns their record ids."""
        now = self._clock()
        paged = []
        for item in await self._candidates(now):
            route = self._route_for(item.target)
            if not is_due(item, route, now) or await self._settled(item, route):
                continue
            page = lead_page(item, route, now)
            await self._pager.enqueue(page)  # durable before it is noted
            await self._journal.record_event(
                item.record_id,
                item.target,
                KIND_LEAD_PAGED,
                page.summary,
                at=now,
                data={"route": route.name, "channels": list(route.lead)},
            )
            log.warning(
                "escalated_to_lead",
                rollback_id=item.record_id,
                target=str(item.target),
                route=route.name,
                channels=list(route.lead),
                unresolved_for=format_age(now - item.since),
            )
            paged.append(item.record_id)
        return paged

    # --- what the journal says -------------------------------------------------

    async def _candidates(self, now: datetime) -> list[Unresolved]:
        """Problems of the horizon whose page was meant and that the lead has not heard of.

        Filtered in SQL, so what is settled for good (lead paged, every page
        withdrawn into a group) never crowds out a newer problem.
        """
        since = format_time(now - self._horizon)
        # Nothing younger than the shortest escalate_after can be due.
        until = format_time(now - self._soonest)
        rows = await self._journal.query(
            "SELECT * FROM rollbacks r WHERE (("
            " r.phase = ? AND COALESCE(r.finished_at, r.updated_at) BETWEEN ? AND ?"
            f") OR (r.kind = ? AND r.phase IN ({','.join('?' * len(_NON_TERMINAL))})"
            " AND r.started_at BETWEEN ? AND ?))"
            # IN over a subquery: SQLite builds each set once per query.
            " AND r.id NOT IN (SELECT rollback_id FROM events WHERE kind = ?"
            " AND rollback_id IS NOT NULL)"
            " AND (r.id IN (SELECT dedup_key FROM outbox WHERE state != ?)"
            # A page another leader delivered (read from the Deployment) was meant too.
            " OR r.id IN (SELECT rollback_id FROM events WHERE kind = ?"
            " AND rollback_id IS NOT NULL))"
            " ORDER BY r.started_at DESC LIMIT ?",
            (
                Phase.ESCALATED.value,
                since,
                until,
                RecordKind.ROLLBACK.value,
                *_NON_TERMINAL,
                since,
                until,
                KIND_LEAD_PAGED,
                WITHDRAWN,
                KIND_ADOPTED,
                _BATCH,
            ),
        )
        if len(rows) == _BATCH:
            log.warning("lead_escalation_batch_full", batch=_BATCH)
        return [_unresolved(r) for r in rows]

    async def _settled(self, item: Unresolved, route: Route) -> bool:
        """Acknowledged, already paged to the lead, or resolved (cheapest question first)."""
        annotations = self._annotations_of(item.target) or {}
        if annotations.get(ANNOTATION_ACKNOWLEDGED, "").strip() == item.record_id:
            return True
        if self._lead_paged_elsewhere(item, route.lead):
            return True
        if await self._lead_paged(item, route.lead):
            return True
        if item.phase is not Phase.ESCALATED:
            return False
        targets = [Target(item.target.namespace, m) for m in item.members] or [item.target]
        for target in targets:
            if not await self._resolved_after(target, item.since):
                return False
        return True

    def _lead_paged_elsewhere(self, item: Unresolved, lead: Sequence[str]) -> bool:
        """Another leader's page reached every lead channel, says the Deployment."""
        targets = [Target(item.target.namespace, m) for m in item.members] or [item.target]
        for target in targets:
            annotations = self._annotations_of(target) or {}
            for mark in decode_marks(annotations.get(ANNOTATION_ESCALATED)).values():
                if mark.key == item.record_id and set(lead) <= mark.delivered:
                    return True
        return False

    async def _lead_paged(self, item: Unresolved, lead: Sequence[str]) -> bool:
        marks = ",".join("?" * len(lead))
        rows = await self._journal.query(
            "SELECT 1 FROM events WHERE rollback_id = ? AND kind = ?"
            " UNION ALL SELECT 1 FROM outbox WHERE dedup_key = ? AND kind = ? AND resolves = 0"
            f" AND channel IN ({marks}) AND state NOT IN (?, ?) LIMIT 1",
            (
                item.record_id,
                KIND_LEAD_PAGED,
                item.record_id,
                NotificationKind.ESCALATION.value,
                *lead,
                WITHDRAWN,
                FAILED,
            ),
        )
        return bool(rows)

    async def _resolved_after(self, target: Target, since: datetime) -> bool:
        at = format_time(since)
        rows = await self._journal.query(
            "SELECT 1 FROM rollbacks WHERE namespace = ? AND name = ? AND kind = ?"
            " AND phase = ? AND finished_at > ?"
            " UNION ALL SELECT 1 FROM decisions WHERE namespace = ? AND name = ?"
            " AND reason_code = ? AND at > ? LIMIT 1",
            (
                target.namespace,
                target.name,
                RecordKind.ROLLBACK.value,
                Phase.ROLLBACK_COMPLETED.value,
                at,
                target.namespace,
                target.name,
                ReasonCode.SIGNAL_RESOLVED.value,
                at,
            ),
        )
        return bool(rows)


def _unresolved(row: Any) -> Unresolved:
    phase = Phase(row["phase"])
    since_text = row["started_at"]
    if phase is Phase.ESCALATED:
        since_text = row["finished_at"] or row["updated_at"]
    members: tuple[str, ...] = ()
    if row["name"] == _GROUP_NAME:
        members = tuple(str(m) for m in loads_json(row["details"]).get("members", ()))
    return Unresolved(
        record_id=row["id"],
        target=Target(row["namespace"], row["name"]),
        phase=phase,
        since=parse_time(since_text),
        reason_code=row["reason_code"],
        reason=row["reason"],
        members=members,
    )
