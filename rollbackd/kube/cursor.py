"""Where one list+watch loop stands, and when its resourceVersion has expired."""

from __future__ import annotations

import asyncio
import random

from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.kube.errors import GoneError

__all__ = ["WatchCursor", "expired"]


def expired(exc: Exception) -> bool:
    """The watch's resourceVersion fell out of the server's history (410 Gone)."""
    return (isinstance(exc, ApiException) and exc.status == 410) or isinstance(exc, GoneError)


class WatchCursor:
    """Where one watch loop stands: the resourceVersion to resume from, the next backoff."""

    def __init__(self) -> None:
        self.resource_version: str | None = None
        self.backoff = 0.2

    def advance(self, resource_version: str | None) -> None:
        """An event arrived: resume after it, and the stream is healthy again."""
        if resource_version:
            self.resource_version = resource_version
        self.backoff = 0.2

    async def back_off(self) -> None:
        # Full jitter keeps many replicas from reconnecting in lock-step.
        await asyncio.sleep(random.uniform(self.backoff / 2, self.backoff))
        self.backoff = min(self.backoff * 2, 10.0)
