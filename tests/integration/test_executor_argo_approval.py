"""Approve mode for an Argo Rollout, against kubesim: the abort proposed, then done or not.

Rollout default/web is paused at setWeight 25 with a breaching canary (the
helpers of test_executor_argo.py); the decision is made on the watch cache
and the rollback created in PENDING_APPROVAL, as the dispatcher does in
approve mode. Verdicts arrive through ``Approvals``, as the API hands them
over. What an on-call engineer relies on: the phase and the proposed abort
are on the Rollout before anyone is asked; nothing is aborted before an
approval; a rejection or a silence aborts nothing (unless told otherwise);
a Rollout that moved while it waited (aborted, promoted, a new canary) is
never aborted on the stale approval; a kill anywhere aborts at most once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.approval import Approvals, Verdict, give_verdict
from rollbackd.argo import ANNOTATION_ARGO_ABORT
from rollbackd.executor import Executor
from rollbackd.kube import Kube
from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Policy, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import ReasonCode
from rollbackd.stages import watched_rollback_state
from rollbackd.state import RollbackState, decode_state
from rollbackd.strategies import argotarget
from rollbackd.testing.kubesim import KubeSim
from rollbackd.verify import Verifier
from tests.integration import test_executor_argo_run as argo_run
from tests.integration.test_executor_argo import (
    ROLLOUTS,
    STATUS_PATH,
    WEB,
    aborts,
    paused_canary,
    status,
    until,
)
from tests.integration.test_executor_argo_run import Journal, decided
from tests.integration.test_executor_rolling import FakeSignals, RecordingPager

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

kube = argo_run.kube  # the executor specs' connected adapter, shared rather than copied


def now() -> datetime:
    return datetime.now(UTC)


def approving(
    kube: Kube,
    approvals: Approvals,
    journal: Journal,
    pager: RecordingPager,
    *,
    timeout: timedelta = timedelta(seconds=30),
    on_timeout_rollback: bool = False,
    retry_budget: float | None = None,
) -> Executor:
    verifier = Verifier(
        FakeSignals().evaluate,
        kube.readiness,
        scrape_interval=timedelta(milliseconds=100),
        intervals=3,
        clock=now,
    )
    return Executor(
        kube,
        verifier,
        journal,
        pager,
        rollout_timeout=20.0,
        clock=now,
        policy_for=lambda target: Policy(),
        approvals=approvals,
        approval_timeout=timeout,
        approve_on_timeout=on_timeout_rollback,
        retry_budget=retry_budget,
    )


async def proposal(kube: Kube) -> tuple[Rollback, Any]:
    rollback, decision = await decided(kube)
    return replace(rollback, phase=Phase.PENDING_APPROVAL), decision


async def waiting(approvals: Approvals, rollback_id: str, pager: RecordingPager) -> None:
    """Until the rollback waits for a verdict: registered, and the proposal paged."""
    async with asyncio.timeout(20):
        while not (  # noqa: ASYNC110  (polled: the registry and the fake pager have no event)
            approvals.waiting(rollback_id) and NotificationKind.APPROVAL_REQUESTED in pager.kinds
        ):
            await asyncio.sleep(0.02)


async def recorded(kube: Kube) -> RollbackState:
    annotations = (await kube.read_rollout(WEB))["metadata"]["annotations"]
    return decode_state(annotations[ANNOTATION_ROLLBACK])


async def started(
    kube: Kube,
    approvals: Approvals,
    pager: RecordingPager,
    journal: Journal | None = None,
    **kw: Any,
) -> tuple[Executor, asyncio.Task[Rollback], Rollback]:
    rollback, decision = await proposal(kube)
    executor = approving(kube, approvals, journal or Journal(), pager, **kw)
    task = asyncio.create_task(executor.run(rollback, decision))
    await waiting(approvals, rollback.id, pager)
    return executor, task, rollback


async def test_an_approved_abort_waits_for_the_verdict_then_aborts_once_and_verifies(
    kubesim: KubeSim, kube: Kube
) -> None:
    paused = await paused_canary(kube)
    canary, stable = paused["currentPodHash"], paused["stableRS"]
    approvals, pager, journal = Approvals(), RecordingPager(), Journal()
    _, task, rollback = await started(kube, approvals, pager, journal)

    # Waiting: the phase and the proposed abort are on the Rollout, nothing is aborted.
    state = await recorded(kube)
    assert (state.rollback_id, state.phase) == (rollback.id, Phase.PENDING_APPROVAL)
    annotations = (await kube.read_rollout(WEB))["metadata"]["annotations"]
    assert f'"canary_hash": "{canary}"' in annotations[ANNOTATION_ARGO_ABORT]
    assert aborts(kubesim) == [] and "abort" not in await status(kube)
    kind, summary, details = pager.pages[0]
    assert kind is NotificationKind.APPROVAL_REQUESTED
    assert (
        f"abort Rollout default/web: canary {canary} to 0, stable {stable} keeps serving" in summary
    )
    assert "example/app:2.0 -> example/app:1.0" in summary
    assert f"rollbackd approve {rollback.id}" in summary
    assert f'rollbackd reject {rollback.id} --reason "..."' in summary
    assert details["changes"]["strategy"] == "argo-rollouts"

    outcome = await approvals.submit(rollback.id, Verdict(True, "alice", now()))

    assert outcome is not None and (outcome.status, outcome.phase) == (202, "PLANNING")
    done = await task
    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert [p for p, _, _ in journal.phases] == [
        Phase.PENDING_APPROVAL,
        Phase.PLANNING,
        Phase.ROLLING_BACK,
        Phase.VERIFYING,
        Phase.ROLLBACK_COMPLETED,
    ]
    assert "approved" in journal.events and journal.events.count("verify_interval") == 3
    assert aborts(kubesim) == [200] and (await status(kube))["abort"] is True
    assert (await recorded(kube)).phase is Phase.ROLLBACK_COMPLETED


async def test_a_rejected_abort_writes_nothing_but_its_ending(kubesim: KubeSim, kube: Kube) -> None:
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    _, task, rollback = await started(kube, approvals, pager)

    verdict = Verdict(False, "bob", now(), "the canary is being fixed forward")
    outcome = await approvals.submit(rollback.id, verdict)

    assert outcome is not None and (outcome.status, outcome.phase) == (202, "REJECTED")
    done = await task
    assert done.phase is Phase.REJECTED and "rejected by bob" in (done.reason or "")
    assert aborts(kubesim) == [] and "abort" not in await status(kube)
    assert (await recorded(kube)).phase is Phase.REJECTED
    assert pager.kinds == [NotificationKind.APPROVAL_REQUESTED, NotificationKind.REJECTED]


@pytest.mark.parametrize("on_timeout_rollback", [False, True])
async def test_a_silence_follows_the_configured_policy(
    kubesim: KubeSim, kube: Kube, on_timeout_rollback: bool
) -> None:
    await paused_canary(kube)
    rollback, decision = await proposal(kube)
    executor = approving(
        kube,
        Approvals(),
        Journal(),
        RecordingPager(),
        timeout=timedelta(seconds=1),
        on_timeout_rollback=on_timeout_rollback,
    )

    done = await executor.run(rollback, decision)

    if on_timeout_rollback:  # approved by "timeout": the abort runs once
        assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
        assert aborts(kubesim) == [200]
    else:
        assert (done.phase, done.reason_code) == (Phase.ESCALATED, ReasonCode.APPROVAL_TIMEOUT)
        assert aborts(kubesim) == [] and "abort" not in await status(kube)


async def promote_full(kube: Kube) -> None:
    """``kubectl argo rollouts promote --full``: the canary becomes the stable version."""
    await kube.request(
        "PATCH",
        f"{ROLLOUTS}/web/status",
        body={"status": {"promoteFull": True}},
        content_type="application/merge-patch+json",
    )
    await until(
        lambda: status(kube),
        lambda s: bool(s.get("stableRS")) and s.get("stableRS") == s.get("currentPodHash"),
    )


async def redeploy(kube: Kube) -> None:
    await paused_canary(kube, "example/app:3.0")


async def human_abort(kube: Kube) -> None:
    await kube.abort_rollout(WEB)


async def human_pause(kube: Kube) -> None:
    """``kubectl argo rollouts pause``: spec.paused, no status patch."""
    await kube.request(
        "PATCH",
        f"{ROLLOUTS}/web",
        body={"spec": {"paused": True}},
        content_type="application/merge-patch+json",
    )


@pytest.mark.parametrize(
    ("change", "reason_code", "says"),
    [
        (human_abort, ReasonCode.ROLLOUT_ALREADY_ABORTED, "aborted by someone else"),
        (promote_full, ReasonCode.ROLLOUT_NOT_UPDATING, "has no canary any more"),
        (redeploy, ReasonCode.TARGET_CHANGED, "its canary is now"),
        (human_pause, ReasonCode.PAUSED, "a human paused it (spec.paused)"),
    ],
)
async def test_a_rollout_that_moves_while_waiting_withdraws_the_proposal(
    kubesim: KubeSim, kube: Kube, change: Any, reason_code: ReasonCode, says: str
) -> None:
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    executor, task, rollback = await started(kube, approvals, pager)
    withdrawn: list[Rollback] = []
    executor.on_withdrawn = withdrawn.append
    mark = kubesim.requests.mark()
    image = "example/app:3.0" if change is redeploy else "example/app:2.0"

    await change(kube)

    done = await task
    assert (done.phase, done.reason_code) == (Phase.SUPERSEDED, reason_code), done.reason
    assert says in (done.reason or "") and "nothing was aborted" in (done.reason or "")
    assert [r.id for r in withdrawn] == [done.id]  # its signals are decided again
    # The only status patch is the human's own (abort, promote); rollbackd sent none.
    assert len(aborts(kubesim, mark)) == (0 if change in (redeploy, human_pause) else 1)
    assert pager.kinds[-1] is NotificationKind.SUPERSEDED
    now_running = pager.pages[-1][2]["superseded_by"]  # what the report prints
    assert now_running["images"] == [image] and now_running["aborted"] is (change is human_abort)
    assert (await recorded(kube)).phase is Phase.SUPERSEDED
    # An approval now finds nobody waiting: the API answers it from the record (409).
    assert await approvals.submit(rollback.id, Verdict(True, "alice", now())) is None


async def test_an_api_outage_while_waiting_delays_the_withdrawal_and_does_not_escalate(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    # A retry budget far shorter than the outage: each fresh read fails fast.
    _, task, _ = await started(kube, approvals, pager, retry_budget=0.5)
    rollout_reads = f"^{ROLLOUTS}/web$"
    kubesim.faults.fail_for("get", rollout_reads, 503, duration=3.0)
    mark = kubesim.requests.mark()

    await human_abort(kube)  # the watch sees it; the confirming read gets 503s

    done = await task
    assert (done.phase, done.reason_code) == (Phase.SUPERSEDED, ReasonCode.ROLLOUT_ALREADY_ABORTED)
    failed = [r for r in kubesim.requests.since(mark) if r.status == 503 and r.method == "GET"]
    assert failed, "the wait did meet the outage"


async def test_an_approval_that_finds_a_new_canary_is_refused_and_aborts_nothing(
    kubesim: KubeSim, kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    await paused_canary(kube)
    # The watch has not seen the change yet: only the approval's fresh read can.
    monkeypatch.setattr(argotarget, "_CACHE_POLL_SECONDS", 3600.0)
    approvals, pager = Approvals(), RecordingPager()
    executor, task, rollback = await started(kube, approvals, pager)
    withdrawn: list[Rollback] = []
    executor.on_withdrawn = withdrawn.append
    await redeploy(kube)

    outcome = await approvals.submit(rollback.id, Verdict(True, "alice", now()))

    assert outcome is not None and outcome.status == 409, outcome
    assert "Rollout default/web changed while the abort waited" in outcome.message
    assert "decision is made again" in outcome.message
    done = await task
    assert (done.phase, done.reason_code) == (Phase.SUPERSEDED, ReasonCode.TARGET_CHANGED)
    assert [r.id for r in withdrawn] == [done.id]
    assert aborts(kubesim) == [] and "abort" not in await status(kube)


async def killed_while_waiting(kube: Kube) -> tuple[RollbackState, Any]:
    """The first process proposes and dies while it waits; what its successor finds."""
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    _, task, rollback = await started(kube, approvals, pager)
    task.cancel()  # SIGKILL: the annotation keeps the phase, nothing else happens
    with pytest.raises(asyncio.CancelledError):
        await task
    state = await recorded(kube)
    assert (state.rollback_id, state.phase) == (rollback.id, Phase.PENDING_APPROVAL)
    return state, rollback


async def test_killed_while_waiting_the_next_process_resumes_the_wait_and_aborts_once_approved(
    kubesim: KubeSim, kube: Kube
) -> None:
    state, rollback = await killed_while_waiting(kube)
    approvals, pager, journal = Approvals(), RecordingPager(), Journal()
    executor = approving(kube, approvals, journal, pager)
    resumed = asyncio.create_task(executor.resume(WEB, state))
    await waiting(approvals, rollback.id, pager)
    # The wait resumed from the recorded time, without rewriting the phase.
    assert (await recorded(kube)).updated_at == state.updated_at
    assert "(resumed)" in journal.phases[0][1]

    outcome = await approvals.submit(rollback.id, Verdict(True, "alice", now()))

    assert outcome is not None and outcome.status == 202, outcome
    done = await resumed
    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert aborts(kubesim) == [200]


class EmptyJournal:
    """A new leader's journal: it never saw the proposal another leader made."""

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return None

    async def timeline(self, rollback_id: str) -> list[Any]:
        return []


