"""A deposed leader stays silent: SIGSTOP the leader mid-rollback past its Lease, then SIGCONT.

Two real `rollbackd run` processes (replica-a, replica-b) against one
loopback stack. replica-a leads and starts rolling back a bad rollout; it is
frozen right after its rollback patch and its start pages, while the
rollback is in flight. replica-b takes the Lease over and resumes the rollback from the phase
annotation. replica-a is woken only once replica-b has written its own state:
the moment a deposed leader used to patch, conflict, escalate and resolve a
second time. From the time replica-b holds the Lease, kubesim's request log
must show no write from replica-a (told apart by User-Agent) and the pager
sink no page from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import Phase, Target
from rollbackd.state import RollbackState
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.sink import RecordedRequest
from rollbackd.testing.stack import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration._replicas import recorded_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5
LEASE_SECONDS = 4  # the stack's leader_election.lease_duration
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/rollbackd"
FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "5s"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


async def readyz(daemon: DaemonProcess) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{daemon.url}/readyz") as resp,
    ):
        return resp.status, (await resp.json())["reason"]


def lease_holder(stack: Stack) -> str | None:
    lease = stack.sim.store.peek("coordination.k8s.io/v1/leases", "default", "rollbackd")
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


def log_events(daemon: DaemonProcess, since_byte: int) -> list[dict[str, Any]]:
    """The daemon's JSON log events written after byte offset ``since_byte`` of stderr."""
    with daemon.stderr_path.open("rb") as stream:
        stream.seek(since_byte)
        lines = stream.read().decode(errors="replace").splitlines()
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def sent_by(stack: Stack, replica: str) -> list[RecordedRequest]:
    """What the pager sink received from ``replica`` (told apart by User-Agent)."""
    return [
        r for r in stack.sink.requests_to("") if f"({replica})" in (r.header("User-Agent") or "")
    ]


def accepted_pages(stack: Stack) -> list[dict[str, Any]]:
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict) and 200 <= r.status < 300
    ]


