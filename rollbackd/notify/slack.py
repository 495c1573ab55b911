"""Slack incoming webhook: a short, readable line per notification.

Chat is where the team sees what rollbackd is doing without being paged, so
every kind goes here, dry runs included. The message stays short: what,
where, why, and a link to the full report.
"""

from __future__ import annotations

from typing import Any

from rollbackd.notify.http import HttpChannel, SessionFactory
from rollbackd.notify.model import (
    DETAIL_FROM_REVISION,
    DETAIL_REASON,
    DETAIL_TO_REVISION,
    Notification,
    NotificationKind,
)
from rollbackd.notify.pagerduty import report_url_for

_TITLES = {
    NotificationKind.ROLLBACK_STARTED: ":rewind: Rollback started",
    NotificationKind.ROLLBACK_COMPLETED: ":white_check_mark: Rollback verified",
    NotificationKind.ESCALATION: ":rotating_light: Escalation: human needed",
    NotificationKind.DRY_RUN: ":memo: Dry run: would roll back",
    NotificationKind.SUPERSEDED: ":raised_hands: Rollback superseded by a human change",
    NotificationKind.APPROVAL_REQUESTED: ":raising_hand: Rollback proposed: approve or reject",
}
_MAX_TEXT = 2900  # Slack's section text limit is 3000 characters


def _escape(text: str) -> str:
    """Slack mrkdwn control characters, so a summary cannot inject links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(n: Notification, *, report_url: str | None = None) -> dict[str, Any]:
    """The webhook body: ``text`` (notification fallback) and ``blocks``."""
    title = _TITLES.get(n.kind, n.kind.value)
    if n.resolves and n.kind is not NotificationKind.ROLLBACK_COMPLETED:
        title = f":white_check_mark: Resolved ({n.kind.value})"
    lines = [f"*{title}* `{n.target}`", _escape(n.summary)]
    reason = n.details.get(DETAIL_REASON)
    if reason and str(reason) != n.summary:
        lines.append(f"_Reason:_ {_escape(str(reason))}")
    frm, to = n.details.get(DETAIL_FROM_REVISION), n.details.get(DETAIL_TO_REVISION)
    if frm is not None and to is not None:
        lines.append(f"_Revision:_ {frm} → {to}")
    if report_url:
        lines.append(f"<{report_url}|Post-incident report>")
    text = "\n".join(lines)[:_MAX_TEXT]
    return {
        "text": f"{title}: {n.target}: {n.summary}"[:_MAX_TEXT],
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"rollbackd · {n.severity} · `{_escape(n.dedup_key)}` · "
                        f"{n.created_at.isoformat(timespec='seconds')}",
                    }
                ],
            },
        ],
    }


class SlackChannel(HttpChannel):
    """Posts to one Slack incoming-webhook URL (the URL is the secret)."""

    def __init__(
        self,
        webhook_url: str,
        *,
        name: str = "slack",
        report_url_template: str | None = None,
        session_factory: SessionFactory | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name, session_factory=session_factory, timeout=timeout)
        url = webhook_url.strip()
        if not url:
            raise ValueError("Slack webhook URL is empty")
        self._url = url
        self._report_url_template = report_url_template

    async def send(self, n: Notification) -> None:
        body = slack_message(n, report_url=report_url_for(n, self._report_url_template))
        await self.post_json(self._url, body)
