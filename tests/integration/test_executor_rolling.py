"""The rolling executor against kubesim: what ``kubectl rollout undo`` would do, made safe.

Every test deploys v1 then v2 of a Deployment, then asks the executor to roll
back to v1 and checks the cluster, the state annotation, the Events, the
record and the pages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient

from rollbackd.executor import Executor
from rollbackd.journal import DETAIL_RESTORED_REVISION
from rollbackd.kube import Kube
from rollbackd.model import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_RESTORED,
    ANNOTATION_REVISION,
    ANNOTATION_REVISION_HISTORY,
    ANNOTATION_ROLLBACK,
    Action,
    Decision,
    Phase,
    Policy,
    Rollback,
    Target,
)
from rollbackd.notify.base import NotificationKind
from rollbackd.signals import Evaluation, Verdict
from rollbackd.state import RollbackState, decode_state
from rollbackd.strategies import RolloutStatus
from rollbackd.testing.kubesim import KubeSim
from rollbackd.verify import Verifier

pytestmark = pytest.mark.integration

DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
TARGET = Target("default", "web")
NEVER_READY = {"kubesim.rollbackd.io/ready": "false"}


def deployment(
    image: str, annotations: Mapping[str, str] | None = None, *, replicas: int = 2
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": TARGET.name, "namespace": TARGET.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": dict(annotations or {})},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


class Human:
    """What an SRE does with kubectl, through the API server (which applies defaults)."""

    def __init__(self, api: ApiClient) -> None:
        self.apps = client.AppsV1Api(api)

    async def create(self, body: dict[str, Any]) -> None:
        await self.apps.create_namespaced_deployment(TARGET.namespace, body)

    async def patch(self, ops: list[dict[str, Any]]) -> None:
        await self.apps.patch_namespaced_deployment(
            TARGET.name, TARGET.namespace, ops, _content_type="application/json-patch+json"
        )

    async def set_image(self, image: str) -> None:
        await self.patch(
            [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
        )


def replicasets(sim: KubeSim) -> dict[str, dict[str, Any]]:
    """ReplicaSets by their original image, for readable assertions."""
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs
        for rs in sim.store.list(REPLICASETS, TARGET.namespace)
    }


def rollbackd_events(sim: KubeSim) -> list[tuple[str, str]]:
    events = [
        e
        for e in sim.store.list("v1/events", TARGET.namespace)
        if e.get("reportingComponent") == "rollbackd"
    ]
    events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e["type"]) for e in events]


@dataclass
class RecordingRecorder:
    """Records phases with the state annotation as the Deployment showed it at that moment."""

    kube: Kube
    phases: list[tuple[Phase, Phase | None]] = field(default_factory=list)
    data: list[tuple[Phase, Mapping[str, Any] | None]] = field(default_factory=list)
    events: list[tuple[str, str, Mapping[str, Any] | None]] = field(default_factory=list)
    on_phase: Callable[[Rollback], Awaitable[None]] | None = None
    on_event: Callable[[str], Awaitable[None]] | None = None

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        annotations = (await self.kube.read_deployment(rollback.target))["metadata"].get(
            "annotations"
        ) or {}
        raw = annotations.get(ANNOTATION_ROLLBACK)
        self.phases.append((rollback.phase, decode_state(raw).phase if raw else None))
        self.data.append((rollback.phase, data))
        if self.on_phase is not None:
            await self.on_phase(rollback)

    async def event(
        self,
        rollback: Rollback,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.events.append((kind, message, data))
        if self.on_event is not None:
            await self.on_event(kind)

    @property
    def phase_names(self) -> list[Phase]:
        return [phase for phase, _ in self.phases]


@dataclass
class RecordingPager:
    pages: list[tuple[NotificationKind, str, Mapping[str, Any]]] = field(default_factory=list)

    async def notify(
        self,
        kind: NotificationKind,
        rollback: Rollback,
        summary: str,
        details: Mapping[str, Any],
    ) -> None:
        self.pages.append((kind, summary, details))

    @property
    def kinds(self) -> list[NotificationKind]:
        return [kind for kind, _, _ in self.pages]


class FakeSignals:
    """Stands in for Prometheus: every evaluation returns ``verdict`` for both signals."""

    def __init__(self, verdict: Verdict = Verdict.HEALTHY) -> None:
        self.verdict = verdict
        self.windows: list[str] = []

    async def evaluate(self, target: Target, window: str, at: datetime) -> list[Evaluation]:
        self.windows.append(window)
        value = 0.5 if self.verdict is Verdict.BREACH else 0.01
        return [
            Evaluation(target, name, self.verdict, value, 0.05, "fake")
            for name in ("error_ratio", "latency_p99")
        ]


@dataclass
class Harness:
    sim: KubeSim
    kube: Kube
    human: Human
    recorder: RecordingRecorder
    pager: RecordingPager
    signals: FakeSignals
    policy: Policy = field(default_factory=Policy)
    rollout_timeout: float = 20.0

    def executor(
        self, recorded: Callable[[str], Awaitable[Rollback | None]] | None = None
    ) -> Executor:
        verifier = Verifier(
            self.signals.evaluate,
            self.kube.readiness,
            scrape_interval=timedelta(milliseconds=100),
            intervals=3,
            clock=lambda: datetime.now(UTC),
        )
        return Executor(
            self.kube,
            verifier,
            self.recorder,
            self.pager,
            rollout_timeout=self.rollout_timeout,
            clock=lambda: datetime.now(UTC),
            policy_for=lambda target: self.policy,
            recorded=recorded,
        )

    async def deploy_v1_then_v2(
        self,
        v1: str = "web:1.0",
        v1_annotations: Mapping[str, str] | None = None,
        *,
        replicas: int = 2,
    ) -> None:
        await self.human.create(deployment(v1, v1_annotations, replicas=replicas))
        if not v1_annotations:
            await self.rolled_out()
        else:
            await self.wait_for_revision(1)
        # v2 is a plain, healthy version: new image, no kubesim knobs.
        await self.human.patch(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "web:2.0",
                },
                {"op": "replace", "path": "/spec/template/metadata/annotations", "value": {}},
            ]
        )
        await self.rolled_out()

    async def rolled_out(self) -> None:
        outcome = await self.kube.wait_rollout_complete(TARGET, timeout=20)
        assert outcome.status is RolloutStatus.COMPLETE, outcome.message

    async def wait_for_revision(self, revision: int) -> None:
        async with asyncio.timeout(10):
            while True:
                current = await self.kube.read_deployment(TARGET)
                if current["metadata"].get("annotations", {}).get(ANNOTATION_REVISION) == str(
                    revision
                ):
                    return
                await asyncio.sleep(0.02)


def pending_rollback(
    target: Target,
    rollback_id: str,
    *,
    reason: str = "error_ratio 50% > 5%",
    decision_reason: str | None = None,
    revisions: tuple[int, int] = (2, 1),
) -> tuple[Rollback, Decision]:
    """A rollback of ``target`` just decided (PENDING), and the decision behind it."""
    now = datetime.now(UTC)
    rollback = Rollback(
        id=rollback_id,
        target=target,
        phase=Phase.PENDING,
        started_at=now,
        updated_at=now,
        reason=reason,
    )
    decision = Decision(
        action=Action.ROLLBACK,
        target=target,
        reason_code="rollback",
        reason=decision_reason or reason,
        from_revision=revisions[0],
        to_revision=revisions[1],
    )
    return rollback, decision


def rollback_to_v1() -> tuple[Rollback, Decision]:
    return pending_rollback(TARGET, "rb-20260101-0001")


async def crash_in(harness: Harness, phase: Phase) -> RollbackState:
    """Run a rollback until it records ``phase``, cancel it there (the "crash"),
    and return the state it left on the Deployment for the next daemon."""
    reached = asyncio.Event()

    async def hang_in_phase(rollback: Rollback) -> None:
        if rollback.phase is phase:
            reached.set()
            await asyncio.Event().wait()  # hang here until the crash cancels us

    harness.recorder.on_phase = hang_in_phase
    first = asyncio.create_task(harness.executor().run(*rollback_to_v1()))
    async with asyncio.timeout(20):
        await reached.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    harness.recorder.on_phase = None
    annotations = (await harness.kube.read_deployment(TARGET))["metadata"]["annotations"]
    return decode_state(annotations[ANNOTATION_ROLLBACK])


@pytest_asyncio.fixture
async def sim(kubesim: KubeSim) -> AsyncIterator[KubeSim]:
    """kubesim, which must be simulating its deployment controller."""
    assert kubesim.controller is not None, "kubesim started without its deployment controller"
    yield kubesim


@pytest_asyncio.fixture
async def harness(sim: KubeSim) -> AsyncIterator[Harness]:
    kube = await Kube.connect(kubeconfig=str(sim.kubeconfig))
    api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
    async with kube, api:
        await kube.start_watches()
        assert await kube.wait_synced(10), "watch cache never synced"
        yield Harness(
            sim, kube, Human(api), RecordingRecorder(kube), RecordingPager(), FakeSignals()
        )


async def test_rolls_back_to_v1_by_reusing_its_replicaset(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    v1_rs = replicasets(harness.sim)["web:1.0"]
    rollback, decision = rollback_to_v1()

    result = await harness.executor().run(rollback, decision)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert result.finished_at is not None
    current = await harness.kube.read_deployment(TARGET)
    # The template equals v1's exactly, so the controller reused v1's ReplicaSet...
    expected = json.loads(json.dumps(v1_rs["spec"]["template"]))
    del expected["metadata"]["labels"]["pod-template-hash"]
    assert current["spec"]["template"] == expected
    after = replicasets(harness.sim)
    assert sorted(after) == ["web:1.0", "web:2.0"]
    assert after["web:1.0"]["metadata"]["uid"] == v1_rs["metadata"]["uid"]
    # ...and numbered it like `kubectl rollout undo` does.
    assert after["web:1.0"]["metadata"]["annotations"][ANNOTATION_REVISION] == "3"
    assert after["web:1.0"]["metadata"]["annotations"][ANNOTATION_REVISION_HISTORY] == "1"
    annotations = current["metadata"]["annotations"]
    assert annotations[ANNOTATION_REVISION] == "3"
    assert rollback.id in annotations[ANNOTATION_CHANGE_CAUSE]
    restored = json.loads(annotations[ANNOTATION_RESTORED])
    assert restored == {
        "rollback_id": rollback.id,
        "template_hash": v1_rs["metadata"]["labels"]["pod-template-hash"],
        "revision": 3,
    }
    assert decode_state(annotations[ANNOTATION_ROLLBACK]).phase is Phase.ROLLBACK_COMPLETED


async def test_each_phase_is_on_the_deployment_before_it_is_recorded(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED
    assert harness.recorder.phases == [
        (Phase.PLANNING, Phase.PLANNING),
        (Phase.ROLLING_BACK, Phase.ROLLING_BACK),
        (Phase.VERIFYING, Phase.VERIFYING),
        (Phase.ROLLBACK_COMPLETED, Phase.ROLLBACK_COMPLETED),
    ]
    assert [reason for reason, _ in rollbackd_events(harness.sim)] == [
        "RollbackPlanned",
        "RollbackStarted",
        "RollbackReady",
        "RollbackVerified",
    ]
    assert harness.pager.kinds == [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
    ]


async def test_the_timeline_has_the_plan_digests_and_every_interval(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    await harness.executor().run(*rollback_to_v1())

    kinds = [kind for kind, _, _ in harness.recorder.events]
    assert kinds == ["plan", "images", "verify_interval", "verify_interval", "verify_interval"]
    plan = harness.recorder.events[0][2] or {}
    assert plan["images_from"] == ["web:2.0"]
    assert plan["images_to"] == ["web:1.0"]
    digests = (harness.recorder.events[1][2] or {})["images"]
    assert all("sha256:" in image_id for image_id in digests["app"])
    # Windows grow from the moment the rollback became ready: never before it.
    assert len(harness.signals.windows) == 3


async def test_the_restored_revision_is_marked_as_rollbackds_own(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    rollback, decision = rollback_to_v1()
    await harness.executor().run(rollback, decision)

    async with asyncio.timeout(10):
        while True:
            facts = harness.kube.facts(TARGET, now=datetime.now(UTC))
            if facts.revisions and facts.revisions[0].revision == 3:
                break
            await asyncio.sleep(0.02)
    assert facts.revisions[0].restored_by == rollback.id
    assert facts.revisions[0].images == ("web:1.0",)


async def test_a_human_deploy_during_planning_is_never_overwritten(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()

    async def human_deploys(kind: str) -> None:
        if kind == "plan":
            await harness.human.set_image("web:3.0")

    harness.recorder.on_event = human_deploys
    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "target_changed"
    current = await harness.kube.read_deployment(TARGET)
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "web:3.0"
    assert harness.pager.kinds == [NotificationKind.ESCALATION]
    assert ("RollbackEscalated", "Warning") in rollbackd_events(harness.sim)
    assert "RollbackStarted" not in [reason for reason, _ in rollbackd_events(harness.sim)]


async def test_a_revision_that_moved_before_planning_escalates(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    await harness.human.set_image("web:3.0")
    await harness.rolled_out()

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "target_changed"
    current = await harness.kube.read_deployment(TARGET)
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "web:3.0"


async def test_a_restored_version_that_never_becomes_ready_fails_and_escalates(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2(v1_annotations=NEVER_READY)
    harness.rollout_timeout = 1.5

    result = await harness.executor().run(*rollback_to_v1())

    assert harness.recorder.phase_names == [
        Phase.PLANNING,
        Phase.ROLLING_BACK,
        Phase.ROLLBACK_FAILED,
        Phase.ESCALATED,
    ]
    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "rollout_timeout"
    assert harness.pager.kinds == [NotificationKind.ROLLBACK_STARTED, NotificationKind.ESCALATION]
    events = rollbackd_events(harness.sim)
    assert ("RollbackFailed", "Warning") in events
    assert ("RollbackEscalated", "Warning") in events
    annotations = (await harness.kube.read_deployment(TARGET))["metadata"]["annotations"]
    assert decode_state(annotations[ANNOTATION_ROLLBACK]).phase is Phase.ESCALATED


async def test_a_breach_during_verification_fails_and_escalates(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    harness.signals.verdict = Verdict.BREACH

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "verify_breach"
    assert harness.recorder.phase_names[-3:] == [
        Phase.VERIFYING,
        Phase.ROLLBACK_FAILED,
        Phase.ESCALATED,
    ]
    intervals = [kind for kind, _, _ in harness.recorder.events if kind == "verify_interval"]
    assert len(intervals) == 1  # the first unhealthy interval ends verification


async def test_no_data_during_verification_is_not_health(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    harness.signals.verdict = Verdict.NO_DATA

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "verify_no_data"


async def test_guard_refuses_a_diff_outside_the_allow_list(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    await harness.human.patch(
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/resources",
                "value": {"limits": {"memory": "64Mi"}},
            }
        ]
    )
    await harness.rolled_out()
    rollback, decision = rollback_to_v1()
    decision = Decision(**{**decision.__dict__, "from_revision": 3, "to_revision": 2})

    result = await harness.executor().run(rollback, decision)

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "guard_disallowed_fields"
    after = await harness.kube.read_deployment(TARGET)
    assert after["spec"]["template"]["spec"]["containers"][0]["resources"]


async def test_guard_refuses_to_restore_a_mutable_image(harness: Harness) -> None:
    await harness.deploy_v1_then_v2(v1="web:latest")

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "guard_mutable_image"
    after = await harness.kube.read_deployment(TARGET)
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2.0"


async def test_resume_after_a_crash_in_rolling_back_does_not_patch_again(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in(harness, Phase.ROLLING_BACK)
    assert state.phase is Phase.ROLLING_BACK

    result = await harness.executor().resume(TARGET, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert result.id == state.rollback_id
    after = replicasets(harness.sim)
    assert sorted(after) == ["web:1.0", "web:2.0"]
    assert after["web:1.0"]["metadata"]["annotations"][ANNOTATION_REVISION] == "3"
    # One patch only: a second would have been rejected or made revision 4.
    current = await harness.kube.read_deployment(TARGET)
    assert current["metadata"]["annotations"][ANNOTATION_REVISION] == "3"


async def test_resume_in_verifying_verifies_again(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in(harness, Phase.VERIFYING)
    assert state.phase is Phase.VERIFYING
    assert state.ready_at is not None

    result = await harness.executor().resume(TARGET, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED
    assert len(harness.signals.windows) == 3


async def test_resume_after_a_crash_in_rollback_failed_escalates_with_its_own_reason(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    harness.signals.verdict = Verdict.BREACH
    state = await crash_in(harness, Phase.ROLLBACK_FAILED)
    assert (state.phase, state.reason_code) == (Phase.ROLLBACK_FAILED, "verify_breach")
    journal = {state.rollback_id: replace(state.rollback(TARGET), reason="error_ratio 50% > 5%")}

    async def recorded(rollback_id: str) -> Rollback | None:
        return journal.get(rollback_id)

    result = await harness.executor(recorded).resume(TARGET, state)

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "verify_breach")
    assert result.reason == "error_ratio 50% > 5%"  # the journal's, not "daemon restarted"
    [(kind, summary, _)] = harness.pager.pages[-1:]
    assert kind is NotificationKind.ESCALATION and "error_ratio 50% > 5%" in summary


async def test_resume_in_rollback_failed_without_a_journal_record_keeps_the_code(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    harness.signals.verdict = Verdict.BREACH
    state = await crash_in(harness, Phase.ROLLBACK_FAILED)

    result = await harness.executor().resume(TARGET, state)
    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "verify_breach")
    assert result.reason == "rollback had failed before the restart (verify_breach)"

    # A code that is not one of rollbackd's (a hand-edited annotation) is no metric label.
    edited = replace(state, reason_code="made_up")
    again = await harness.executor().resume(TARGET, edited)
    assert (again.reason_code, again.reason) == (
        "rollback_failed",
        "rollback had failed before the restart",
    )


async def test_resume_of_a_terminal_state_does_nothing(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    result = await harness.executor().run(*rollback_to_v1())
    annotations = (await harness.kube.read_deployment(TARGET))["metadata"]["annotations"]
    state = decode_state(annotations[ANNOTATION_ROLLBACK])
    pages = len(harness.pager.pages)

    resumed = await harness.executor().resume(TARGET, state)

    assert resumed.phase is result.phase is Phase.ROLLBACK_COMPLETED
    assert len(harness.pager.pages) == pages


async def test_a_conflict_with_nothing_changed_is_replanned_and_applied(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()

    async def conflict_on_the_template_patch(kind: str) -> None:
        if kind == "plan":
            harness.sim.faults.fail("PATCH", r".*/deployments/web$", 409, count=1)

    harness.recorder.on_event = conflict_on_the_template_patch
    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    kinds = [kind for kind, _, _ in harness.recorder.events]
    assert kinds.count("conflict") == 1
    assert kinds.count("plan") == 1


async def test_a_paused_deployment_is_left_to_the_human(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    await harness.human.patch([{"op": "add", "path": "/spec/paused", "value": True}])

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "paused"
    after = await harness.kube.read_deployment(TARGET)
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2.0"


async def test_a_progress_deadline_exceeded_fails_the_rollback(harness: Harness) -> None:
    await harness.deploy_v1_then_v2(v1_annotations=NEVER_READY)
    await harness.human.patch(
        [{"op": "replace", "path": "/spec/progressDeadlineSeconds", "value": 1}]
    )
    await harness.rolled_out()

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "rollout_failed"
    assert "progress deadline" in result.reason


async def test_the_restored_revision_is_written_to_the_journal(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    await harness.executor().run(*rollback_to_v1())

    verifying = [data for phase, data in harness.recorder.data if phase is Phase.VERIFYING]
    # The journal's half of the no-ping-pong rule: the number the controller gave v1 back.
    assert verifying == [{DETAIL_RESTORED_REVISION: 3}]


def human_deploys_v3_when(harness: Harness, phase: Phase) -> None:
    async def deploy(rollback: Rollback) -> None:
        if rollback.phase is phase:
            await harness.human.set_image("web:3.0")

    harness.recorder.on_phase = deploy


async def assert_superseded_and_v3_untouched(
    harness: Harness, result: Rollback, during: Phase
) -> None:
    assert result.phase is Phase.SUPERSEDED, result.reason
    assert result.reason_code == "superseded"
    assert result.finished_at is not None
    assert Phase.ROLLBACK_COMPLETED not in harness.recorder.phase_names
    assert Phase.ROLLBACK_FAILED not in harness.recorder.phase_names
    # The human's version is left alone, and the controller rolls it out.
    await harness.rolled_out()
    current = await harness.kube.read_deployment(TARGET)
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "web:3.0"
    state = decode_state(current["metadata"]["annotations"][ANNOTATION_ROLLBACK])
    assert state.phase is Phase.SUPERSEDED
    # An info page says what changed and that rollbackd stepped back.
    assert harness.pager.kinds[-1] is NotificationKind.SUPERSEDED
    assert NotificationKind.ROLLBACK_COMPLETED not in harness.pager.kinds
    assert NotificationKind.ESCALATION not in harness.pager.kinds
    _, summary, details = harness.pager.pages[-1]
    assert "stepped back" in summary and "web:3.0" in summary
    assert details["during"] == str(during)
    assert details["superseded_by"]["images"] == ["web:3.0"]
    assert details["superseded_by"]["generation"] == current["metadata"]["generation"]
    reasons = [reason for reason, _ in rollbackd_events(harness.sim)]
    assert ("RollbackSuperseded", "Normal") in rollbackd_events(harness.sim)
    assert "RollbackVerified" not in reasons


async def test_a_human_deploy_during_verification_supersedes_the_rollback(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    human_deploys_v3_when(harness, Phase.VERIFYING)

    result = await harness.executor().run(*rollback_to_v1())

    await assert_superseded_and_v3_untouched(harness, result, Phase.VERIFYING)
    # Verification stopped: no interval judged the human's version as rollbackd's.
    assert harness.signals.windows == []


async def test_a_human_deploy_while_rolling_back_supersedes_the_rollback(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    human_deploys_v3_when(harness, Phase.ROLLING_BACK)

    result = await harness.executor().run(*rollback_to_v1())

    await assert_superseded_and_v3_untouched(harness, result, Phase.ROLLING_BACK)
    assert Phase.VERIFYING not in harness.recorder.phase_names


async def test_a_human_deploy_after_the_last_interval_is_never_declared_completed(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    intervals = 0

    async def deploy_after_the_third(kind: str) -> None:
        nonlocal intervals
        if kind == "verify_interval":
            intervals += 1
            if intervals == 3:
                await harness.human.set_image("web:3.0")

    harness.recorder.on_event = deploy_after_the_third

    result = await harness.executor().run(*rollback_to_v1())

    await assert_superseded_and_v3_untouched(harness, result, Phase.VERIFYING)


async def test_a_human_deploy_while_rollbackd_was_down_supersedes_on_resume(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    state = await crash_in(harness, Phase.VERIFYING)
    await harness.human.set_image("web:3.0")

    result = await harness.executor().resume(TARGET, state)

    await assert_superseded_and_v3_untouched(harness, result, Phase.VERIFYING)


async def test_the_resolve_is_queued_before_any_record_says_the_rollback_ended(
    harness: Harness,
) -> None:
    """A start page still waiting (a pager outage) must be resolved, not withdrawn as stale.

    The outbox withdraws a rollback's start page once the Deployment says the
    rollback ended and no resolve of it waits on the channel; if the terminal
    phase were written first, the channel could look in between, withdraw the
    trigger, then send a resolve for an incident it never opened.
    """
    await harness.deploy_v1_then_v2()
    seen_at_page: list[tuple[Phase | None, list[Phase]]] = []
    page = harness.pager.notify

    async def notify(
        kind: NotificationKind, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> None:
        if kind is NotificationKind.ROLLBACK_COMPLETED:
            seen_at_page.append(
                (await phase_on_deployment(harness), list(harness.recorder.phase_names))
            )
        await page(kind, rollback, summary, details)

    harness.pager.notify = notify  # type: ignore[method-assign]
    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    [(phase_at_page, journaled)] = seen_at_page
    assert phase_at_page is Phase.VERIFYING
    assert Phase.ROLLBACK_COMPLETED not in journaled
    assert await phase_on_deployment(harness) is Phase.ROLLBACK_COMPLETED


async def test_the_superseded_page_is_queued_before_any_record_says_superseded(
    harness: Harness,
) -> None:
    await harness.deploy_v1_then_v2()
    human_deploys_v3_when(harness, Phase.VERIFYING)
    seen_at_page: list[tuple[Phase | None, list[Phase]]] = []
    page = harness.pager.notify

    async def notify(
        kind: NotificationKind, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> None:
        if kind is NotificationKind.SUPERSEDED:
            seen_at_page.append(
                (await phase_on_deployment(harness), list(harness.recorder.phase_names))
            )
        await page(kind, rollback, summary, details)

    harness.pager.notify = notify  # type: ignore[method-assign]
    result = await harness.executor().run(*rollback_to_v1())

    await assert_superseded_and_v3_untouched(harness, result, Phase.VERIFYING)
    [(phase_at_page, journaled)] = seen_at_page
    assert phase_at_page is Phase.VERIFYING
    assert Phase.SUPERSEDED not in journaled


async def phase_on_deployment(harness: Harness) -> Phase | None:
    deployment = await harness.kube.read_deployment(TARGET)
    raw = (deployment["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw).phase if raw else None


async def test_the_escalation_page_is_durable_before_any_record_says_escalated(
    harness: Harness,
) -> None:
    """A kill between the page and the terminal phase must never leave a silent ESCALATED.

    The page goes to the outbox first; until the Deployment and the journal
    say ESCALATED, a restart resumes the rollback and pages again (deduplicated).
    """
    await harness.deploy_v1_then_v2()
    harness.signals.verdict = Verdict.BREACH
    seen_at_page: list[tuple[Phase | None, list[Phase]]] = []
    page = harness.pager.notify

    async def notify(
        kind: NotificationKind, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> None:
        if kind is NotificationKind.ESCALATION:
            seen_at_page.append(
                (await phase_on_deployment(harness), list(harness.recorder.phase_names))
            )
        await page(kind, rollback, summary, details)

    harness.pager.notify = notify  # type: ignore[method-assign]
    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    [(phase_at_page, journaled)] = seen_at_page
    assert phase_at_page is Phase.ROLLBACK_FAILED
    assert Phase.ESCALATED not in journaled
    assert await phase_on_deployment(harness) is Phase.ESCALATED  # and afterwards it is recorded
