"""PagerDuty Events API v2: page on rollback start and escalation, resolve on success.

The rollback id is the ``dedup_key``, so the start page, a later escalation
and the resolve all land on the same PagerDuty alert. 429 and 5xx answers are
retried by the Notifier; a 400 means the event itself is invalid (wrong
routing key format, bad field) and is not retried.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rollbackd.jsonable import to_jsonable
from rollbackd.notify.http import HttpChannel, SessionFactory
from rollbackd.notify.model import (
    DETAIL_REPORT_URL,
    DETAIL_ROLLBACK_ID,
    Notification,
    NotificationKind,
)

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_MAX_SUMMARY = 1024  # PagerDuty truncates longer summaries; do it ourselves, visibly

# Dry runs change nothing in the cluster; they go to chat, not to the pager.
DEFAULT_PAGED_KINDS: frozenset[NotificationKind] = frozenset(
    {
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
        NotificationKind.ESCALATION,
        # Updates the started page: rollbackd stepped back, a human is in control.
        NotificationKind.SUPERSEDED,
        # Approve mode: the proposal needs a human; a rejection closes it.
        NotificationKind.APPROVAL_REQUESTED,
        NotificationKind.REJECTED,
    }
)


def report_url_for(n: Notification, template: str | None) -> str | None:
    """The report link: ``details["report_url"]`` if set, else the template with {rollback_id}."""
    explicit = n.details.get(DETAIL_REPORT_URL)
    if explicit:
        return str(explicit)
    if template:
        return template.format(rollback_id=n.details.get(DETAIL_ROLLBACK_ID, n.dedup_key))
    return None


def pagerduty_event(
    n: Notification,
    *,
    routing_key: str,
    cluster: str | None = None,
    report_url: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 body for ``n`` (a resolve carries only the key and dedup_key)."""
    if n.resolves:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": n.dedup_key}
    summary = n.summary if len(n.summary) <= _MAX_SUMMARY else n.summary[: _MAX_SUMMARY - 1] + "…"
    source = f"{cluster}/{n.target}" if cluster else str(n.target)
    custom_details: dict[str, Any] = {
        "target": str(n.target),
        "kind": n.kind.value,
        **to_jsonable(n.details),
    }
    if report_url:
        custom_details[DETAIL_REPORT_URL] = report_url
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.dedup_key,
        "client": "rollbackd",
        "payload": {
            "summary": summary,
            "source": source,
            "severity": n.severity,
            "timestamp": n.created_at.isoformat(),
            "component": n.target.name,
            "group": n.target.namespace,
            "class": n.kind.value,
            "custom_details": custom_details,
        },
    }
    if report_url:
        event["client_url"] = report_url
        event["links"] = [{"href": report_url, "text": "rollbackd post-incident report"}]
    return event


class PagerDutyChannel(HttpChannel):
    """Sends Events API v2 trigger/resolve events for one routing key."""

    def __init__(
        self,
        routing_key: str,
        *,
        url: str = DEFAULT_EVENTS_URL,
        name: str = "pagerduty",
        cluster: str | None = None,
        report_url_template: str | None = None,
        kinds: Collection[NotificationKind] = DEFAULT_PAGED_KINDS,
        session_factory: SessionFactory | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name, session_factory=session_factory, timeout=timeout)
        key = routing_key.strip()  # keys read from files often end with a newline
        if not key:
            raise ValueError("PagerDuty routing key is empty")
        self._routing_key = key
        self._url = url
        self._cluster = cluster
        self._report_url_template = report_url_template
        self._kinds = frozenset(kinds)

    def accepts(self, n: Notification) -> bool:
        return n.kind in self._kinds

    async def send(self, n: Notification) -> None:
        body = pagerduty_event(
            n,
            routing_key=self._routing_key,
            cluster=self._cluster,
            report_url=report_url_for(n, self._report_url_template),
        )
        await self.post_json(self._url, body)
