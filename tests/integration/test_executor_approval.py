"""Approve mode in the executor, against kubesim: propose, wait, and act on the verdict.

Every test deploys v1 then v2, runs a rollback to v1 under a policy in
approve mode, and gives (or withholds) a verdict through ``Approvals`` as
the API does. What is asserted is what an on-call engineer relies on: the
phase is on the Deployment before anyone is asked, nothing is patched
before an approval, a rejection or a silence changes nothing (unless told
otherwise), and a target that moved is never rolled back on a stale approval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.approval import EVENT_KIND_APPROVED, Approvals, Outcome, Verdict
from rollbackd.executor import Executor
from rollbackd.model import ANNOTATION_ROLLBACK, Decision, Phase, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import ReasonCode
from rollbackd.state import RollbackState, decode_state
from rollbackd.verify import Verifier
from tests.integration import test_executor_rolling as rolling
from tests.integration.test_executor_rolling import (
    TARGET,
    Harness,
    rollback_to_v1,
    rollbackd_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# The rolling executor's kubesim harness, shared rather than copied.
sim = rolling.sim
harness = rolling.harness


def now() -> datetime:
    return datetime.now(UTC)


def approving_executor(
    harness: Harness,
    approvals: Approvals,
    *,
    timeout: timedelta = timedelta(seconds=30),
    on_timeout_rollback: bool = False,
) -> Executor:
    verifier = Verifier(
        harness.signals.evaluate,
        harness.kube.readiness,
        scrape_interval=timedelta(milliseconds=100),
        intervals=3,
        clock=now,
    )
    return Executor(
        harness.kube,
        verifier,
        harness.recorder,
        harness.pager,
        rollout_timeout=harness.rollout_timeout,
        clock=now,
        policy_for=lambda target: harness.policy,
        approvals=approvals,
        approval_timeout=timeout,
        approve_on_timeout=on_timeout_rollback,
    )


async def waiting(approvals: Approvals, rollback_id: str, harness: Harness) -> None:
    """Until the rollback waits for a verdict: registered, and the proposal paged."""
    async with asyncio.timeout(20):
        while not (  # noqa: ASYNC110  (polled: the registry and the fake pager have no event)
            approvals.waiting(rollback_id)
            and NotificationKind.APPROVAL_REQUESTED in harness.pager.kinds
        ):
            await asyncio.sleep(0.02)


async def approval_pages(harness: Harness, count: int) -> list[Mapping[str, Any]]:
    """The details of the first ``count`` proposal pages, once that many were sent."""
    async with asyncio.timeout(20):
        while True:
            pages = [
                details
                for kind, _, details in harness.pager.pages
                if kind is NotificationKind.APPROVAL_REQUESTED
            ]
            if len(pages) >= count:
                return pages[:count]
            await asyncio.sleep(0.02)


async def recorded_phase(harness: Harness) -> Phase:
    annotations = (await harness.kube.read_deployment(TARGET))["metadata"]["annotations"]
    return decode_state(annotations[ANNOTATION_ROLLBACK]).phase


async def image(harness: Harness) -> str:
    deployment = await harness.kube.read_deployment(TARGET)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def proposal_of_v1() -> tuple[Rollback, Decision]:
    """``rollback_to_v1`` as the dispatcher creates it in approve mode."""
    rollback, decision = rollback_to_v1()
    return replace(rollback, phase=Phase.PENDING_APPROVAL), decision


async def propose(harness: Harness, executor: Executor, approvals: Approvals) -> asyncio.Task[Any]:
    rollback, decision = proposal_of_v1()
    task = asyncio.create_task(executor.run(rollback, decision))
    await waiting(approvals, rollback.id, harness)
    return task


async def test_an_approved_rollback_waits_then_runs_the_normal_path(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    approvals = Approvals()
    task = await propose(harness, approving_executor(harness, approvals), approvals)
    rollback_id = rollback_to_v1()[0].id

    # Waiting: the phase is on the Deployment, the proposal is paged, nothing is patched.
    assert await recorded_phase(harness) is Phase.PENDING_APPROVAL
    assert await image(harness) == "web:2.0"
    kind, summary, details = harness.pager.pages[0]
    assert kind is NotificationKind.APPROVAL_REQUESTED
    assert f"rollbackd approve {rollback_id}" in summary
    assert f'rollbackd reject {rollback_id} --reason "..."' in summary
    assert "from revision 2 to revision 1" in summary
    assert (details["from_images"], details["to_images"]) == (["web:2.0"], ["web:1.0"])
    assert details["diff"] and all("image" in path for path in details["diff"]), details["diff"]

    outcome = await approvals.submit(rollback_id, Verdict(True, "alice", now()))

    # 202 only once the approval is on the Deployment.
    assert outcome is not None and outcome.status == 202, outcome
    assert outcome.phase == "PLANNING"
    result = await task
    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert await image(harness) == "web:1.0"
    assert harness.recorder.phase_names[:2] == [Phase.PENDING_APPROVAL, Phase.PLANNING]
    approved = [data for kind, _, data in harness.recorder.events if kind == EVENT_KIND_APPROVED]
    assert approved and approved[0] is not None and approved[0]["by"] == "alice"
    reasons = [reason for reason, _ in rollbackd_events(harness.sim)]
    assert reasons[:2] == ["RollbackApprovalRequested", "RollbackApproved"]
    assert "RollbackVerified" in reasons


async def test_a_rejected_rollback_changes_nothing_and_says_who(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    approvals = Approvals()
    task = await propose(harness, approving_executor(harness, approvals), approvals)
    rollback_id = rollback_to_v1()[0].id

    outcome = await approvals.submit(
        rollback_id, Verdict(False, "bob", now(), "v2 carries a data migration")
    )

    assert outcome is not None and (outcome.status, outcome.phase) == (202, "REJECTED")
    result = await task
    assert result.phase is Phase.REJECTED and result.phase.terminal
    assert result.reason_code == ReasonCode.REJECTED
    assert "rejected by bob" in result.reason and "data migration" in result.reason
    assert await image(harness) == "web:2.0"
    assert await recorded_phase(harness) is Phase.REJECTED
    assert harness.pager.kinds == [NotificationKind.APPROVAL_REQUESTED, NotificationKind.REJECTED]
    assert ("RollbackRejected", "Normal") in rollbackd_events(harness.sim)


async def test_a_silence_escalates_and_changes_nothing(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    executor = approving_executor(harness, Approvals(), timeout=timedelta(seconds=1))

    result = await executor.run(*proposal_of_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == ReasonCode.APPROVAL_TIMEOUT
    assert "nobody approved or rejected" in result.reason
    assert await image(harness) == "web:2.0"
    assert harness.pager.kinds == [NotificationKind.APPROVAL_REQUESTED, NotificationKind.ESCALATION]


async def test_a_silence_rolls_back_when_told_to_as_approved_by_timeout(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    executor = approving_executor(
        harness, Approvals(), timeout=timedelta(seconds=1), on_timeout_rollback=True
    )

    result = await executor.run(*proposal_of_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert await image(harness) == "web:1.0"
    approved = [data for kind, _, data in harness.recorder.events if kind == EVENT_KIND_APPROVED]
    assert approved and approved[0] is not None and approved[0]["by"] == "timeout"


async def test_a_human_deploy_while_waiting_withdraws_the_proposal(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    approvals = Approvals()
    executor = approving_executor(harness, approvals)
    withdrawn: list[Rollback] = []
    executor.on_withdrawn = withdrawn.append
    task = await propose(harness, executor, approvals)

    await harness.human.set_image("web:3.0")

    result = await task
    assert result.phase is Phase.SUPERSEDED
    assert "waiting for approval" in result.reason
    assert [r.id for r in withdrawn] == [result.id]  # its signals are decided again
    assert await image(harness) == "web:3.0"
    assert Phase.PLANNING not in harness.recorder.phase_names
    # An approval now is answered from the record (the API says 409 SUPERSEDED).
    assert await approvals.submit(result.id, Verdict(True, "alice", now())) is None


async def test_an_approval_after_the_target_moved_is_refused(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.deploy_v1_then_v2()
    approvals = Approvals()
    executor = approving_executor(harness, approvals)
    withdrawn: list[Rollback] = []
    executor.on_withdrawn = withdrawn.append

    async def lagging_watch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        await asyncio.Event().wait()  # the change has not reached the watch yet
        raise AssertionError("unreachable")

    monkeypatch.setattr(harness.kube, "wait_template_change", lagging_watch)
    task = await propose(harness, executor, approvals)
    await harness.human.set_image("web:3.0")

    outcome = await approvals.submit(rollback_to_v1()[0].id, Verdict(True, "alice", now()))

    assert outcome is not None and outcome.status == 409, outcome
    assert "changed while the rollback waited" in outcome.message
    assert "decision is made again" in outcome.message
    result = await task
    assert result.phase is Phase.SUPERSEDED
    assert withdrawn and withdrawn[0].id == result.id
    assert await image(harness) == "web:3.0"


async def test_a_wait_cut_by_a_crash_resumes_and_is_approved(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in_approving(harness, Approvals())
    assert state.phase is Phase.PENDING_APPROVAL
    approvals = Approvals()
    executor = approving_executor(harness, approvals)

    resumed = asyncio.create_task(executor.resume(TARGET, state))
    await waiting(approvals, state.rollback_id, harness)
    # The resumed proposal's page says why in words, as the first one did.
    proposals = await approval_pages(harness, count=2)
    assert proposals[-1]["reason"] == proposals[0]["reason"] == rollback_to_v1()[0].reason
    outcome = await approvals.submit(state.rollback_id, Verdict(True, "carol", now()))

    assert outcome == Outcome(202, outcome.message, "PLANNING")
    result = await resumed
    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert await image(harness) == "web:1.0"


async def test_the_timeout_runs_from_the_recorded_time_not_from_the_restart(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in_approving(harness, Approvals())
    # The wait began an hour ago (as recorded on the Deployment); the timeout is 30 min.
    an_hour_ago = replace(state, updated_at=state.updated_at - timedelta(hours=1))
    executor = approving_executor(harness, Approvals(), timeout=timedelta(minutes=30))

    result = await asyncio.wait_for(executor.resume(TARGET, an_hour_ago), 20)

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == ReasonCode.APPROVAL_TIMEOUT
    assert await image(harness) == "web:2.0"


async def test_a_human_deploy_while_rollbackd_was_down_withdraws_on_resume(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in_approving(harness, Approvals())
    await harness.human.set_image("web:3.0")
    await harness.wait_for_revision(3)

    result = await approving_executor(harness, Approvals()).resume(TARGET, state)

    assert result.phase is Phase.SUPERSEDED
    assert await image(harness) == "web:3.0"


async def crash_in_approving(harness: Harness, approvals: Approvals) -> RollbackState:
    """Cancel a proposal while it waits (the "crash"); the state it left for the next daemon."""
    task = await propose(harness, approving_executor(harness, approvals), approvals)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    annotations = (await harness.kube.read_deployment(TARGET))["metadata"]["annotations"]
    return decode_state(annotations[ANNOTATION_ROLLBACK])
