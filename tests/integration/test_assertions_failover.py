"""Data assertions across a change of leader: a failing assertion still escalates, once.

Two real `rollbackd run` processes (replica-a leads, replica-b stands by,
each with its own journal) verify a rollback whose restored v1 fails 2 % of
its requests: under the error-ratio threshold, so the metrics look healthy,
but its data assertion ("not one 500") fails. replica-a is killed once its
rollback is VERIFYING, before any interval could end it. replica-b resumes
the rollback under the same id, asks the assertion itself, and escalates it
as ``verify_assertion_failed`` with the query quoted: the dead leader's
verification in memory is not needed, and the rollback is not repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.config.assertions import ANNOTATION_ASSERTIONS
from rollbackd.model import Phase, Target
from rollbackd.state import RollbackState
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs, wait_for
from tests.integration._replicas import readyz_reason, recorded_state, replica

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SHOP = Target("default", "shop")
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
NO_SERVER_ERRORS: dict[str, Any] = {
    "name": "no-server-errors",
    "expr": 'sum(rate(http_requests_total{namespace="{namespace}",deployment="{deployment}",'
    'code="500"}[{window}]))',
    "op": "==",
    "value": 0,
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Intervals long enough that replica-a is killed before it could finish verifying.
    overrides = {"verify": {"intervals": 3, "timeout": "60s", "assertions": [NO_SERVER_ERRORS]}}
    async with Stack(tmp_path / "stack", with_daemon=False, overrides=overrides) as started:
        yield started


async def test_a_failing_assertion_escalates_once_after_the_verifying_leader_is_killed(
    stack: Stack, tmp_path: Path
) -> None:
    a = replica(stack, tmp_path, "replica-a")
    b = replica(stack, tmp_path, "replica-b", listen="127.0.0.1:0")
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image="registry.example/shop:1.4.0",
            behaviour=knobs(error_rate=0.02, rps=100),
            annotations={ANNOTATION_ASSERTIONS: NO_SERVER_ERRORS["name"]},
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    async with a, b:

        async def a_leads_b_follows() -> bool:
            return (await readyz_reason(a), await readyz_reason(b)) == (
                "ok: leader",
                "standby: following replica-a",
            )

        await wait_for(a_leads_b_follows, 30, "replica-a leading, replica-b standing by")
        await asyncio.sleep(MIN_STABLE_SECONDS)  # only a stable v1 is restored
        await stack.roll_out(
            SHOP.name, image="registry.example/shop:1.5.0", behaviour=knobs(error_rate=0.3)
        )

        async def verifying() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase is Phase.VERIFYING else None

        in_flight = await wait_for(verifying, 60, "replica-a verifying its rollback", 0.01)
        assert in_flight.holder == "replica-a"
        await a.kill()

        async def finished() -> RollbackState | None:
            state = recorded_state(stack, SHOP)
            return state if state is not None and state.phase.terminal else None

        final = await wait_for(finished, 90, "replica-b to resume and end the rollback")

        def critical_pages() -> list[dict[str, Any]]:
            return [
                r.json
                for r in stack.sink.requests_to(PAGERDUTY_PATH)
                if isinstance(r.json, dict)
                and 200 <= r.status < 300
                and r.json.get("payload", {}).get("severity") == "critical"
            ]

        async def paged() -> list[dict[str, Any]] | None:
            return critical_pages() or None

        await wait_for(paged, 30, "the escalation page")

    assert final.phase is Phase.ESCALATED, final
    assert final.rollback_id == in_flight.rollback_id and final.holder == "replica-b"
    assert final.reason_code == "verify_assertion_failed"
    # One template change (v1 -> v2 -> v1 is revision 3): resumed, never rolled back again.
    assert await stack.revision(SHOP.name) == 3
    [page] = critical_pages()
    summary = page["payload"]["summary"]
    assert 'assertion "no-server-errors" failed: ' in summary, summary
    assert 'deployment="shop",code="500"}[' in summary and "expected == 0" in summary, summary
