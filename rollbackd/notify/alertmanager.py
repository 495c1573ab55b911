"""Push escalations into Alertmanager (``POST /api/v2/alerts``) as ``RollbackdEscalation``.

Teams that route pages through Alertmanager get rollbackd's escalations with
the same grouping, silencing and inhibition as every other alert. An alert's
identity is its label set, so a resolve must repeat exactly the labels of the
firing alert; the channel remembers them per dedup_key.

Alertmanager resolves an alert on its own ``resolve_timeout`` after the last
push unless ``endsAt`` is set. An escalation needs a human, so it is pushed
with ``endsAt`` = start + ``active_for`` (a day by default) and stays active
until then or until rollbackd resolves it with ``endsAt`` = now.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from rollbackd.notify.http import HttpChannel, SessionFactory
from rollbackd.notify.model import (
    DETAIL_FROM_REVISION,
    DETAIL_REASON,
    DETAIL_ROLLBACK_ID,
    DETAIL_TO_REVISION,
    Notification,
    NotificationKind,
)
from rollbackd.notify.pagerduty import report_url_for

# The alert rollbackd raises; the intake ignores it when Alertmanager routes it
# back (the one place the name is written).
ALERTNAME = "RollbackdEscalation"
_REMEMBERED = 10_000  # open alerts remembered for resolves; oldest forgotten first


def escalation_labels(
    n: Notification, *, severity: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The label set that identifies the escalation alert for ``n``."""
    labels = dict(extra or {})
    labels.update(
        {
            "alertname": ALERTNAME,
            "namespace": n.target.namespace,
            "deployment": n.target.name,
            "severity": severity or n.severity,
            "rollback_id": str(n.details.get(DETAIL_ROLLBACK_ID, n.dedup_key)),
        }
    )
    return labels


def _description(n: Notification, report_url: str | None) -> str:
    parts = []
    reason = n.details.get(DETAIL_REASON)
    if reason:
        parts.append(str(reason))
    frm, to = n.details.get(DETAIL_FROM_REVISION), n.details.get(DETAIL_TO_REVISION)
    if frm is not None or to is not None:
        parts.append(
            f"Revision {frm if frm is not None else '?'} -> {to if to is not None else '?'}."
        )
    if report_url:
        parts.append(f"Report: {report_url}")
    return " ".join(parts) or n.summary


def _iso(at: datetime) -> str:
    return at.isoformat()


class AlertmanagerPushChannel(HttpChannel):
    """Posts postable alerts (Alertmanager API v2) for escalations and their resolves."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        kinds: Collection[NotificationKind] = (NotificationKind.ESCALATION,),
        active_for: timedelta = timedelta(hours=24),
        extra_labels: Mapping[str, str] | None = None,
        report_url_template: str | None = None,
        headers: Mapping[str, str] | None = None,
        session_factory: SessionFactory | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name, session_factory=session_factory, timeout=timeout)
        self._endpoint = url.rstrip("/") + "/api/v2/alerts"
        self._kinds = frozenset(kinds)
        self._active_for = active_for
        self._extra_labels = dict(extra_labels or {})
        self._report_url_template = report_url_template
        self._headers = dict(headers or {})
        # dedup_key -> (labels, startsAt) of alerts this process opened.
        self._open: OrderedDict[str, tuple[dict[str, str], datetime]] = OrderedDict()
        # dedup_keys of escalations accepted for sending (an ordered set).
        self._escalated: OrderedDict[str, None] = OrderedDict()

    def accepts(self, n: Notification) -> bool:
        """Escalations, and resolves of what was escalated (or explicit escalation resolves).

        Called at submit time, before anything is sent, so the keys of accepted
        escalations are remembered here: their resolve may be submitted before
        the escalation itself has left the queue.
        """
        if n.resolves:
            return n.dedup_key in self._escalated or n.kind in self._kinds
        if n.kind not in self._kinds:
            return False
        self._escalated[n.dedup_key] = None
        self._escalated.move_to_end(n.dedup_key)
        while len(self._escalated) > _REMEMBERED:
            self._escalated.popitem(last=False)
        return True

    def alerts_for(self, n: Notification) -> list[dict[str, Any]]:
        """The request body (a list of one postable alert)."""
        report_url = report_url_for(n, self._report_url_template)
        if n.resolves:
            known = self._open.get(n.dedup_key)
            labels = (
                dict(known[0])
                if known
                else escalation_labels(n, severity="critical", extra=self._extra_labels)
            )
            alert: dict[str, Any] = {
                "labels": labels,
                "annotations": {"summary": n.summary, "description": _description(n, report_url)},
                "endsAt": _iso(n.created_at),
            }
            # Without a known start, Alertmanager keeps the start it already has.
            if known and known[1] <= n.created_at:
                alert["startsAt"] = _iso(known[1])
        else:
            labels = escalation_labels(n, extra=self._extra_labels)
            alert = {
                "labels": labels,
                "annotations": {"summary": n.summary, "description": _description(n, report_url)},
                "startsAt": _iso(n.created_at),
                "endsAt": _iso(n.created_at + self._active_for),
            }
        if report_url:
            alert["generatorURL"] = report_url
            alert["annotations"]["report_url"] = report_url
        return [alert]

    async def send(self, n: Notification) -> None:
        body = self.alerts_for(n)
        await self.post_json(self._endpoint, body, headers=self._headers)
        if n.resolves:
            self._open.pop(n.dedup_key, None)
        else:
            labels = body[0]["labels"]
            previous = self._open.get(n.dedup_key)
            # A repeated escalation keeps the first start time.
            started = previous[1] if previous and previous[0] == labels else n.created_at
            self._open[n.dedup_key] = (labels, started)
            self._open.move_to_end(n.dedup_key)
            while len(self._open) > _REMEMBERED:
                self._open.popitem(last=False)
