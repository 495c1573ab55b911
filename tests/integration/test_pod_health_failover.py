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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rollbackd.model import Phase, Target
from rollbackd.state import RollbackState
from rollbackd.testing.kubesim.controllers.crashloop import KNOB_CRASH_AFTER
from rollbackd.testing.stack import Stack, deployment_manifest, knobs, wait_for
from tests.integration._replicas import readyz_reason, recorded_state, replica, rollback_ids

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


@pytest.mark.parametrize("killed", ["before_deciding", "after_the_patch"])
async def test_a_crash_looping_version_is_rolled_back_once_across_a_leader_kill(
    stack: Stack, tmp_path: Path, killed: str
) -> None:
    a = replica(stack, tmp_path, "replica-a", sources=POD_HEALTH)
    b = replica(stack, tmp_path, "replica-b", listen="127.0.0.1:0", sources=POD_HEALTH)
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
            assert recorded_state(stack, SHOP) is None  # it had decided nothing
        else:

            async def rolling_back() -> RollbackState | None:
                state = recorded_state(stack, SHOP)
                return state if state is not None and state.phase is Phase.ROLLING_BACK else None

            in_flight = await wait_for(rolling_back, 60, "replica-a's rollback patch", 0.01)
            assert in_flight.holder == "replica-a"
            await a.kill()

        async def finished() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
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
