"""Escalation pages, grouped so a storm pages a few humans once, not once per alert.

Two rules, in the spirit of Alertmanager's grouping:

- One page per (Deployment, reason) per incident window: a later escalation
  for the same Deployment and reason inside the window is noted on the
  record, not paged again. The window is found in the journal, so a restart
  does not page again either.
- "Not a deploy problem" (no recent rollout) across a namespace: such pages
  wait ``group_wait`` in the outbox before they go out. If ``group_min``
  Deployments of one namespace escalate that way within the wait, their
  individual pages are withdrawn and one grouped page says "N Deployments in
  namespace X breaching; none recently rolled out: not a deploy problem".
  Later ones join the open group silently. The waiting pages are durable
  outbox rows, and the grouped one is queued before the individual ones are
  withdrawn: a crash while grouping sends them individually (or both), never
  neither; after a restart the open group, with its members, is read back
  from the journal.

Across a change of leader (each replica has its own journal) the Deployment
tells: the page is claimed on it (``rollbackd.io/escalated``, see
``rollbackd.incidents``) when queued and marked as each channel delivers it.
A new leader notes a delivered incident as a repeat, and pages one its
predecessor never delivered, under the same dedup key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from rollbackd.escalation_pages import (
    ESCALATION_HEADLINES,
    GROUP_KEY_PREFIX,
    GROUP_NAME,
    KIND_ADOPTED,
    escalation_page,
    escalation_record,
    escalation_summary,
    group_page,
)
from rollbackd.incidents import IncidentLedger, PriorPage, prior_page
from rollbackd.model import Decision, Rollback, Signal, Target
from rollbackd.notify.model import Notification, NotificationKind
from rollbackd.reasons import ReasonCode

__all__ = [
    "ESCALATION_HEADLINES",
    "GROUP_NAME",
    "EscalationJournal",
    "EscalationPager",
    "Escalations",
    "GroupingPolicy",
    "escalation_summary",
]

log = structlog.get_logger("rollbackd.escalation")

# Reasons that say "the deploy did not do this": many of them at once in a
# namespace is one infrastructure incident, not N application incidents.
NOT_A_DEPLOY_PROBLEM = frozenset({ReasonCode.NO_RECENT_ROLLOUT.value})

KIND_ESCALATED = "escalated"
KIND_REPEATED = "escalation_repeated"
KIND_GROUPED = "escalation_grouped"
KIND_GROUP = "escalation_group"


@dataclass(frozen=True)
class GroupingPolicy:
    incident_window: timedelta = timedelta(minutes=30)
    group_wait: timedelta = timedelta(seconds=10)
    group_min: int = 3


class EscalationPager(Protocol):
    async def enqueue(self, n: Notification, *, not_before: datetime | None = None) -> None: ...
    async def withdraw(self, dedup_keys: Sequence[str], *, reason: str) -> int: ...
    async def revise(self, n: Notification) -> int:
        """Replace the body of ``n.dedup_key``'s pages not yet sent; how many were."""
        ...


