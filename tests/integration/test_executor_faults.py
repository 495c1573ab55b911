"""A rollback rides out the faults an API server has during an incident.

Measured before: one 429, 500 or 503 on the executor's first GET ended the
rollback ESCALATED and left the bad version live; a 409 every 150 ms on the
state annotation turned a restored template into ROLLBACK_FAILED. Here
kubesim injects those faults on the real HTTP path:

- one fault (429 with Retry-After, 500, 503, connection reset) on each
  Kubernetes call of a rollback in turn: every rollback completes. The calls
  are those a clean rollback makes (kubesim's request log); each is hit in
  its own namespace, all rollbacks of a fault kind run at once;
- 409s on the Deployment's writes for 2 s: the rollback completes;
- an API that stays down longer than the retry budget: the rollback ends
  ``kube_api_unavailable`` (which starts no cooldown), the template untouched.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from structlog.testing import capture_logs

from rollbackd.executor import Executor
from rollbackd.kube import Kube
from rollbackd.model import (
    ANNOTATION_ROLLBACK,
    REASON_KUBE_UNAVAILABLE,
    RETRYABLE_REASON_CODES,
    Decision,
    Phase,
    Policy,
    Rollback,
    Target,
)
from rollbackd.notify.base import NotificationKind
from rollbackd.signals import Evaluation, Verdict
from rollbackd.state import decode_state
from rollbackd.strategies import RolloutStatus
from rollbackd.testing.kubesim import KubeSim
from rollbackd.verify import Verifier
from tests.integration.test_executor_rolling import pending_rollback

pytestmark = pytest.mark.integration

FAULT_KINDS = ("429", "500", "503", "reset")


def deployment(target: Target, image: str) -> dict[str, Any]:
    """One replica: the faults are on the API calls, whose sequence does not
    depend on the replica count; each more replica costs every namespace a pod
    and a rolling-update step per rollout (a fifth of this module's CPU)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name, "namespace": target.namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": target.name}},
            "template": {
                "metadata": {"labels": {"app": target.name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


@dataclass
class QuietRecorder:
    """Records in memory only: the recorder must not add API calls of its own."""

    phases: list[tuple[str, Phase]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    _reached: dict[tuple[str, Phase], asyncio.Event] = field(default_factory=dict)

    def reached(self, rollback_id: str, phase: Phase) -> asyncio.Event:
        return self._reached.setdefault((rollback_id, phase), asyncio.Event())

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        self.phases.append((rollback.id, rollback.phase))
        self.reached(rollback.id, rollback.phase).set()

    async def event(
        self, rollback: Rollback, kind: str, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        self.events.append((rollback.id, kind))


@dataclass
class Pager:
    pages: list[tuple[str, NotificationKind]] = field(default_factory=list)

    async def notify(
        self, kind: NotificationKind, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> None:
        self.pages.append((rollback.id, kind))


async def healthy(target: Target, window: str, at: datetime) -> list[Evaluation]:
    return [Evaluation(target, "error_ratio", Verdict.HEALTHY, 0.0, 0.05, "fake")]


@dataclass
class World:
    sim: KubeSim
    kube: Kube
    apps: client.AppsV1Api
    core: client.CoreV1Api
    recorder: QuietRecorder = field(default_factory=QuietRecorder)
    pager: Pager = field(default_factory=Pager)

    def executor(self, *, rollout_timeout: float = 30.0) -> Executor:
        verifier = Verifier(
            healthy,
            self.kube.readiness,
            scrape_interval=timedelta(milliseconds=100),
            clock=lambda: datetime.now(UTC),
        )
        return Executor(
            self.kube,
            verifier,
            self.recorder,
            self.pager,
            rollout_timeout=rollout_timeout,
            clock=lambda: datetime.now(UTC),
            policy_for=lambda target: Policy(),
        )

    async def deploy_v1_then_v2(self, target: Target) -> None:
        """A namespace of its own, v1 rolled out, then v2 rolled out."""
        await self.core.create_namespace({"metadata": {"name": target.namespace}})
        await self.apps.create_namespaced_deployment(
            target.namespace, deployment(target, "web:1.0")
        )
        await self.rolled_out(target)
        await self.apps.patch_namespaced_deployment(
            target.name,
            target.namespace,
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "web:2.0",
                }
            ],
            _content_type="application/json-patch+json",
        )
        await self.rolled_out(target)

    async def rolled_out(self, target: Target) -> None:
        outcome = await self.kube.wait_rollout_complete(target, timeout=20)
        assert outcome.status is RolloutStatus.COMPLETE, outcome.message

    def image(self, target: Target) -> str:
        current = self.sim.store.get("apps/v1/deployments", target.namespace, target.name)
        return str(current["spec"]["template"]["spec"]["containers"][0]["image"])


def rollback_to_v1(target: Target, suffix: str) -> tuple[Rollback, Decision]:
    return pending_rollback(target, f"rb-faults-{suffix}")


@pytest_asyncio.fixture
async def world(kubesim: KubeSim) -> AsyncIterator[World]:
    assert kubesim.controller is not None, "kubesim started without its deployment controller"
    kube = await Kube.connect(kubeconfig=str(kubesim.kubeconfig))
    api: ApiClient = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with kube, api:
        await kube.start_watches()
        assert await kube.wait_synced(10), "watch cache never synced"
        yield World(kubesim, kube, client.AppsV1Api(api), client.CoreV1Api(api))


@dataclass(frozen=True)
class Call:
    verb: str
    path: str  # in the probe's namespace
    occurrence: int  # how many earlier calls had the same verb and path


async def calls_of_a_clean_rollback(world: World) -> list[Call]:
    """Every Kubernetes call the executor makes in one rollback, in order."""
    target = Target("probe", "web")
    await world.deploy_v1_then_v2(target)
    mark = world.sim.requests.mark()
    result = await world.executor().run(*rollback_to_v1(target, "probe"))
    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    calls: list[Call] = []
    seen: dict[tuple[str, str], int] = {}
    for record in world.sim.requests.since(mark):
        # The adapter's watches are cluster-wide: only the rollback's calls name the namespace.
        if "/namespaces/probe/" not in record.path or record.verb == "watch":
            continue
        key = (record.verb, record.path)
        calls.append(Call(record.verb, record.path, seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return calls


def inject(sim: KubeSim, kind: str, call: Call, namespace: str) -> None:
    """One fault of ``kind`` on ``call``, moved into ``namespace``."""
    path = (
        "^" + re.escape(call.path.replace("/namespaces/probe/", f"/namespaces/{namespace}/")) + "$"
    )
    if kind == "reset":
        # aiohttp itself re-sends an idempotent request once on a dropped
        # connection; reset that one too, so rollbackd sees the error.
        count = 2 if call.verb in ("get", "list") else 1
        sim.faults.reset(call.verb, path, count, after=call.occurrence)
    else:
        sim.faults.fail(call.verb, path, int(kind), after=call.occurrence)


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_one_transient_fault_on_each_call_of_a_rollback_is_ridden_out(
    world: World, kind: str
) -> None:
    calls = await calls_of_a_clean_rollback(world)
    # plan: read, list, state write, patch; wait; readiness, verification: a dozen at least.
    assert len(calls) >= 12, calls
    assert {c.verb for c in calls} >= {"get", "list", "patch", "create"}
    targets = [Target(f"fault-{i}", "web") for i in range(len(calls))]
    await asyncio.gather(*(world.deploy_v1_then_v2(t) for t in targets))
    for call, target in zip(calls, targets, strict=True):
        inject(world.sim, kind, call, target.namespace)

    executor = world.executor()
    async with asyncio.timeout(90):
        results = await asyncio.gather(
            *(executor.run(*rollback_to_v1(t, str(i))) for i, t in enumerate(targets))
        )

    failed = [
        f"call {i} ({call.verb} {call.path} #{call.occurrence}): {result.phase} {result.reason}"
        for i, (call, result) in enumerate(zip(calls, results, strict=True))
        if result.phase is not Phase.ROLLBACK_COMPLETED
    ]
    assert not failed, "\n".join(failed)
    assert all(world.image(t) == "web:1.0" for t in targets)
    escalations = [p for p in world.pager.pages if p[1] is NotificationKind.ESCALATION]
    assert escalations == []
    # Each fault really hit its call (a rule left over means the call was never made).
    assert world.sim.faults.pending() == 0


async def test_409s_on_the_deployment_writes_for_two_seconds_do_not_fail_the_rollback(
    world: World,
) -> None:
    periodic, solid = Target("periodic", "web"), Target("solid", "web")
    await asyncio.gather(world.deploy_v1_then_v2(periodic), world.deploy_v1_then_v2(solid))
    deployment_path = r"^/apis/apps/v1/namespaces/{}/deployments/web$"
    # Once the template patch landed, every state-annotation write of the
    # rollback meets the conflicts: a 409 every 150 ms, or on every write.
    executor = world.executor()
    window_start: dict[str, float] = {}

    async def run(target: Target, every: float) -> Rollback:
        rollback, decision = rollback_to_v1(target, target.namespace)
        task = asyncio.create_task(executor.run(rollback, decision))
        async with asyncio.timeout(20):
            await world.recorder.reached(rollback.id, Phase.ROLLING_BACK).wait()
        world.sim.faults.fail_for(
            "patch", deployment_path.format(target.namespace), 409, duration=2.0, every=every
        )
        window_start[target.namespace] = time.monotonic()
        return await task

    mark = world.sim.requests.mark()
    async with asyncio.timeout(60):
        results = await asyncio.gather(run(periodic, 0.15), run(solid, 0.0))

    for target, result in zip((periodic, solid), results, strict=True):
        assert result.phase is Phase.ROLLBACK_COMPLETED, f"{target}: {result.reason}"
        assert world.image(target) == "web:1.0"
        annotations = world.sim.store.get("apps/v1/deployments", target.namespace, "web")[
            "metadata"
        ]["annotations"]
        assert decode_state(annotations[ANNOTATION_ROLLBACK]).phase is Phase.ROLLBACK_COMPLETED
    kinds = [kind for _, kind in world.pager.pages]
    assert NotificationKind.ESCALATION not in kinds
    assert kinds.count(NotificationKind.ROLLBACK_COMPLETED) == 2
    # A write met the conflicts and was retried until they stopped 2 s later;
    # the old 5 attempts in 0.3 s ended in ROLLBACK_FAILED.
    assert first_write_through_conflicts(world, "solid", mark) - window_start["solid"] >= 1.9
    assert first_write_through_conflicts(world, "periodic", mark) > window_start["periodic"]


def first_write_through_conflicts(world: World, namespace: str, mark: int = 0) -> float:
    """When the first write of ``namespace``'s Deployment after a 409 succeeded (monotonic)."""
    writes = [
        r
        for r in world.sim.requests.since(mark)
        if r.verb == "patch" and f"/namespaces/{namespace}/deployments/" in r.path
    ]
    first_conflict = next((i for i, r in enumerate(writes) if r.status == 409), None)
    assert first_conflict is not None, f"no write of {namespace} met a conflict"
    return next(r.at for r in writes[first_conflict:] if 200 <= r.status < 300)


async def test_409s_on_every_write_from_the_start_are_retried_while_the_plan_holds(
    world: World,
) -> None:
    target = Target("conflicts", "web")
    await world.deploy_v1_then_v2(target)
    world.sim.faults.fail_for(
        "patch", r"^/apis/apps/v1/namespaces/conflicts/deployments/web$", 409, duration=2.0
    )
    started = time.monotonic()

    result = await world.executor().run(*rollback_to_v1(target, "conflicts"))

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.image(target) == "web:1.0"
    # Every write met conflicts for 2 s: retried while the plan held, not escalated.
    assert first_write_through_conflicts(world, "conflicts") - started >= 1.9
    assert [kind for _, kind in world.pager.pages] == [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
    ]


async def test_an_api_down_longer_than_the_budget_ends_retryable_and_changes_nothing(
    world: World,
) -> None:
    target = Target("down", "web")
    await world.deploy_v1_then_v2(target)
    world.sim.faults.fail_for("*", r"^/api(s/apps)?/v1/namespaces/down/", 503, duration=30.0)
    started = asyncio.get_running_loop().time()

    # The retry budget is the rollout timeout: 2 s here.
    result = await world.executor(rollout_timeout=2.0).run(*rollback_to_v1(target, "down"))

    elapsed = asyncio.get_running_loop().time() - started
    assert result.phase is Phase.ESCALATED
    assert result.reason_code == REASON_KUBE_UNAVAILABLE
    assert result.reason_code in RETRYABLE_REASON_CODES  # the next signal may try again
    assert "503" in result.reason
    assert 1.0 <= elapsed < 10.0, elapsed  # gave up on the budget, not on the first error
    assert world.image(target) == "web:2.0"
    assert world.pager.pages == [("rb-faults-down", NotificationKind.ESCALATION)]


async def test_every_line_a_rollback_logs_names_its_rollback_and_target(world: World) -> None:
    """Concurrent rollbacks log through shared code; contextvars keep their lines apart."""
    targets = [Target("logs-a", "web"), Target("logs-b", "web")]
    await asyncio.gather(*(world.deploy_v1_then_v2(t) for t in targets))
    for target in targets:  # one retried 503 each, logged deep inside the adapter
        path = f"^/apis/apps/v1/namespaces/{target.namespace}/deployments/web$"
        world.sim.faults.fail("get", path, 503, count=1)

    executor = world.executor()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with asyncio.timeout(60):
            results = await asyncio.gather(
                *(executor.run(*rollback_to_v1(t, f"log-{i}")) for i, t in enumerate(targets))
            )

    assert [r.phase for r in results] == [Phase.ROLLBACK_COMPLETED] * 2
    retries = [e for e in logs if e["event"] == "kube_request_retry"]
    assert len(retries) == 2
    for event in retries:
        # The retried request was made for the rollback the line names.
        namespace = event["request"].split("/namespaces/")[1].split("/")[0]
        assert event["target"] == f"{namespace}/web"
    assert {(e["rollback_id"], e["target"]) for e in retries} == {
        (r.id, str(r.target)) for r in results
    }
    # Nothing stays bound once the rollbacks are over.
    assert "rollback_id" not in structlog.contextvars.get_contextvars()
