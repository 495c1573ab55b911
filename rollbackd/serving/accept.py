"""asyncio's failed ``accept()`` reports, collapsed into one line per interval."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("rollbackd.serving")

ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"


ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLimiter:
    """The loop's exception handler: accept() resource errors logged at most once per interval.

    Out of descriptors, asyncio (3.11) reports every accept attempt, up to the
    listen backlog per wake-up, every second: hundreds of MB of identical log
    lines. The first report is logged at once; later ones within ``interval``
    are counted and summed up in one line when the interval ends. Anything
    else goes to the previous handler, or asyncio's default.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = 10.0,
        previous: ExceptionHandler | None = None,
    ) -> None:
        self._loop = loop
        self.interval = interval
        self._previous = previous
        self.total = 0
        self.suppressed = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        if self._flush_handle is not None:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.error(
            "accept_out_of_resources",
            error=str(exc) if exc is not None else None,
            errno=getattr(exc, "errno", None),
            hint="file descriptors exhausted: lower webhook.max_connections or raise the limit",
        )
        self._open_window()

    def _open_window(self) -> None:
        self._flush_handle = self._loop.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self.suppressed:
            return  # quiet interval: the next error is logged at once
        log.error("accept_out_of_resources_repeated", count=self.suppressed, seconds=self.interval)
        self.suppressed = 0
        self._open_window()

    def uninstall(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)


def install_accept_error_limiter(
    loop: asyncio.AbstractEventLoop, *, interval: float = 10.0
) -> AcceptErrorLimiter:
    """Install (once per loop) the rate-limited handler for accept() resource errors."""
    current = loop.get_exception_handler()
    if isinstance(current, AcceptErrorLimiter):
        return current
    limiter = AcceptErrorLimiter(loop, interval=interval, previous=current)
    loop.set_exception_handler(limiter)
    return limiter
