"""Generic JSON webhook: the Notification itself, for whatever the team runs.

The body is ``notification_to_json`` (kind, severity, dedup_key, target,
summary, details, created_at, resolves), a stable shape receivers can parse.
"""

from __future__ import annotations

from collections.abc import Mapping

from rollbackd.notify.http import HttpChannel, SessionFactory
from rollbackd.notify.model import Notification, notification_to_json


class WebhookChannel(HttpChannel):
    """POSTs every notification as JSON to ``url`` with optional extra headers."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
        session_factory: SessionFactory | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name, session_factory=session_factory, timeout=timeout)
        if not url.strip():
            raise ValueError("webhook URL is empty")
        self._url = url.strip()
        self._headers = dict(headers or {})

    async def send(self, n: Notification) -> None:
        await self.post_json(self._url, notification_to_json(n), headers=self._headers)
