"""A start page left in a frozen leader's outbox never reopens an incident another leader closed.

Two real `rollbackd run` processes, each with its own journal (hence its own
outbox), against one loopback stack. replica-a leads and starts a rollback
while the pager answers 503, so its "rollback started" trigger stays pending
in replica-a's outbox; replica-a is frozen (SIGSTOP) right after its first
refused attempt. replica-b takes the Lease, resumes the rollback from the
Deployment's state annotation, re-sends the start page from its own outbox,
verifies, and resolves. replica-a is woken, stands down, and leads again once
replica-b stops. Its old trigger must not go out after replica-b's resolve: it
is withdrawn, and replica-a's journal says so and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.sink import RecordedRequest
from rollbackd.testing.stack import (
    OPERATOR_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE = "1s"
MIN_STABLE_SECONDS = 1.2  # v1 must have been the live version this long
# Long enough that replica-a's first attempt is refused and it is frozen
# before a retry; short next to the Lease replica-b must wait out.
OUTAGE_SECONDS = 4.0
WITHDRAWN_METRIC = 'rollbackd_notifications_total{channel="pagerduty",result="withdrawn"}'
FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "2s"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


def replica(stack: Stack, tmp_path: Path, name: str) -> DaemonProcess:
    workdir = tmp_path / name
    return DaemonProcess(
        stack.daemon_config(
            leader_election={"identity": name},
            notify=FAST_RETRIES,
            policy={"min_stable": MIN_STABLE},
            webhook={"listen": "127.0.0.1:0"},
            journal={"path": str(workdir / "journal.sqlite")},
        ),
        workdir,
    )


async def readyz_reason(daemon: DaemonProcess) -> str:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{daemon.url}/readyz") as resp,
        ):
            return str((await resp.json())["reason"])
    return "no answer"


async def wait_reason(daemon: DaemonProcess, expected: str, what: str) -> None:
    async def says() -> bool:
        return await readyz_reason(daemon) == expected

    await wait_for(says, 30, what, interval=0.1)


async def start_manual_rollback(daemon: DaemonProcess) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(
            f"{daemon.url}/api/v1/rollbacks",
            json={"target": str(SHOP), "reason": "stale page drill"},
            headers=OPERATOR_HEADERS,
        ) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["rollback_id"])


def recorded_state(stack: Stack) -> RollbackState | None:
    deployment = stack.sim.store.get("apps/v1/deployments", SHOP.namespace, SHOP.name)
    raw = (deployment["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


def pager_events(stack: Stack, dedup_key: str) -> list[RecordedRequest]:
    """Every PagerDuty event for ``dedup_key`` the sink received, answered or refused."""
    return [
        r
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict) and r.json.get("dedup_key") == dedup_key
    ]


def outbox_rows(journal: Path, dedup_key: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT channel, kind, resolves, state, attempts, last_error FROM outbox"
            " WHERE dedup_key = ? ORDER BY id",
            (dedup_key,),
        ).fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def log_events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.stderr_text().splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and parsed.get("event") == event:
                found.append(parsed)
    return found


async def metric(daemon: DaemonProcess, line_prefix: str) -> float | None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
        session.get(f"{daemon.url}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_frozen_leaders_start_page_is_withdrawn_after_another_leader_resolved(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = replica(stack, tmp_path, "replica-a"), replica(stack, tmp_path, "replica-b")
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=2)
    )
    await stack.wait_rollout_complete(SHOP.name)
    frozen = False
    try:
        await a.start()
        await wait_reason(a, "ok: leader", "replica-a to lead")
        await b.start()
        await wait_reason(b, "standby: following replica-a", "replica-b standing by")
        await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: v1 was stable for min_stable
        await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20))
        await stack.wait_rollout_complete(SHOP.name)

        # The pager is down when replica-a starts rolling back.
        stack.sink.fail_for(PAGERDUTY_PATH, OUTAGE_SECONDS, status=503)
        rollback_id = await start_manual_rollback(a)
        await stack.sink.wait_for(
            lambda r: (
                r.status == 503
                and isinstance(r.json, dict)
                and r.json.get("dedup_key") == rollback_id
                and r.json.get("event_action") == "trigger"
            ),
            timeout=15,
        )
        os.kill(a.pid, signal.SIGSTOP)  # frozen with its trigger pending
        frozen = True
        assert [r.status for r in pager_events(stack, rollback_id)] == [503], (
            "replica-a's trigger got through before the freeze: the scenario did not happen"
        )

        # replica-b resumes the same rollback, re-sends its start page, verifies, resolves.
        async def resolved() -> RecordedRequest | None:
            return next(
                (
                    r
                    for r in pager_events(stack, rollback_id)
                    if 200 <= r.status < 300 and r.json["event_action"] == "resolve"
                ),
                None,
            )

        resolve = await wait_for(resolved, 45, "replica-b's resolve", interval=0.1)

        # The resolve is queued before the phase is written (a kill in between
        # resolves again), so the annotation may follow the page by a moment.
        async def ended() -> RollbackState | None:
            state = recorded_state(stack)
            return state if state is not None and state.phase.terminal else None

        final = await wait_for(ended, 10, "replica-b's rollback to end")
        assert final.rollback_id == rollback_id
        assert final.phase is Phase.ROLLBACK_COMPLETED and final.holder == "replica-b"

        os.kill(a.pid, signal.SIGCONT)
        frozen = False
        await wait_reason(a, "standby: following replica-b", "replica-a to stand down")
        # replica-b goes away (a restart, a node drain): replica-a leads again.
        assert await b.terminate(timeout=15) == 0
        await wait_reason(a, "ok: leader", "replica-a to lead again")

        journal_a = a.workdir / "journal.sqlite"

        def after_resolve() -> list[RecordedRequest]:
            events = pager_events(stack, rollback_id)
            return events[events.index(resolve) + 1 :]

        async def settled() -> dict[str, Any] | None:
            if after_resolve():
                return {"state": "sent"}  # the false page: fail below, saying what went out
            rows = outbox_rows(journal_a, rollback_id)
            withdrawn = next(
                (r for r in rows if r["channel"] == "pagerduty" and r["state"] == "withdrawn"),
                None,
            )
            # The row is withdrawn first, then logged and counted: wait for all of it.
            counted = await metric(a, WITHDRAWN_METRIC) if withdrawn else None
            return withdrawn if counted else None

        row = await wait_for(settled, 20, "replica-a to withdraw (or send) its old trigger")
        withdrawn_count = await metric(a, WITHDRAWN_METRIC)
    finally:
        if frozen:
            os.kill(a.pid, signal.SIGCONT)
        await a.stop()
        await b.stop()

    # The incident stays closed: nothing for the rollback after replica-b's resolve.
    after = after_resolve()
    assert after == [], [(r.status, r.json["event_action"]) for r in after]
    events = pager_events(stack, rollback_id)
    delivered = [r.json["event_action"] for r in events if 200 <= r.status < 300]
    assert delivered == ["trigger", "resolve"], delivered  # replica-b's, in order

    # replica-a's journal says what it did with the page, and why.
    assert row["resolves"] == 0 and row["kind"] == "rollback_started"
    assert row["attempts"] >= 1  # it was tried, refused, and is still not sent
    assert row["last_error"].startswith(
        f"superseded: rollback {rollback_id} ended under another leader"
    ), row
    assert "replica-b" in row["last_error"]
    assert all(r["state"] != "pending" for r in outbox_rows(journal_a, rollback_id))
    [logged] = [e for e in log_events(a, "stale_trigger_withdrawn") if e["channel"] == "pagerduty"]
    assert logged["dedup_key"] == rollback_id
    assert withdrawn_count == 1.0
