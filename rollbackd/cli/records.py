"""``history`` and ``show``: the journal, read only (``report`` is in cli/report.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rollbackd.approval import EVENT_KIND_APPROVED, EVENT_KIND_REJECTED
from rollbackd.cli.common import EXIT_OK, EXIT_USAGE, CliError, load
from rollbackd.model import RecordKind, Rollback, Target
from rollbackd.redact import redact_text


def journal_path(args: argparse.Namespace) -> str:
    """The journal to read; it must exist: a typo must not look like 'no history'."""
    path = str(args.journal) if args.journal else load(args.config).journal.path
    if not Path(path).is_file():
        raise CliError(
            f"journal {path} does not exist: nothing was recorded yet, "
            "or --config/--journal points at the wrong place"
        )
    return path


@asynccontextmanager
async def open_journal_read_only(path: str) -> AsyncIterator[Any]:
    """Open a journal that ``journal_path`` found; the CLI only reads from it."""
    from rollbackd.journal import Journal

    journal = await Journal.open(path, create=False)
    try:
        yield journal
    finally:
        await journal.close()


def cmd_history(args: argparse.Namespace) -> int:
    target = None
    if args.target:
        try:
            target = Target.parse(args.target)
        except ValueError as exc:
            raise CliError(f"--target: {exc}", EXIT_USAGE) from None
    path = journal_path(args)

    async def read() -> list[Rollback]:
        async with open_journal_read_only(path) as journal:
            rollbacks: list[Rollback] = await journal.list_rollbacks(
                limit=args.limit, target=target, kind=RecordKind(args.kind) if args.kind else None
            )
            return rollbacks

    print_history(asyncio.run(read()), sys.stdout)
    return EXIT_OK


def print_history(rollbacks: Sequence[Rollback], out: TextIO) -> None:
    if not rollbacks:
        print("no rollbacks recorded", file=out)
        return
    rows = [("ID", "KIND", "TARGET", "PHASE", "REVISIONS", "STARTED", "REASON")]
    rows += [
        (
            r.id,
            str(r.kind),
            str(r.target),
            str(r.phase),
            _revisions(r),
            _when(r.started_at),
            r.reason_code,
        )
        for r in rollbacks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def _revisions(rollback: Rollback) -> str:
    if rollback.from_revision is None and rollback.to_revision is None:
        return "-"
    return f"{rollback.from_revision or '?'} -> {rollback.to_revision or '?'}"


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def cmd_show(args: argparse.Namespace) -> int:
    path = journal_path(args)

    async def read() -> tuple[Rollback, list[Any]]:
        async with open_journal_read_only(path) as journal:
            rollback = await journal.get_rollback(args.id)
            if rollback is None:
                raise CliError(f"no rollback with id {args.id!r} in {path}")
            return rollback, list(await journal.timeline(args.id))

    rollback, timeline = asyncio.run(read())
    out = sys.stdout
    print(f"rollback {rollback.id}", file=out)
    print(f"  target:    {rollback.target}", file=out)
    print(f"  phase:     {rollback.phase}", file=out)
    print(f"  revisions: {_revisions(rollback)}", file=out)
    print(f"  reason:    {rollback.reason_code}: {redact_text(rollback.reason)}", file=out)
    print(f"  started:   {_when(rollback.started_at)}", file=out)
    print(f"  updated:   {_when(rollback.updated_at)}", file=out)
    print(f"  finished:  {_when(rollback.finished_at)}", file=out)
    for entry in timeline:  # a strategy beyond rolling: what it changed
        if entry.kind == "plan" and (entry.data or {}).get("changes"):
            print(f"  strategy:  {_changes(entry.data)}", file=out)
    for entry in timeline:  # approve mode: who said yes or no, and when
        if entry.kind in (EVENT_KIND_APPROVED, EVENT_KIND_REJECTED):
            data = entry.data or {}
            print(f"  {entry.kind + ':':<10} by {data.get('by')} at {data.get('at')}", file=out)
    print("timeline:", file=out)
    for entry in timeline:
        print(f"  {_when(entry.at)}  {entry.kind:<12} {redact_text(entry.message)}", file=out)
    return EXIT_OK


def _changes(data: Mapping[str, Any]) -> str:
    """``blue-green: Service s selector version=green -> version=blue; scaled x 0 -> 3``."""
    changes = data.get("changes") or {}
    parts = []
    before, after = changes.get("selector_before") or {}, changes.get("selector_after") or {}
    moved = [k for k in after if before.get(k) != after.get(k)]
    if moved:
        selector = ", ".join(f"{k}={before.get(k)} -> {k}={after[k]}" for k in moved)
        parts.append(f"Service {changes.get('service')} selector {selector}")
    for scaled in changes.get("replicas_scaled") or []:
        parts.append(
            f"scaled {scaled.get('deployment')} {scaled.get('from')} -> {scaled.get('to')}"
        )
    return f"{data.get('strategy')}: {'; '.join(parts) or 'no change recorded'}"