async def test_a_new_leader_answers_an_approval_from_the_rollout_until_its_wait_resumes(
    kube: Kube,
) -> None:
    _, rollback = await killed_while_waiting(kube)

    async def in_the_cache() -> Rollback | None:
        return kube.annotated_rollback(rollback.id, now=now())

    await until(in_the_cache, lambda found: found is not None)  # the watch brought it in
    verdict = Verdict(True, "alice", now())

    outcome = await give_verdict(
        Approvals(),
        EmptyJournal(),
        rollback.id,
        verdict,
        lambda rollback_id: kube.annotated_rollback(rollback_id, now=now()),
    )

    assert (outcome.status, outcome.phase) == (503, "PENDING_APPROVAL")  # retried, not 404
    # The outbox's stale-page check reads the same record (an approval request an
    # earlier leader left unsent is withdrawn once the Rollout is past this phase).
    state = watched_rollback_state(kube)(WEB)
    assert state is not None and (state.rollback_id, state.phase) == (
        rollback.id,
        Phase.PENDING_APPROVAL,
    )
    with pytest.raises(LookupError):
        await give_verdict(Approvals(), EmptyJournal(), "rb-unknown", verdict, lambda _: None)


async def test_a_rollout_aborted_by_a_human_while_rollbackd_was_down_is_withdrawn_on_resume(
    kubesim: KubeSim, kube: Kube
) -> None:
    state, _ = await killed_while_waiting(kube)
    await human_abort(kube)
    mark = kubesim.requests.mark()
    pager = RecordingPager()

    done = await approving(kube, Approvals(), Journal(), pager).resume(WEB, state)

    assert (done.phase, done.reason_code) == (Phase.SUPERSEDED, ReasonCode.ROLLOUT_ALREADY_ABORTED)
    assert NotificationKind.APPROVAL_REQUESTED not in pager.kinds  # nobody asked again
    assert aborts(kubesim, mark) == []


