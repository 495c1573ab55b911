"""Helpers for tests that run two real `rollbackd run` replicas beside one Stack."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from rollbackd.model import ANNOTATION_ROLLBACK, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import Stack


def recorded_state(stack: Stack, target: Target) -> RollbackState | None:
    """The rollback state annotation on ``target`` as kubesim holds it now."""
    deployment = stack.sim.store.get("apps/v1/deployments", target.namespace, target.name)
    raw = (deployment["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


def journal_rows(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a replica's journal, read-only (none before it wrote its schema)."""
    if not journal.exists():
        return []
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        conn.close()


def rollback_ids(journal: Path) -> set[str]:
    """The rollbacks a replica's journal records (none if it never wrote one)."""
    return {
        row[0] for row in journal_rows(journal, "SELECT id FROM rollbacks WHERE kind = 'rollback'")
    }


async def readyz_reason(daemon: DaemonProcess) -> str:
    """What /readyz says (``ok: leader``, ``standby: following X``), or ``no answer``."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{daemon.url}/readyz") as resp,
        ):
            return str((await resp.json())["reason"])
    return "no answer"


def replica(
    stack: Stack,
    tmp_path: Path,
    name: str,
    *,
    listen: str | None = None,
    **sections: Mapping[str, Any],
) -> DaemonProcess:
    """A replica named ``name`` with its own journal (as the chart's emptyDir gives it).

    The first replica takes the stack's webhook port (Alertmanager posts
    there); give the others ``listen="127.0.0.1:0"``.
    """
    config: dict[str, Mapping[str, Any]] = {
        **sections,
        "leader_election": {"identity": name},
        "journal": {"path": str(tmp_path / name / "journal.sqlite")},
    }
    if listen is not None:
        config["webhook"] = {"listen": listen}
    return DaemonProcess(stack.daemon_config(**config), tmp_path / name)
