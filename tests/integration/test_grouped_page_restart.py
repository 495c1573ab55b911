"""SIGKILL while a grouped "not a deploy problem" page waits out its group_wait.

Three Deployments of one namespace escalate "no recent rollout" at once: their
individual pages are withdrawn and one grouped page waits ``group_wait`` in
the journal's outbox. The daemon (a real `rollbackd run`) is killed inside
that wait and restarted on the same journal; a fourth Deployment escalates
after the restart. The pager must get the grouped page exactly once, naming
every member known before the kill (and the late one), and none of the
withdrawn individual pages.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import (
    API_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BEFORE_KILL = ["db-client-0", "db-client-1", "db-client-2"]
AFTER_RESTART = "db-client-3"
GROUP_WAIT_SECONDS = 10
# A rollout older than this is "not recent": every alert escalates, none rolls back.
CHANGE_WINDOW = "2s"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    overrides = {
        "policy": {"change_window": CHANGE_WINDOW},
        "notify": {
            "backoff_initial": "500ms",
            "escalation": {"group_wait": f"{GROUP_WAIT_SECONDS}s", "group_min": 3},
        },
    }
    async with Stack(tmp_path / "stack", with_daemon=False, overrides=overrides) as started:
        for name in [*BEFORE_KILL, AFTER_RESTART]:
            await started.create_deployment(
                deployment_manifest(name, image=f"{name}:1", behaviour=knobs(), replicas=1)
            )
            await started.wait_rollout_complete(name)
        yield started


async def post_alerts(daemon: DaemonProcess, names: list[str]) -> None:
    """Alertmanager's notification: one firing alert per Deployment, starting now."""
    now = datetime.now(UTC).isoformat()
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "DeploymentHighErrorRatio",
                "namespace": "default",
                "deployment": name,
            },
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{abs(hash((name, now))):016x}",
        }
        for name in names
    ]
    body = {"version": "4", "status": "firing", "receiver": "rollbackd", "alerts": alerts}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{daemon.url}/api/v1/alerts", json=body, headers=API_HEADERS) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["accepted"] == len(names)


def journal_rows(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def pages(stack: Stack) -> list[dict[str, Any]]:
    """What PagerDuty accepted (2xx), in arrival order."""
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict) and 200 <= r.status < 300
    ]


async def test_a_grouped_page_waiting_at_sigkill_is_sent_once_with_every_member(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.daemon_config()
    journal = Path(config["journal"]["path"])
    await asyncio.sleep(2.5)  # the Deployments' rollouts must be older than the change window
    daemon = DaemonProcess(config, tmp_path / "daemon")
    async with daemon:

        async def leads() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{daemon.url}/readyz") as resp,
            ):
                return (await resp.json())["reason"] == "ok: leader"

        await wait_for(leads, 30, "the daemon to lead")
        await post_alerts(daemon, BEFORE_KILL)

        async def grouped() -> list[tuple[Any, ...]] | None:
            # The individual pages are withdrawn last, once the grouped one is queued.
            withdrawn = journal_rows(journal, "SELECT 1 FROM outbox WHERE state = 'withdrawn'")
            return (
                journal_rows(journal, "SELECT data FROM events WHERE kind = 'escalation_group'")
                if withdrawn
                else None
            )

        group_rows = await wait_for(grouped, 20, "the grouped page to be queued", 0.02)
        await daemon.kill()  # inside group_wait: the grouped page is only an outbox row
        group = json.loads(group_rows[0][0])
        assert sorted(group["members"]) == BEFORE_KILL
        assert pages(stack) == []

        await daemon.start()  # same journal, same port
        await wait_for(leads, 30, "the restarted daemon to lead")
        await post_alerts(daemon, [AFTER_RESTART])

        async def delivered() -> list[dict[str, Any]] | None:
            found = [p for p in pages(stack) if p["dedup_key"] == group["dedup_key"]]
            return found or None

        await wait_for(delivered, 3 * GROUP_WAIT_SECONDS, "the grouped page")

        async def outbox_settled() -> bool:
            pending = journal_rows(journal, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            return pending[0][0] == 0

        await wait_for(outbox_settled, 20, "no page left pending")

    sent = pages(stack)
    grouped_pages = [p for p in sent if p["dedup_key"] == group["dedup_key"]]
    assert [p["event_action"] for p in grouped_pages] == ["trigger"], sent
    members = grouped_pages[0]["payload"]["custom_details"]["deployments"]
    assert set(BEFORE_KILL) <= set(members), members
    assert AFTER_RESTART in members, members
    # The withdrawn individual pages never reached the pager.
    assert [p for p in sent if p["dedup_key"] != group["dedup_key"]] == [], sent