async def test_killed_after_the_approval_before_the_abort_a_resume_aborts_once(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    _, task, rollback = await started(kube, approvals, pager, Journal(kill_at=Phase.PLANNING))
    await approvals.submit(rollback.id, Verdict(True, "alice", now()))
    with pytest.raises(asyncio.CancelledError):
        await task  # died with PLANNING on the Rollout, before the abort
    state = await recorded(kube)
    assert state.phase is Phase.PLANNING and aborts(kubesim) == []

    done = await approving(kube, Approvals(), Journal(), RecordingPager()).resume(WEB, state)

    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert aborts(kubesim) == [200]


async def test_approved_the_abort_answered_503_is_retried_and_done_once(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    kubesim.faults.fail("PATCH", f"^{STATUS_PATH}$", 503, count=2)
    approvals, pager = Approvals(), RecordingPager()
    _, task, rollback = await started(kube, approvals, pager)

    await approvals.submit(rollback.id, Verdict(True, "alice", now()))

    done = await task
    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert aborts(kubesim) == [503, 503, 200]
    assert (await status(kube))["abort"] is True


async def test_approved_the_abort_failing_for_the_whole_budget_escalates(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    approvals, pager = Approvals(), RecordingPager()
    _, task, rollback = await started(kube, approvals, pager, retry_budget=3.0)
    kubesim.faults.fail("PATCH", f"^{STATUS_PATH}$", 500, count=1000)

    await approvals.submit(rollback.id, Verdict(True, "alice", now()))

    done = await task
    assert (done.phase, done.reason_code) == (Phase.ESCALATED, ReasonCode.KUBE_UNAVAILABLE)
    assert set(aborts(kubesim)) == {500} and "abort" not in await status(kube)
    assert pager.kinds[-1] is NotificationKind.ESCALATION
