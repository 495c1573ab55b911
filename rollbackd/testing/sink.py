"""A recording HTTP server on loopback that stands in for the pager and chat services.

The pager is an external SaaS, so the tests cannot talk to it. ``HttpSink``
answers every request the way PagerDuty's Events API does (202 and
``{"status": "success"}``), records what it received so a test can assert on
the exact bodies rollbackd sent, and can be told to fail or to hold the next
requests so retries and a down channel can be exercised without sleeps.

The ``pager_sink`` and ``http_sink_factory`` fixtures live in the tests' plugin
(tests/plugins/rollbackd_fixtures.py); this module imports no test framework.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from .lifecycle import StartStop

_T = TypeVar("_T")

DEFAULT_STATUS = 202
DEFAULT_BODY: Mapping[str, Any] = {
    "status": "success",
    "message": "Event processed",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the sink saw it; ``json`` is None when the body is not JSON."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    json: Any
    at: datetime
    status: int  # what the sink answered

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (aiohttp keeps the sender's casing)."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _Rule:
    """Answer the next ``remaining`` requests under ``path_prefix`` this way."""

    path_prefix: str
    status: int
    remaining: int
    body: Any
    headers: Mapping[str, str]
    hold: bool = False
    until: float | None = None  # monotonic deadline of a timed outage (fail_for)


@dataclass
class _Held:
    released: asyncio.Event = field(default_factory=asyncio.Event)


class HttpSink(StartStop):
    """Records every request; answers 202 ``{"status": "success"}`` unless told otherwise.

    Use it as an async context manager (or ``start``/``stop``). ``fail_next``
    and ``hold_next`` queue one-off behaviours matched by path prefix, first
    queued first used. ``wait_for`` wakes on each new request, so tests wait
    for exactly what they need instead of sleeping.
    """

    def __init__(
        self,
        *,
        status: int = DEFAULT_STATUS,
        body: Any = DEFAULT_BODY,
    ) -> None:
        self._status = status
        self._body = body
        self._rules: list[_Rule] = []
        self._held = _Held()
        self._changed = asyncio.Condition()
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle -------------------------------------------------------

    async def start(self) -> HttpSink:
        if self._runner is not None:
            raise RuntimeError("HttpSink already started")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self._runner = runner
        self._url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        """Stop listening; held requests are released so their handlers finish."""
        self.release()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("HttpSink not started")
        return self._url

    # --- behaviour -------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        count: int = 1,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        if count < 1:
            raise ValueError("count must be >= 1")
        self._rules.append(
            _Rule(
                path_prefix,
                status,
                count,
                body if body is not None else {"status": "error", "code": status},
                dict(headers or {}),
            )
        )

    def fail_for(
        self,
        path_prefix: str,
        seconds: float,
        status: int = 503,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer every request under ``path_prefix`` with ``status`` for ``seconds`` from now.

        Models an outage of the service (PagerDuty answering 503 for a minute).
        """
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        self._rules.append(
            _Rule(
                path_prefix,
                status,
                1,
                body if body is not None else {"status": "error", "code": status},
                dict(headers or {}),
                until=time.monotonic() + seconds,
            )
        )

    def end_outages(self, path_prefix: str) -> None:
        """End every ``fail_for`` outage under ``path_prefix`` now: the service is back."""
        self._rules = [r for r in self._rules if r.until is None or r.path_prefix != path_prefix]

    def hold_next(self, path_prefix: str, count: int = 1) -> None:
        """Record the next ``count`` requests but do not answer until ``release()``.

        Models a channel whose server accepted the connection and went quiet.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        self._rules.append(_Rule(path_prefix, self._status, count, self._body, {}, hold=True))

    def release(self) -> None:
        """Let every held request answer (with the default response)."""
        self._held.released.set()
        self._held = _Held()

    def clear(self) -> None:
        """Forget recorded requests and queued behaviours."""
        self.requests.clear()
        self._rules.clear()

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10.0,
    ) -> RecordedRequest:
        """Wait for the first request (oldest first) matching ``predicate``; returns it.

        Requests that arrived before the call count too. Raises ``TimeoutError``
        listing what was received, so a failing test says what the sink saw.
        """
        found = await self._wait_until(
            lambda reqs: next((r for r in reqs if predicate(r)), None), timeout
        )
        return found

    async def wait_for_count(
        self,
        path_prefix: str,
        count: int,
        timeout: float = 10.0,
    ) -> list[RecordedRequest]:
        """Wait for at least ``count`` requests under ``path_prefix``; returns all of those."""

        def enough(reqs: Sequence[RecordedRequest]) -> list[RecordedRequest] | None:
            matching = [r for r in reqs if r.path.startswith(path_prefix)]
            return matching if len(matching) >= count else None

        return await self._wait_until(enough, timeout)

    async def _wait_until(
        self, probe: Callable[[Sequence[RecordedRequest]], _T | None], timeout: float
    ) -> _T:
        """Re-run ``probe`` on every new request until it returns something."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while (result := probe(self.requests)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests]
                    raise TimeoutError(
                        f"HttpSink: condition not met within {timeout}s; received {seen}"
                    )
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    continue
            return result

    # --- handler ---------------------------------------------------------

    def _take_rule(self, path: str) -> _Rule | None:
        now = time.monotonic()
        self._rules = [r for r in self._rules if r.until is None or r.until > now]
        for rule in self._rules:
            if path.startswith(rule.path_prefix):
                if rule.until is not None:
                    return rule  # a timed outage answers every request until it ends
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rule = self._take_rule(request.path)
        status = rule.status if rule else self._status
        payload = rule.body if rule else self._body
        headers = rule.headers if rule else {}
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            json=parsed,
            at=datetime.now(UTC),
            status=status,
        )
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        if rule is not None and rule.hold:
            await self._held.released.wait()
        if isinstance(payload, bytes | str):
            return web.Response(status=status, body=payload, headers=headers)
        return web.json_response(payload, status=status, headers=headers)
