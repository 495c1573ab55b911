"""Approve mode through the daemon: a real bad rollout, the proposal page, a human's verdict.

kubesim, real Prometheus and Alertmanager, the in-process daemon and the
pager sink. A v2 that fails half its requests is detected as usual; in
approve mode rollbackd pages the proposal and waits in PENDING_APPROVAL.
The verdict comes over the API with the operator token, as the CLI sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.journal import Journal
from rollbackd.manual import manual_rollback
from rollbackd.model import ANNOTATION_MODE, Phase, Rollback, Target
from rollbackd.testing.stack import (
    OPERATOR_TOKEN,
    PAGERDUTY_PATH,
    SLACK_PATH,
    WEBHOOK_TOKEN,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration.test_decision_quality import post_alert

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
V3 = "registry.example/shop:1.5.1"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def started(tmp_path: Path, approval: Mapping[str, Any]) -> Stack:
    stack = Stack(tmp_path / "stack", overrides={"approval": approval})
    await stack.start()
    return stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # Approve mode from the Deployment's annotation; the config says auto.
    s = await started(tmp_path, {"timeout": "60s"})
    try:
        yield s
    finally:
        await s.stop()


async def proposed(stack: Stack) -> Rollback:
    """A stable v1 that asks for approval, a bad v2, and the proposal that follows."""
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image=V1,
            behaviour=knobs(rps=20),
            annotations={ANNOTATION_MODE: "approve"},
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))
    rollback = await stack.wait_rollback(SHOP, phases=("PENDING_APPROVAL",), timeout=45)
    await approval_page(stack, rollback.id)  # what the human acts on
    return rollback


async def approval_page(stack: Stack, rollback_id: str) -> Any:
    return await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("dedup_key") == rollback_id
            and r.json.get("payload", {}).get("custom_details", {}).get("kind")
            == "approval_requested"
        ),
        timeout=20,
    )


async def post(
    stack: Stack, path: str, headers: Mapping[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{stack.rollbackd_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=dict(headers)) as resp,
    ):
        return resp.status, await resp.json()


async def image(stack: Stack) -> str:
    dep = await stack.deployment(SHOP.name)
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def event_reasons(stack: Stack) -> list[str]:
    events = [
        e
        for e in stack.sim.store.list("v1/events", SHOP.namespace)
        if e.get("reportingComponent") == "rollbackd"
    ]
    events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [e["reason"] for e in events]


async def test_an_approved_proposal_rolls_back_and_records_who(stack: Stack) -> None:
    rollback = await proposed(stack)
    approve = f"/api/v1/rollbacks/{rollback.id}/approve"
    assert await image(stack) == V2

    # The page and the Slack message carry the proposal and the exact commands.
    page = await approval_page(stack, rollback.id)
    summary = page.json["payload"]["summary"]
    assert f"rollbackd approve {rollback.id}" in summary
    assert f"rollbackd reject {rollback.id}" in summary
    assert V2 in summary and V1 in summary and "from revision 2 to revision 1" in summary
    assert page.json["payload"]["severity"] == "critical"
    slack = await stack.sink.wait_for(
        lambda r: r.path == SLACK_PATH and f"rollbackd approve {rollback.id}" in str(r.json),
        timeout=20,
    )
    assert slack is not None

    # Credentials: none, Alertmanager's, a guess; nothing changes.
    assert (await post(stack, approve, {}))[0] == 401
    assert (await post(stack, approve, {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}))[0] == 403
    assert (await post(stack, approve, {"Authorization": "Bearer guess"}))[0] == 401
    assert (await post(stack, "/api/v1/rollbacks/rb-unknown/approve", AS_OPERATOR))[0] == 404

    status, body = await post(stack, approve, AS_OPERATOR, {"by": "alice"})
    assert (status, body["phase"]) == (202, "PLANNING"), body
    again, body = await post(stack, approve, AS_OPERATOR, {"by": "alice"})
    assert again == 200 and "already approved by alice" in body["message"]
    other, body = await post(stack, approve, AS_OPERATOR, {"by": "bob"})
    assert other == 409 and "already approved by alice" in body["error"]

    done = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert done.id == rollback.id and done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert await image(stack) == V1
    timeline = await stack.daemon.journal.timeline(rollback.id)
    approved = [e for e in timeline if e.kind == "approved"]
    assert len(approved) == 1 and approved[0].data["by"] == "alice"
    reasons = event_reasons(stack)
    assert reasons.index("RollbackApprovalRequested") < reasons.index("RollbackApproved")
    assert reasons.index("RollbackApproved") < reasons.index("RollbackStarted")
    finished, body = await post(
        stack,
        f"/api/v1/rollbacks/{rollback.id}/reject",
        AS_OPERATOR,
        {"by": "carol", "reason": "too late"},
    )
    assert finished == 409 and "ROLLBACK_COMPLETED" in body["error"]


async def test_a_rejected_proposal_changes_nothing_and_closes_the_page(stack: Stack) -> None:
    rollback = await proposed(stack)

    status, body = await post(
        stack,
        f"/api/v1/rollbacks/{rollback.id}/reject",
        AS_OPERATOR,
        {"by": "bob", "reason": "v2 runs a migration; fixing forward"},
    )

    assert (status, body["phase"]) == (202, "REJECTED"), body
    ended = await stack.wait_rollback(SHOP, phases=("REJECTED",))
    assert "rejected by bob" in ended.reason and "fixing forward" in ended.reason
    assert await image(stack) == V2
    assert await stack.revision(SHOP.name) == 2
    await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("event_action") == "resolve"
            and r.json.get("dedup_key") == rollback.id
        ),
        timeout=20,
    )
    assert "RollbackRejected" in event_reasons(stack)
    late, body = await post(
        stack, f"/api/v1/rollbacks/{rollback.id}/approve", AS_OPERATOR, {"by": "alice"}
    )
    assert late == 409 and "rejected by bob" in body["error"]
    # The anomaly goes on: another alert about it is not proposed again (the cooldown).
    await post_alert(stack, fingerprint="after-reject", starts_at=datetime.now(UTC))

    async def held_by_the_cooldown() -> bool:
        decisions = await stack.daemon.journal.decisions(target=SHOP, limit=50)
        return any(d["reason_code"] == "cooldown" for d in decisions)

    await wait_for(held_by_the_cooldown, 30, "a signal after the rejection held by the cooldown")
    assert [r.id for r in await stack.daemon.journal.list_rollbacks(target=SHOP)] == [rollback.id]


async def test_a_human_fix_while_waiting_withdraws_the_proposal_and_refuses_the_approval(
    stack: Stack,
) -> None:
    rollback = await proposed(stack)

    await stack.roll_out(SHOP.name, image=V3, behaviour=knobs(rps=20))

    ended = await stack.wait_rollback(SHOP, phases=("SUPERSEDED",))
    assert ended.id == rollback.id and "waiting for approval" in ended.reason
    status, body = await post(
        stack, f"/api/v1/rollbacks/{rollback.id}/approve", AS_OPERATOR, {"by": "alice"}
    )
    assert status == 409 and "SUPERSEDED" in body["error"], body
    assert await image(stack) == V3
    # The signals behind the withdrawn proposal were decided again, on revision 3.
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=100)
    assert any("revision 3" in str(d.get("reason")) for d in decisions), decisions


@pytest.mark.parametrize(
    ("on_timeout", "phase"), [("escalate", "ESCALATED"), ("rollback", "ROLLBACK_COMPLETED")]
)
async def test_a_silence_escalates_or_rolls_back_as_configured(
    tmp_path: Path, on_timeout: str, phase: str
) -> None:
    stack = await started(tmp_path, {"timeout": "2s", "on_timeout": on_timeout})
    try:
        rollback = await proposed(stack)
        ended = await stack.wait_rollback(SHOP, phases=(phase,), timeout=60)
        assert ended.id == rollback.id
        if on_timeout == "escalate":
            assert ended.reason_code == "approval_timeout"
            assert await image(stack) == V2
            page = await stack.sink.wait_for(
                lambda r: (
                    r.path == PAGERDUTY_PATH
                    and isinstance(r.json, dict)
                    and r.json.get("payload", {}).get("custom_details", {}).get("reason_code")
                    == "approval_timeout"
                ),
                timeout=20,
            )
            assert "nobody approved or rejected" in page.json["payload"]["summary"]
        else:
            assert await image(stack) == V1
            timeline = await stack.daemon.journal.timeline(rollback.id)
            assert [e.data["by"] for e in timeline if e.kind == "approved"] == ["timeout"]
    finally:
        await stack.stop()


async def test_a_manual_rollback_in_approve_mode_is_its_own_approval(tmp_path: Path) -> None:
    async with Stack(tmp_path / "manual", with_daemon=False) as stack:
        await stack.create_deployment(
            deployment_manifest(SHOP.name, image=V1, behaviour=knobs(), replicas=1)
        )
        await stack.wait_rollout_complete(SHOP.name)
        await asyncio.sleep(MIN_STABLE_SECONDS)
        await stack.roll_out(SHOP.name, image=V2, behaviour=knobs())
        await stack.wait_rollout_complete(SHOP.name)
        policy = stack.settings.policy.model_copy(update={"mode": "approve"})
        settings = stack.settings.model_copy(update={"policy": policy})

        # The operator asked explicitly: no second approval (and no HTTP to give one).
        rollback_id = await asyncio.wait_for(
            manual_rollback(settings, SHOP, reason="bad release"), 60
        )

        assert await image(stack) == V1
        journal = await Journal.open(settings.journal.path, create=False)
        try:
            done = await journal.get_rollback(rollback_id)
            timeline = await journal.timeline(rollback_id)
        finally:
            await journal.close()
        assert done is not None and done.phase is Phase.ROLLBACK_COMPLETED
        assert "phase:PENDING_APPROVAL" not in [e.kind for e in timeline]