async def test_a_leader_frozen_past_its_lease_writes_and_pages_nothing_after_waking(
    stack: Stack, tmp_path: Path
) -> None:
    a = DaemonProcess(
        stack.daemon_config(leader_election={"identity": "replica-a"}, notify=FAST_RETRIES),
        tmp_path / "replica-a",
    )
    b = DaemonProcess(
        stack.daemon_config(
            leader_election={"identity": "replica-b"},
            notify=FAST_RETRIES,
            webhook={"listen": "127.0.0.1:0"},
            journal={"path": str(tmp_path / "replica-b" / "journal.sqlite")},
        ),
        tmp_path / "replica-b",
    )
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=2)
    )
    await stack.wait_rollout_complete(SHOP.name)
    frozen = False
    try:
        await a.start()

        async def a_leads() -> bool:
            return await readyz(a) == (200, "ok: leader")

        await wait_for(a_leads, 30, "replica-a to lead")
        await b.start()

        async def b_stands_by() -> bool:
            return await readyz(b) == (200, "standby: following replica-a")

        # A synced standby is Ready, and says whom it follows.
        await wait_for(b_stands_by, 30, "replica-b Ready as a standby of replica-a")

        await asyncio.sleep(MIN_STABLE_SECONDS)  # v1 must have been stable for min_stable
        await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))

        async def rolling_back() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase is Phase.ROLLING_BACK else None

        in_flight = await wait_for(rolling_back, 60, "replica-a's rollback patch", interval=0.01)

        # Frozen once its start pages have landed: a freeze in the microseconds
        # between the last fence check and the write would let one out after
        # waking, a race no sender can close (test_notify_fenced_send.py
        # covers the check as the request leaves).
        async def start_pages_landed() -> bool:
            return {SLACK_PATH, PAGERDUTY_PATH} <= {r.path for r in sent_by(stack, "replica-a")}

        await wait_for(start_pages_landed, 30, "replica-a's start pages", interval=0.005)
        os.kill(a.pid, signal.SIGSTOP)
        frozen = True
        frozen_at = time.monotonic()
        assert in_flight.holder == "replica-a" and in_flight.term is not None

        async def b_holds_the_lease() -> bool:
            return lease_holder(stack) == "replica-b"

        await wait_for(b_holds_the_lease, 30, "replica-b to take the Lease", interval=0.05)
        # From here on replica-a is deposed (it lost the Lease at the latest now).
        lost_at = time.monotonic()

        async def b_resumed() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.holder == "replica-b" else None

        resumed = await wait_for(b_resumed, 60, "replica-b to resume the rollback", 0.02)
        assert resumed.rollback_id == in_flight.rollback_id
        assert resumed.term is not None and resumed.term > in_flight.term
        assert not resumed.phase.terminal, "replica-b finished before replica-a woke"

        # The scenario: frozen past a whole lease duration (replica-b may have
        # seen replica-a's last renewal before the freeze and taken over sooner).
        await asyncio.sleep(max(0.0, frozen_at + LEASE_SECONDS + 0.5 - time.monotonic()))
        woken_log = a.stderr_size()
        woken_at = datetime.now(UTC)
        os.kill(a.pid, signal.SIGCONT)
        frozen = False

        async def completed() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase.terminal else None

        final = await wait_for(completed, 90, "the rollback to finish")
        assert final.phase is Phase.ROLLBACK_COMPLETED, final
        assert final.holder == "replica-b"

        async def a_stood_down() -> bool:
            events = {e.get("event") for e in log_events(a, woken_log)}
            return "leadership_released" in events and (await readyz(a))[1].startswith("standby")

        await wait_for(a_stood_down, 30, "replica-a to notice it lost the Lease")

        async def resolved() -> list[dict[str, Any]] | None:
            found = [
                p
                for p in accepted_pages(stack)
                if p["dedup_key"] == final.rollback_id and p["event_action"] == "resolve"
            ]
            return found or None

        await wait_for(resolved, 60, "the resolve page from replica-b")
    finally:
        if frozen:
            os.kill(a.pid, signal.SIGCONT)
        await a.stop()
        await b.stop()

    # 0 writes from replica-a after it lost the Lease: nothing at all outside the
    # Lease, and no renewal that landed (a stale one is refused by resourceVersion).
    late = [
        r
        for r in stack.sim.requests
        if "(replica-a)" in r.user_agent and r.is_write and r.at > lost_at
    ]
    assert [r for r in late if r.path != LEASE_PATH] == [], late
    assert [r for r in late if 200 <= r.status < 300] == [], late
    # Its writes before the freeze were logged under the same name: the filter works.
    assert any("(replica-a)" in r.user_agent and r.is_write for r in stack.sim.requests)

    # 0 pages from replica-a after waking: the pager received nothing from it
    # (its start pages landed before the freeze; one may be logged as sent
    # after waking, its answer read then), and saw no escalation and one
    # resolve for the rollback, replica-b's.
    after_wake = log_events(a, woken_log)
    from_a = [r for r in sent_by(stack, "replica-a") if r.at > woken_at]
    assert from_a == [], from_a
    # The filter works: pages carry the sending replica's name (replica-b's here).
    assert any("(replica-b)" in (r.header("User-Agent") or "") for r in stack.sink.requests_to(""))
    pages = [p for p in accepted_pages(stack) if p["dedup_key"] == final.rollback_id]
    assert [p["event_action"] for p in pages].count("resolve") == 1, pages
    escalations = [
        p
        for p in accepted_pages(stack)
        if p["event_action"] == "trigger" and p["payload"]["severity"] == "critical"
    ]
    assert escalations == []
    # It refused, and said so, instead of acting.
    fenced = {"write_fenced", "notification_fenced", "notification_send_fenced"}
    refusals = [e for e in after_wake if e.get("event") in fenced]
    assert refusals or any(e.get("event") == "leadership_lost" for e in after_wake)
