"""What every HTTP notification channel shares: a session lifecycle and one POST.

The session is opened in ``start`` and closed in ``stop`` (the Notifier calls
both), so no connector outlives the daemon. HTTP answers are mapped to
``ChannelError`` once, here, with the same rule for every service: 408, 429
and 5xx and network errors are worth retrying; any other 4xx means the
request itself is wrong and retrying cannot help.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from rollbackd.notify.channel import ChannelError
from rollbackd.retryafter import retry_after_seconds

SessionFactory = Callable[[], aiohttp.ClientSession]

_RETRYABLE_STATUS = frozenset({408, 425, 429})
_MAX_ERROR_BODY = 300


def default_session_factory(
    timeout: float = 10.0,
    *,
    user_agent: str = "rollbackd",
    request_class: type[aiohttp.ClientRequest] = aiohttp.ClientRequest,
) -> SessionFactory:
    """A factory of sessions with a total per-request timeout.

    ``request_class``: the daemon's fenced one, so a page is checked against
    the Lease at the last moment before it leaves (the Notifier asks first).
    """

    def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": user_agent},
            request_class=request_class,
        )

    return make


class HttpChannel:
    """Base for channels that POST JSON; subclasses build the body."""

    name: str

    def __init__(
        self,
        name: str,
        *,
        session_factory: SessionFactory | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._session_factory = session_factory or default_session_factory(timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = self._session_factory()

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> str:
        """POST ``body`` as JSON; returns the response text or raises ChannelError."""
        if self._session is None:
            raise ChannelError(f"{self.name}: channel not started", retryable=False)
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._session.post(url, data=data, headers=all_headers) as resp:
                text = await resp.text(errors="replace")
                if 200 <= resp.status < 300:
                    return text
                retryable = resp.status in _RETRYABLE_STATUS or resp.status >= 500
                raise ChannelError(
                    f"{self.name}: HTTP {resp.status}: {text[:_MAX_ERROR_BODY]}",
                    retryable=retryable,
                    retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChannelError(f"{self.name}: {type(exc).__name__}: {exc}", retryable=True) from exc
