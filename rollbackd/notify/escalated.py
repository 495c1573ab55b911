"""The leader's reads and writes of ``rollbackd.io/escalated`` (rules in ``rollbackd.incidents``).

Reads come from the watch cache (no API call per escalation). Writes start
from a fresh GET, carry its resourceVersion and pass the fence like every
write: a deposed leader records nothing. A write never holds a page back:
a failure (API down, conflicts, fenced, Deployment gone) is logged and the
page goes on; the worst it costs is a page the next leader sends again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from rollbackd.escalation import GROUP_NAME
from rollbackd.incidents import IncidentMark, encode_marks, marks_of, merge_mark
from rollbackd.kube.errors import ConflictError
from rollbackd.kube.patch import annotation_ops, precondition
from rollbackd.model import ANNOTATION_ESCALATED, Target
from rollbackd.notify.model import (
    DETAIL_FAILOVER_FROM,
    DETAIL_REASON_CODE,
    Notification,
    NotificationKind,
)

__all__ = ["EscalatedLedger", "LedgerKube", "marked_targets"]

log = structlog.get_logger("rollbackd.notify")

_ATTEMPTS = 3  # resourceVersion conflicts retried on a fresh read


class LedgerKube(Protocol):
    @property
    def synced(self) -> bool: ...
    def cached_deployment(self, target: Target) -> dict[str, Any] | None: ...
    async def read_deployment(self, target: Target) -> dict[str, Any]: ...
    async def patch_deployment(
        self, target: Target, ops: list[dict[str, Any]]
    ) -> dict[str, Any]: ...
    def check_state_term(self, deployment: Mapping[str, Any], what: str) -> None: ...


def marked_targets(n: Notification) -> list[Target]:
    """The Deployments a delivered page is an escalation for (a grouped page: its members).

    Only the escalations' own pages (``esc-`` keys): a rollback's pages are
    already tied to the rollback's state on the Deployment.
    """
    if n.kind is not NotificationKind.ESCALATION or n.resolves:
        return []
    if not n.dedup_key.startswith("esc-") or not n.details.get(DETAIL_REASON_CODE):
        return []
    if n.target.name != GROUP_NAME:
        return [n.target]
    members = n.details.get("deployments") or []
    return [Target(n.target.namespace, str(m)) for m in members if isinstance(m, str)]


class EscalatedLedger:
    """``IncidentLedger`` over the Kubernetes adapter, and the Notifier's delivery hook."""

    def __init__(
        self,
        kube: LedgerKube,
        *,
        route: Callable[[Notification], Collection[str]] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._kube = kube
        self.route = route  # the channels a page is routed to (None: the delivering one)
        self._timeout = timeout

    def marks(self, target: Target) -> Mapping[str, IncidentMark] | None:
        if not self._kube.synced:
            return None
        return marks_of(self._kube.cached_deployment(target))

    def taken(self, n: Notification, channel: str) -> bool:
        """Whether the Deployment says ``channel`` already took this very page (another leader).

        False when the cluster cannot tell, and for a failover copy (it says
        something the original did not: its channel failed).
        """
        targets = marked_targets(n)
        if not targets or n.details.get(DETAIL_FAILOVER_FROM) or not self._kube.synced:
            return False
        reason = str(n.details[DETAIL_REASON_CODE])
        for target in targets:
            mark = marks_of(self._kube.cached_deployment(target)).get(reason)
            if mark is None or mark.key != n.dedup_key or channel not in mark.delivered:
                return False
        return True

    async def claim(self, target: Target, reason: str, key: str, at: datetime) -> None:
        await self._record(target, reason, IncidentMark(key, at))

    async def delivered(self, n: Notification, channel: str) -> None:
        """``channel`` took ``n``: mark it on every Deployment the page is for."""
        targets = marked_targets(n)
        if not targets:
            return
        took = {channel}
        if failover_from := n.details.get(DETAIL_FAILOVER_FROM):
            took.add(str(failover_from))  # a copy that stands in for the channel that failed
        routed = set(self.route(n)) if self.route is not None else set()
        mark = IncidentMark(n.dedup_key, n.created_at, frozenset(routed), frozenset(took))
        try:
            # One deadline for the page, however many members: the channel's next page waits.
            async with asyncio.timeout(self._timeout):
                for target in targets:
                    await self._record(target, str(n.details[DETAIL_REASON_CODE]), mark)
        except TimeoutError:
            log.warning(
                "escalated_mark_failed",
                dedup_key=n.dedup_key,
                error="timed out",
                targets=len(targets),
            )

    async def _record(self, target: Target, reason: str, mark: IncidentMark) -> None:
        cached = self._kube.cached_deployment(target) if self._kube.synced else None
        if cached is not None and merge_mark(marks_of(cached), reason, mark) is None:
            return  # already there: no read, no write
        try:
            async with asyncio.timeout(self._timeout):
                written = await self._write(target, reason, mark)
        except Exception as exc:  # never holds a page back; the next leader may page again
            log.warning(
                "escalated_mark_failed",
                target=str(target),
                dedup_key=mark.key,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        if written:
            log.info(
                "escalated_marked",
                target=str(target),
                reason_code=reason,
                dedup_key=mark.key,
                delivered=sorted(mark.delivered),
            )

    async def _write(self, target: Target, reason: str, mark: IncidentMark) -> bool:
        for attempt in range(_ATTEMPTS):
            deployment = await self._kube.read_deployment(target)
            merged = merge_mark(marks_of(deployment), reason, mark)
            if merged is None:
                return False
            self._kube.check_state_term(deployment, f"escalated mark on {target}")
            meta = deployment.get("metadata") or {}
            ops = [
                precondition(meta.get("resourceVersion")),
                *annotation_ops(
                    meta.get("annotations"), {ANNOTATION_ESCALATED: encode_marks(merged)}
                ),
            ]
            try:
                await self._kube.patch_deployment(target, ops)
            except ConflictError:
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            return True
        return False
