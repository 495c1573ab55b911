"""Approve mode across a leader change: the new leader resumes the wait and takes the approval.

Two real `rollbackd run` processes against one loopback stack, each with its
own journal (the chart's emptyDir). replica-a leads and proposes rolling
back a bad v2 of a Deployment in approve mode (PENDING_APPROVAL on the
Deployment, the approval request paged with the approve command). Before the
failover, an approval sent to the standby replica-b is refused with 503 and a
retry hint, and nothing is recorded. replica-a is SIGKILLed; an approval sent
to its URL does not get through. replica-b takes the Lease while the API
server is slow (its first read of the Deployment is held): an approval sent
then is a 503 "being resumed" that the CLI retries, not a 404 (its journal
never saw the proposal; the Deployment's annotation says it exists). It
resumes the wait from that annotation alone, from the time replica-a
recorded (the original deadline), without rewriting it; the exact
`rollbackd approve ID --url <replica-b>` the on-call would run is accepted,
and the rollback completes.

Exactly once: one template change for the rollback (v1 -> v2 -> v1 is
revision 3), one rollback id in either journal, and on each channel the
approval request is only ever sent under that rollback's id (replica-b may
re-send it, which updates the same incident, never opens a second one).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_MODE, Phase, Target
from rollbackd.state import RollbackState
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import (
    OPERATOR_HEADERS,
    PAGERDUTY_PATH,
    SLACK_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration._replicas import readyz_reason, recorded_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE = "1s"
MIN_STABLE_SECONDS = 1.2  # policy: v1 must have been the live version this long
SHOP_PATH = r"/apis/apps/v1/namespaces/default/deployments/shop$"
RESUME_READ_DELAY = 2.0
FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "2s"}
APPROVAL_CLASS = "approval_requested"  # the PagerDuty payload's class for the request
SLACK_APPROVAL_TITLE = "Rollback proposed"
SLACK_KEY = re.compile(r"rollbackd · \w+ · `([^`]+)`")


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


async def wait_reason(daemon: DaemonProcess, expected: str, what: str) -> None:
    async def says() -> bool:
        return await readyz_reason(daemon) == expected

    await wait_for(says, 30, what, interval=0.1)


async def post_approve(url: str, rollback_id: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(
            f"{url}/api/v1/rollbacks/{rollback_id}/approve",
            json={"by": "too-early"},
            headers=OPERATOR_HEADERS,
        ) as resp,
    ):
        return resp.status, await resp.json()


def journal_rows(journal: Path, sql: str, *args: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def approval_requests(stack: Stack) -> dict[str, list[str]]:
    """The dedup keys of every approval request each channel accepted, in order."""
    pagerduty = [
        r.json["dedup_key"]
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if 200 <= r.status < 300
        and isinstance(r.json, dict)
        and r.json.get("event_action") == "trigger"
        and r.json["payload"]["class"] == APPROVAL_CLASS
    ]
    slack = []
    for r in stack.sink.requests_to(SLACK_PATH):
        if 200 <= r.status < 300 and SLACK_APPROVAL_TITLE in str(r.json.get("text", "")):
            match = SLACK_KEY.search(str(r.json["blocks"]))
            slack.append(match.group(1) if match else "no dedup key")
    return {"pagerduty": pagerduty, "slack": slack}


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rollbackd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def bad_release_under_two_replicas(stack: Stack, a: DaemonProcess, b: DaemonProcess) -> None:
    """Shop v1 in approve mode, replica-a leading and replica-b standing by, then a failing v2."""
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image=V1,
            behaviour=knobs(rps=20),
            replicas=2,
            annotations={ANNOTATION_MODE: "approve"},
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    await a.start()
    await wait_reason(a, "ok: leader", "replica-a to lead")
    await b.start()
    await wait_reason(b, "standby: following replica-a", "replica-b standing by")
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: v1 was stable for min_stable
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))


async def test_a_proposal_survives_the_leaders_kill_and_is_approved_on_the_new_leader(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = replica(stack, tmp_path, "replica-a"), replica(stack, tmp_path, "replica-b")
    journal_a, journal_b = a.workdir / "journal.sqlite", b.workdir / "journal.sqlite"
    try:
        await bad_release_under_two_replicas(stack, a, b)

        async def proposed() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase is Phase.PENDING_APPROVAL else None

        waiting = await wait_for(proposed, 45, "replica-a's proposal", interval=0.1)
        rollback_id = waiting.rollback_id
        assert waiting.holder == "replica-a"
        await stack.sink.wait_for(
            lambda r: (
                r.path == PAGERDUTY_PATH
                and 200 <= r.status < 300
                and f"rollbackd approve {rollback_id}" in str(r.json)
            ),
            timeout=20,
        )

        # The standby records nothing and says where to go.
        status, body = await post_approve(b.url, rollback_id)
        assert status == 503, body
        assert "standby" in body["error"] and "retry" in body["hint"], body
        assert recorded_state(stack, SHOP) == waiting

        await a.kill()
        with pytest.raises(aiohttp.ClientConnectionError):
            await post_approve(a.url, rollback_id)
        assert recorded_state(stack, SHOP) == waiting

        # A slow API server at the failover: replica-b's first read of the
        # Deployment is held, so it leads for a while before its resume has
        # journaled the proposal its own journal never saw.
        stack.sim.faults.delay("get", SHOP_PATH, RESUME_READ_DELAY, count=1)
        await wait_reason(b, "ok: leader", "replica-b to take the Lease")
        status, body = await post_approve(b.url, rollback_id)
        assert status == 503, body  # not 404: the Deployment says the rollback exists
        assert "being resumed" in body["error"] and body["phase"] == "PENDING_APPROVAL", body

        # replica-b resumes the wait from replica-a's recorded time (the
        # original deadline), and does not rewrite the Deployment's record.
        async def resumed() -> datetime | None:
            rows = journal_rows(
                journal_b, "SELECT phase, updated_at FROM rollbacks WHERE id = ?", rollback_id
            )
            waits = [at for phase, at in rows if phase == str(Phase.PENDING_APPROVAL)]
            return datetime.fromisoformat(waits[0]) if waits else None

        since = await wait_for(resumed, 15, "replica-b to resume the wait", interval=0.05)
        assert since == waiting.updated_at
        assert recorded_state(stack, SHOP) == waiting

        code, out, err = await cli(
            "approve", rollback_id, "--config", str(b.config_path), "--url", b.url, "--by", "oncall"
        )
        assert code == 0, (out, err)
        assert "approved by oncall" in out and "PLANNING" in out, out

        async def finished() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase.terminal else None

        final = await wait_for(finished, 45, "replica-b to finish the rollback", interval=0.1)
        assert final.phase is Phase.ROLLBACK_COMPLETED, final
        assert final.rollback_id == rollback_id and final.holder == "replica-b"
    finally:
        await a.stop()
        await b.stop()

    # One rollback patch: v1 (1) -> v2 (2) -> v1 again (3), nothing after it.
    assert await stack.revision(SHOP.name) == 3
    deployment = await stack.deployment(SHOP.name)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    patched = "SELECT 1 FROM events WHERE rollback_id = ? AND kind = 'phase:ROLLING_BACK'"
    assert len(journal_rows(journal_a, patched, rollback_id)) == 0
    assert len(journal_rows(journal_b, patched, rollback_id)) == 1
    ids = "SELECT id FROM rollbacks WHERE kind = 'rollback'"
    assert {r[0] for r in journal_rows(journal_a, ids) + journal_rows(journal_b, ids)} == {
        rollback_id
    }

    # One proposal per channel: every request under the one rollback id.
    requests = approval_requests(stack)
    for channel, keys in requests.items():
        assert keys and set(keys) == {rollback_id}, (channel, requests)
    # Who approved, on which replica.
    timeline = journal_rows(
        journal_b, "SELECT kind, message FROM events WHERE rollback_id = ?", rollback_id
    )
    assert any(kind == "approved" and "oncall" in message for kind, message in timeline)
    assert not journal_rows(
        journal_a, "SELECT 1 FROM events WHERE rollback_id = ? AND kind = 'approved'", rollback_id
    )
