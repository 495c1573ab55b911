"""``async with`` for the test servers: start on entry, stop on exit."""

from __future__ import annotations

from typing import Self


class StartStop:
    """A base for objects with ``start()`` and ``stop()``: ``async with`` runs both."""

    async def start(self) -> object:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
