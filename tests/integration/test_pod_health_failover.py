"""Pod health across a change of leader: a crash-looping version is rolled back once.

The pod health poller keeps its for-count in memory, on the leader only. Two
real `rollbackd run` processes (replica-a leads, replica-b stands by, each
with its own journal) watch one Deployment whose v2 crash-loops with no
metric breach, so pod health is the only signal. replica-a dies (SIGKILL)
either before it decided anything or right after its rollback patch.
Either way replica-b, once it leads, rolls back exactly once: it judges the
pods itself from the start (nothing in the dead leader's memory is needed),
or resumes the rollback in flight under the same id, and completes it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.kubesim.controllers.crashloop import KNOB_CRASH_AFTER
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import Stack, deployment_manifest, knobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
POD_HEALTH = {"kubernetes": {"pod_health": {"interval": "1s"}}}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


def recorded_state(stack: Stack) -> RollbackState | None:
    deployment = stack.sim.store.get("apps/v1/deployments", SHOP.namespace, SHOP.name)
    raw = (deployment["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


def rollback_ids(journal: Path) -> set[str]:
    if not journal.exists():
        return set()
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id FROM rollbacks WHERE kind = 'rollback'").fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


async def readyz_reason(daemon: DaemonProcess) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
        session.get(f"{daemon.url}/readyz") as resp,
    ):
        return str((await resp.json())["reason"])


def replica(stack: Stack, tmp_path: Path, name: str, listen: str | None = None) -> DaemonProcess:
    sections: dict[str, Mapping[str, Any]] = {
        "leader_election": {"identity": name},
        "sources": POD_HEALTH,
        "journal": {"path": str(tmp_path / name / "journal.sqlite")},
    }
    if listen is not None:
        sections["webhook"] = {"listen": listen}
    return DaemonProcess(stack.daemon_config(**sections), tmp_path / name)


@pytest.mark.parametrize("killed", ["before_deciding", "after_the_patch"])
async def test_a_crash_looping_version_is_rolled_back_once_across_a_leader_kill(
    stack: Stack, tmp_path: Path, killed: str
) -> None:
    a = replica(stack, tmp_path, "replica-a")
    b = replica(stack, tmp_path, "replica-b", listen="127.0.0.1:0")
    await stack.create_deployment(deployment_manifest(SHOP.name, image=V1, behaviour=knobs()))
    await stack.wait_rollout_complete(SHOP.name)
    async with a, b:

        async def a_leads_b_follows() -> bool:
            return (await readyz_reason(a), await readyz_reason(b)) == (
                "ok: leader",
                "standby: following replica-a",
            )

        await wait_for(a_leads_b_follows, 30, "replica-a leading, replica-b standing by")
        await asyncio.sleep(MIN_STABLE_SECONDS)  # only a stable v1 is restored
        # v2 exits 200 ms after each start, before its 300 ms readiness: never Ready,
        # so no request fails and only pod health can tell.
        await stack.roll_out(SHOP.name, image=V2, behaviour={**knobs(), KNOB_CRASH_AFTER: "200ms"})

        in_flight: RollbackState | None = None
        if killed == "before_deciding":
            await a.kill()
            assert recorded_state(stack) is None  # it had decided nothing
        else:

            async def rolling_back() -> RollbackState | None:
                state = recorded_state(stack)
                return state if state is not None and state.phase is Phase.ROLLING_BACK else None

            in_flight = await wait_for(rolling_back, 60, "replica-a's rollback patch", 0.01)
            assert in_flight.holder == "replica-a"
            await a.kill()

        async def finished() -> RollbackState | None:
            state = recorded_state(stack)
            return state if state is not None and state.phase.terminal else None

        final = await wait_for(finished, 90, "replica-b to roll back and verify")

    assert final.phase is Phase.ROLLBACK_COMPLETED, final
    assert final.holder == "replica-b"
    if in_flight is not None:
        assert final.rollback_id == in_flight.rollback_id  # resumed, not started again
    # One rollback: v1 -> v2 -> v1 is revision 3 and nothing after it, one record.
    assert await stack.revision(SHOP.name) == 3
    deployment = await stack.deployment(SHOP.name)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    ids = rollback_ids(tmp_path / "replica-a" / "journal.sqlite") | rollback_ids(
        tmp_path / "replica-b" / "journal.sqlite"
    )
    assert ids == {final.rollback_id}
