"""What the storm tests share: concurrent senders that stop cleanly, and the journal read back.

Each storm test says what its senders post and what they remember; how
senders start, stop and close their session, and how a journal file tells
which acknowledged fingerprints were decided, is the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from pathlib import Path
from typing import Self

import aiohttp


class Senders:
    """``senders`` tasks running ``_send`` on one session until the block ends."""

    def __init__(self, senders: int, *, timeout: float) -> None:
        self.senders = senders
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._session_or_none: aiohttp.ClientSession | None = None

    @property
    def _session(self) -> aiohttp.ClientSession:
        assert self._session_or_none is not None, "senders not started"
        return self._session_or_none

    def fingerprints(self, count: int) -> list[str]:
        """``count`` fingerprints never used before by these senders."""
        return [f"{next(self._ids):016x}" for _ in range(count)]

    async def _send(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        self._session_or_none = aiohttp.ClientSession(timeout=timeout)
        self._tasks = [asyncio.create_task(self._send()) for _ in range(self.senders)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session_or_none is not None:
            await self._session_or_none.close()
            self._session_or_none = None


def accepted_rows(journal: Path) -> list[tuple[str, bool]]:
    """(fingerprint, decided) of every accepted signal in a journal file, oldest first."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT key, decided_at IS NOT NULL FROM signals WHERE accepted = 1 ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [(key.split(":")[1], bool(decided)) for key, decided in rows]


def accepted_fingerprints(journal: Path) -> dict[str, bool]:
    """fingerprint -> whether any of its accepted signals was decided."""
    found: dict[str, bool] = {}
    for fp, decided in accepted_rows(journal):
        found[fp] = found.get(fp, False) or decided
    return found
