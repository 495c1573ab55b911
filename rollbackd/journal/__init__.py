"""The audit trail: every signal, decision, phase change and notification, in SQLite.

The journal is the raw material of the post-incident review and rollbackd's
own memory across restarts (which signals it already handled, which rollback
is in flight, when the last one finished, which revisions it restored).
Every write is committed before the call returns, so a crash loses nothing
that was acknowledged.

Storage choices, and why:
- SQLite through aiosqlite: embedded, one file, no server to run.
- WAL journal mode: readers (the HTTP API, the CLI) do not block the writer.
- ``PRAGMA user_version`` holds the schema version; opening a file written
  by a newer rollbackd fails with a clear error instead of misreading it.
- Times are ISO-8601 UTC strings with microseconds, fixed width, so text
  order is time order and the file is readable with the ``sqlite3`` shell.
- Structured payloads (labels, details, event data) are JSON text.

``timeline(rollback_id)`` merges, in time order: the signals behind the
rollback's decisions, the decisions, the recorded events (phase changes,
patch, images, verification intervals, ...) and the notification outcomes
(``record_notification``), so callers need not also record notifications as
events.

The package: ``schema`` (tables, migrations), ``rows`` (values to rows and
back), ``connection`` (pragmas, transactions in one call on the connection's thread), ``direct``
(the intake's commits in place while the write lock is free), ``intake``
(accepted signals, the undecided queue), ``records`` (decisions, records,
events, notifications, history) and ``timeline``. ``Journal`` is all of them
on one connection.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Literal

import aiosqlite

from rollbackd.journal.intake import IntakeStore
from rollbackd.journal.records import DETAIL_RESTORED_REVISION, RecordStore
from rollbackd.journal.rows import JournalError, UnresolvedRecord, format_time, parse_time
from rollbackd.journal.schema import SCHEMA_VERSION
from rollbackd.journal.timeline import TimelineEntry, TimelineStore

__all__ = [
    "DETAIL_RESTORED_REVISION",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "TimelineEntry",
    "UnresolvedRecord",
    "format_time",
    "parse_time",
]


class Journal(IntakeStore, RecordStore, TimelineStore):
    """One SQLite file; open it with ``await Journal.open(path)``, close with ``close()``."""

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> Journal:
        """Open (creating file, parent directory and schema as needed) and migrate.

        ``create=False`` is for readers (CLI history/show/report): a mistyped
        path is an error instead of a new, empty journal. ``synchronous`` is
        SQLite's durability level (see ``_prepare``).
        """
        text = os.fspath(path)
        if not create and text != ":memory:" and not await asyncio.to_thread(os.path.isfile, text):
            raise JournalError(f"journal {text} does not exist")
        if text != ":memory:":
            parent = Path(text).parent
            try:
                await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"journal {text}: cannot create directory: {exc}") from exc
        try:
            conn = await aiosqlite.connect(text, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {text}: cannot open: {exc}") from exc
        journal = cls(conn, text)
        journal._synchronous = synchronous.upper()
        try:
            await journal._prepare()
            if create:
                journal.open_direct()
        except BaseException:
            await conn.close()
            raise
        return journal

    async def close(self) -> None:
        self.close_direct()
        await self._intake_commit.close()
        await self._close_connection()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
