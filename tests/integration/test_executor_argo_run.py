"""The executor on an Argo Rollout against kubesim: the decision read from the watch cache,
the canary aborted, the stable version verified; refusals escalate with nothing aborted.

Rollout default/web is paused at setWeight 25 with a canary (the helpers of
test_executor_argo.py); verification's signals are a fake (healthy or
breaching), its readiness the real one (the stable pods and Service).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.decide import decide
from rollbackd.executor import Executor
from rollbackd.kube import Kube
from rollbackd.model import (
    ANNOTATION_ROLLBACK,
    Action,
    History,
    Phase,
    Policy,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
)
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import ReasonCode
from rollbackd.signals import Verdict
from rollbackd.state import decode_state
from rollbackd.testing.kubesim import KubeSim
from rollbackd.verify import Verifier
from tests.integration.test_executor_argo import (
    ROLLOUTS,
    WEB,
    aborts,
    paused_canary,
    status,
    until,
)
from tests.integration.test_executor_rolling import FakeSignals, RecordingPager

pytestmark = pytest.mark.integration


@dataclass
class Journal:
    """The executor's recorder: phases and events, in order."""

    phases: list[tuple[Phase, str, Mapping[str, Any] | None]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    kill_at: Phase | None = None  # the process dies as this phase is journaled

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        self.phases.append((rollback.phase, message, data))
        if rollback.phase is self.kill_at:
            raise asyncio.CancelledError

    async def event(
        self, rollback: Rollback, kind: str, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        self.events.append(kind)


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        yield k


def executor(kube: Kube, journal: Journal, pager: RecordingPager, signals: FakeSignals) -> Executor:
    verifier = Verifier(
        signals.evaluate,
        kube.readiness,
        scrape_interval=timedelta(milliseconds=100),
        intervals=3,
        clock=lambda: datetime.now(UTC),
    )
    return Executor(
        kube,
        verifier,
        journal,
        pager,
        rollout_timeout=20.0,
        clock=lambda: datetime.now(UTC),
        policy_for=lambda target: Policy(),
    )


async def decided(kube: Kube) -> tuple[Rollback, Any]:
    """The decision on a breaching canary, made on the watch cache as the dispatcher does."""
    await kube.start_watches()
    assert await kube.wait_synced(10)
    now = datetime.now(UTC)
    signal = Signal(WEB, SignalSource.ALERTMANAGER, "HighErrorRate", SignalStatus.FIRING, now, now)
    decision = decide(signal, kube.facts(WEB, now=now), History(), Policy(), now)
    rollback = Rollback(
        id="rb-argo-1", target=WEB, phase=Phase.PENDING, started_at=now, updated_at=now
    )
    return rollback, decision


async def test_a_breaching_canary_is_aborted_and_the_stable_version_verified(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    assert decision.action is Action.ROLLBACK, decision.reason
    journal, pager = Journal(), RecordingPager()

    done = await executor(kube, journal, pager, FakeSignals()).run(rollback, decision)

    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert [p for p, _, _ in journal.phases] == [
        Phase.ROLLING_BACK,
        Phase.VERIFYING,
        Phase.ROLLBACK_COMPLETED,
    ]
    changes = (journal.phases[0][2] or {})["changes"]
    assert changes["strategy"] == "argo-rollouts" and changes["replicas"] == 4
    assert journal.events.count("verify_interval") == 3
    assert [kind for kind, _, _ in pager.pages] == [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
    ]
    assert (await status(kube))["abort"] is True and aborts(kubesim) == [200]


async def test_a_record_write_that_conflicts_is_planned_again_on_a_fresh_read_and_aborts_once(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    # The controller's status writes move the Rollout between the plan's read and the record.
    kubesim.faults.fail("PATCH", f"^{ROLLOUTS}/web$", 409, count=1)
    journal, pager = Journal(), RecordingPager()

    done = await executor(kube, journal, pager, FakeSignals()).run(rollback, decision)

    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert "conflict" in journal.events
    record = (await kube.read_rollout(WEB))["metadata"]["annotations"]
    assert decode_state(record[ANNOTATION_ROLLBACK]).rollback_id == rollback.id
    assert aborts(kubesim) == [200]


async def test_a_rollout_synced_by_argo_cd_is_aborted_unpaused_and_the_pages_say_revert_git(
    kubesim: KubeSim, kube: Kube
) -> None:
    """The abort patches status, which a sync never reverts: no pause, but Git is named."""
    await paused_canary(kube)
    label = [
        {
            "op": "add",
            "path": "/metadata/labels",
            "value": {"argocd.argoproj.io/instance": "shop"},
        }
    ]
    await kube.request(
        "PATCH", f"{ROLLOUTS}/web", body=label, content_type="application/json-patch+json"
    )
    rollback, decision = await decided(kube)
    pager = RecordingPager()
    mark = kubesim.requests.mark()

    done = await executor(kube, Journal(), pager, FakeSignals()).run(rollback, decision)

    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert [kind for kind, _, _ in pager.pages] == [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
    ]
    for _, summary, details in pager.pages:
        assert "managed by argocd:shop: the abort holds" in summary, summary
        assert "revert it before the Rollout is retried" in summary
        assert details["gitops"]["paused"] is False
    # Nothing was paused: no request went to an Argo CD Application.
    assert not [r for r in kubesim.requests.since(mark) if "/applications" in r.path]


async def test_a_stable_version_that_breaches_too_fails_and_escalates(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    pager = RecordingPager()

    done = await executor(kube, Journal(), pager, FakeSignals(Verdict.BREACH)).run(
        rollback, decision
    )

    assert done.phase is Phase.ESCALATED and done.reason_code == ReasonCode.VERIFY_BREACH
    assert NotificationKind.ESCALATION in [kind for kind, _, _ in pager.pages]
    assert aborts(kubesim) == [200]  # aborted once; the escalation asks a human for the rest
    annotations = (await kube.read_rollout(WEB))["metadata"]["annotations"]
    assert decode_state(annotations[ANNOTATION_ROLLBACK]).phase is Phase.ESCALATED


async def test_an_already_aborted_rollout_is_skipped_by_the_decision(kube: Kube) -> None:
    await paused_canary(kube)
    await kube.abort_rollout(WEB)  # a human was faster
    await decided(kube)

    decision = await until(lambda: _decide_again(kube), lambda d: d.action is Action.SKIP)

    assert decision.reason_code == ReasonCode.ROLLOUT_ALREADY_ABORTED


async def _decide_again(kube: Kube) -> Any:
    now = datetime.now(UTC)
    signal = Signal(WEB, SignalSource.ALERTMANAGER, "HighErrorRate", SignalStatus.FIRING, now, now)
    return decide(signal, kube.facts(WEB, now=now), History(), Policy(), now)


@pytest.mark.parametrize("killed_at", [Phase.ROLLING_BACK, Phase.VERIFYING])
async def test_killed_mid_way_a_restarted_executor_resumes_from_the_rollout_and_aborts_once(
    kubesim: KubeSim, kube: Kube, killed_at: Phase
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    first = Journal(kill_at=killed_at)
    with pytest.raises(asyncio.CancelledError):
        await executor(kube, first, RecordingPager(), FakeSignals()).run(rollback, decision)
    if killed_at is Phase.ROLLING_BACK:
        assert aborts(kubesim) == []  # killed between the record and the abort

    annotations = (await kube.read_rollout(WEB))["metadata"]["annotations"]
    state = decode_state(annotations[ANNOTATION_ROLLBACK])
    assert (state.rollback_id, state.phase) == (rollback.id, killed_at)
    # What a restarted daemon's scan finds and resumes:
    assert WEB in kube.cache.rollout_targets()
    journal = Journal()
    done = await executor(kube, journal, RecordingPager(), FakeSignals()).resume(WEB, state)

    assert done.phase is Phase.ROLLBACK_COMPLETED, done.reason
    assert aborts(kubesim) == [200]
    final = decode_state(
        (await kube.read_rollout(WEB))["metadata"]["annotations"][ANNOTATION_ROLLBACK]
    )
    assert final.phase is Phase.ROLLBACK_COMPLETED


async def test_a_spec_refused_between_the_decision_and_the_plan_escalates_nothing_aborted(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    # Someone adds a second strategy: the controller refuses the spec (InvalidSpec).
    ops = [{"op": "add", "path": "/spec/strategy/blueGreen", "value": {"activeService": "x"}}]
    await kube.request(
        "PATCH", f"{ROLLOUTS}/web", body=ops, content_type="application/json-patch+json"
    )
    await until(
        lambda: status(kube),
        lambda s: any(c.get("type") == "InvalidSpec" for c in s.get("conditions") or ()),
    )
    pager = RecordingPager()

    done = await executor(kube, Journal(), pager, FakeSignals()).run(rollback, decision)

    assert done.phase is Phase.ESCALATED
    assert done.reason_code == ReasonCode.ROLLOUT_SPEC_INVALID
    assert "the controller refused its spec" in (done.reason or "")
    assert (done.reason or "").endswith("nothing was aborted")
    assert aborts(kubesim) == [] and "abort" not in await status(kube)
    assert [kind for kind, _, _ in pager.pages] == [NotificationKind.ESCALATION]