class RecordsWriter(Protocol):
    """What the dispatcher and the escalations write to the journal's records."""

    async def record_event(
        self,
        rollback_id: str | None,
        target: Target,
        kind: str,
        message: str,
        *,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None: ...
    async def save_rollback(
        self, rollback: Rollback, *, details: Mapping[str, Any] | None = None
    ) -> None: ...


class EscalationJournal(RecordsWriter, Protocol):
    async def last_event(
        self, target: Target, kind: str, *, since: datetime, reason_code: str | None = None
    ) -> dict[str, Any] | None: ...


@dataclass
class _Group:
    """Not-a-deploy-problem escalations of one namespace, waiting or grouped."""

    started_at: datetime
    members: dict[Target, str] = field(default_factory=dict)  # target -> its page's dedup key
    dedup_key: str | None = None  # set once the grouped page is queued
    reason_code: str = ""


class Escalations:
    """Decides which escalations page, which join an open incident, which are grouped."""

    def __init__(
        self,
        pager: EscalationPager,
        journal: EscalationJournal,
        policy: GroupingPolicy | None = None,
        ledger: IncidentLedger | None = None,
    ) -> None:
        self._pager = pager
        self._journal = journal
        self._policy = policy or GroupingPolicy()
        self._ledger = ledger  # the Deployment's record, shared by every leader
        self._open: dict[tuple[Target, str], tuple[str, datetime]] = {}
        self._groups: dict[str, _Group] = {}
        self._undelivered: dict[tuple[Target, str], str] = {}

    async def escalate(self, signal: Signal, decision: Decision, now: datetime) -> str:
        """Page (or not) for ``decision``; returns the dedup key of the page it belongs to."""
        target, reason = decision.target, decision.reason_code
        open_key = await self._open_incident(decision, now)
        if open_key is not None:
            await self._note(target, KIND_REPEATED, decision, now, open_key)
            return open_key
        reused = self._undelivered.pop((target, reason), None)
        if reason in NOT_A_DEPLOY_PROBLEM:
            group = await self._group_for(target.namespace, now)
            if group.dedup_key is not None:
                self._open[(target, reason)] = (group.dedup_key, now)
                await self._note(target, KIND_GROUPED, decision, now, group.dedup_key)
                if target not in group.members:
                    group.members[target] = group.dedup_key
                    # Still waiting to go out: the page grows; once sent, the
                    # journal's group record keeps the list (and a restart reads it).
                    page = _group_page(namespace_of(group), group, now)
                    await self._pager.revise(page)
                    await self._record_group(namespace_of(group), group, page.summary, now)
                return group.dedup_key
        # A page the previous leader queued but never delivered keeps its key:
        # PagerDuty folds it into that incident if it went out after all.
        dedup_key = (
            reused or f"esc-{target.namespace}-{target.name}-{reason}-{int(now.timestamp())}"
        )
        self._open[(target, reason)] = (dedup_key, now)
        # A record of its own, so the API and `rollbackd history` list every page.
        await self._journal.save_rollback(
            escalation_record(dedup_key, target, decision.reason_code, decision.reason, now),
            details={"signal": signal.name, "source": str(signal.source)},
        )
        await self._journal.record_event(
            dedup_key,
            target,
            KIND_ESCALATED,
            decision.reason,
            at=now,
            data={"reason_code": reason, "dedup_key": dedup_key},
        )
        page = escalation_page(signal, decision, dedup_key, now)
        if reason not in NOT_A_DEPLOY_PROBLEM:
            await self._pager.enqueue(page)
            await self._claim(target, reason, dedup_key, now)
            return dedup_key
        await self._pager.enqueue(page, not_before=now + self._policy.group_wait)
        await self._claim(target, reason, dedup_key, now)
        group = self._groups[target.namespace]
        group.members[target] = dedup_key
        if len(group.members) >= self._policy.group_min:
            return await self._open_group(target.namespace, group, decision, now)
        return dedup_key

    async def announce_dry_run(self, record: Rollback, decision: Decision, now: datetime) -> None:
        """Say what a dry run would have done (chat channels; PagerDuty does not page it)."""
        await self._pager.enqueue(
            Notification(
                kind=NotificationKind.DRY_RUN,
                severity="info",
                dedup_key=record.id,
                target=record.target,
                summary=decision.reason,
                details={
                    "rollback_id": record.id,
                    "reason_code": decision.reason_code,
                    "from_revision": decision.from_revision,
                    "to_revision": decision.to_revision,
                },
                created_at=now,
            )
        )

    async def _open_incident(self, decision: Decision, now: datetime) -> str | None:
        target, reason = decision.target, decision.reason_code
        since = now - self._policy.incident_window
        known = self._open.get((target, reason))
        if known is not None and known[1] >= since:
            return known[0]
        found = await self._journal.last_event(
            target, KIND_ESCALATED, since=since, reason_code=reason
        )
        if found is None:
            return await self._paged_elsewhere(decision, now)
        dedup_key = str(found["dedup_key"])
        self._open[(target, reason)] = (dedup_key, now)
        return dedup_key

    async def _paged_elsewhere(self, decision: Decision, now: datetime) -> str | None:
        """The incident another leader paged, as the Deployment records it; None: page."""
        target, reason = decision.target, decision.reason_code
        marks = self._ledger.marks(target) if self._ledger is not None else None
        prior = prior_page(marks or {}, reason, now, self._policy.incident_window)
        if prior is None:
            return None
        if not prior.delivered:
            self._undelivered[(target, reason)] = prior.key
            log.warning("escalation_undelivered_elsewhere", target=str(target), dedup_key=prior.key)
            return None
        self._open[(target, reason)] = (prior.key, now)
        log.info("escalation_delivered_elsewhere", target=str(target), dedup_key=prior.key)
        await self._adopt(decision, prior, now)
        return prior.key

    async def _adopt(self, decision: Decision, prior: PriorPage, now: datetime) -> None:
        """Another leader's delivered page, recorded here: the lead's clock runs from it."""
        target = decision.target
        record_target, summary, details = target, decision.reason, {}
        group = None
        if prior.key.startswith(GROUP_KEY_PREFIX):
            group = self._groups.get(target.namespace)
            if group is None or group.dedup_key != prior.key:
                # Deployments that breach later join it here, as on the old leader.
                group = _Group(prior.at, dedup_key=prior.key, reason_code=decision.reason_code)
                self._groups[target.namespace] = group
            group.members[target] = prior.key
            record_target = Target(target.namespace, GROUP_NAME)
            summary = _group_page(target.namespace, group, prior.at).summary
            details = {"members": sorted(t.name for t in group.members)}
        record = escalation_record(
            prior.key, record_target, decision.reason_code, summary, prior.at
        )
        await self._journal.save_rollback(record, details=details)
        data = {"reason_code": decision.reason_code, "dedup_key": prior.key}
        await self._journal.record_event(
            prior.key, record_target, KIND_ADOPTED, summary, at=now, data=data
        )
        if group is not None:
            await self._record_group(target.namespace, group, summary, now)

    async def _claim(self, target: Target, reason: str, dedup_key: str, now: datetime) -> None:
        if self._ledger is not None:
            await self._ledger.claim(target, reason, dedup_key, now)

    async def _group_for(self, namespace: str, now: datetime) -> _Group:
        group = self._groups.get(namespace)
        window = (
            self._policy.incident_window if group and group.dedup_key else self._policy.group_wait
        )
        if group is not None and now - group.started_at <= window:
            return group
        group = _Group(started_at=now)
        found = await self._journal.last_event(
            Target(namespace, GROUP_NAME), KIND_GROUP, since=now - self._policy.incident_window
        )
        if found is not None:  # a grouped page from before a restart is still open
            group.dedup_key = str(found["dedup_key"])
            # Its members too: a later member's revision must not drop them from the page.
            group.reason_code = str(found.get("reason_code", ReasonCode.NO_RECENT_ROLLOUT.value))
            group.members = {
                Target(namespace, m): group.dedup_key for m in found.get("members", ())
            }
        self._groups[namespace] = group
        return group

    async def _open_group(
        self, namespace: str, group: _Group, decision: Decision, now: datetime
    ) -> str:
        dedup_key = f"{GROUP_KEY_PREFIX}{namespace}-not-a-deploy-problem-{int(now.timestamp())}"
        group.dedup_key = dedup_key
        group.reason_code = decision.reason_code
        individual = list(group.members.values())
        for target in group.members:
            group.members[target] = dedup_key
            self._open[(target, decision.reason_code)] = (dedup_key, now)
        page = _group_page(namespace, group, now)
        # Queued before the individual pages are withdrawn, so that a crash in
        # between sends both rather than neither. It waits one more
        # group_wait, so the rest of the storm joins it before it goes out.
        await self._pager.enqueue(page, not_before=now + self._policy.group_wait)
        await self._journal.save_rollback(
            escalation_record(
                dedup_key, Target(namespace, GROUP_NAME), group.reason_code, page.summary, now
            ),
            details={"members": sorted(t.name for t in group.members)},
        )
        await self._record_group(namespace, group, page.summary, now)
        withdrawn = await self._pager.withdraw(individual, reason=f"grouped into {dedup_key}")
        log.warning(
            "escalations_grouped",
            namespace=namespace,
            deployments=len(group.members),
            withdrawn=withdrawn,
            dedup_key=dedup_key,
        )
        return dedup_key

    async def _record_group(
        self, namespace: str, group: _Group, summary: str, now: datetime
    ) -> None:
        """The group's members as of now: the newest such event is what a restart restores."""
        assert group.dedup_key is not None
        members = sorted(t.name for t in group.members)
        await self._journal.record_event(
            group.dedup_key,
            Target(namespace, GROUP_NAME),
            KIND_GROUP,
            summary,
            at=now,
            data={
                "dedup_key": group.dedup_key,
                "members": members,
                "reason_code": group.reason_code,
            },
        )

    async def _note(
        self, target: Target, kind: str, decision: Decision, now: datetime, dedup_key: str
    ) -> None:
        await self._journal.record_event(
            dedup_key,
            target,
            kind,
            decision.reason,
            at=now,
            data={"reason_code": decision.reason_code, "dedup_key": dedup_key},
        )


def namespace_of(group: _Group) -> str:
    return next(iter(group.members)).namespace


def _group_page(namespace: str, group: _Group, now: datetime) -> Notification:
    assert group.dedup_key is not None
    return group_page(namespace, group.dedup_key, group.reason_code, group.members, now)
