"""What a channel is: ``send`` or raise ``ChannelError``; optional ``accepts``, ``start``, ``stop``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import structlog

from rollbackd.notify.model import Notification

log = structlog.get_logger("rollbackd.notify")


class ChannelError(Exception):
    """A channel could not deliver; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait, if any


@runtime_checkable
class Channel(Protocol):
    """Delivers one notification or raises ``ChannelError``.

    A channel may also have ``async start()`` and ``async stop()``; the
    Notifier calls them when present (HTTP channels open and close their
    ``aiohttp.ClientSession`` there).
    """

    name: str

    async def send(self, n: Notification) -> None: ...


def channel_accepts(channel: Channel, n: Notification) -> bool:
    """A channel may declare ``accepts(n)`` to opt out of some notifications.

    Filtering at submit time (instead of a silent no-op in ``send``) keeps
    ``notifications_total{result="ok"}`` honest.
    """
    accepts = getattr(channel, "accepts", None)
    return True if accepts is None else bool(accepts(n))


OnResult = Callable[[Notification, str, bool, str], Awaitable[None]]


async def stop_channel(channel: Channel) -> None:
    stop = getattr(channel, "stop", None)
    if stop is None:
        return
    try:
        await stop()
    except Exception:
        log.exception("channel_stop_failed", channel=channel.name)
