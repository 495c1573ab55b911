"""The Argo Rollouts abort against kubesim: plan, record, abort once, wait for the stable version.

Every test creates Rollout default/web (4 replicas, steps setWeight 25 then an
indefinite pause), lets it become Healthy on image 1.0, then deploys 2.0: the
canary gets 1 pod beside 3 stable ones and the Rollout waits, Paused. A kill
is the record written and nothing after it, followed by ``resume`` from a
fresh strategy, as a restarted daemon does. The executor's own handling
(phases, conflicts, pages) is specified in test_executor_argo_run.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from rollbackd.argo import ANNOTATION_ARGO_ABORT
from rollbackd.kube import Kube
from rollbackd.model import Target
from rollbackd.reasons import ReasonCode
from rollbackd.strategies import PlanError
from rollbackd.strategies.argorollouts import AbortPlan, ArgoRolloutsStrategy
from rollbackd.testing.kubesim import KubeSim

pytestmark = pytest.mark.integration

T = TypeVar("T")
WEB = Target("default", "web")
ROLLOUTS = "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts"
STATUS_PATH = f"{ROLLOUTS}/web/status"
TIMEOUT = 20.0


def manifest(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
        },
    }


async def until(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Poll ``read`` until ``ok`` holds (the last answer in the failure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        value = await read()
        if ok(value):
            return value
        assert loop.time() < deadline, f"condition never held; last: {value}"
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        yield k


async def status(kube: Kube) -> dict[str, Any]:
    return dict((await kube.read_rollout(WEB)).get("status") or {})


async def paused_canary(kube: Kube, image: str = "example/app:2.0") -> dict[str, Any]:
    """Deploy ``image`` over the Healthy 1.0 and wait until it is paused at setWeight 25."""
    if not (await kube.request("GET", ROLLOUTS)).get("items"):
        await kube.request("POST", ROLLOUTS, body=manifest("example/app:1.0"))
        await until(lambda: status(kube), lambda s: s.get("phase") == "Healthy")
    ops = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
    await kube.request(
        "PATCH", f"{ROLLOUTS}/web", body=ops, content_type="application/json-patch+json"
    )
    return await until(
        lambda: status(kube),
        lambda s: s.get("phase") == "Paused" and s.get("currentPodHash") != s.get("stableRS"),
    )


async def recorded_plan(kube: Kube, rollback_id: str = "rb-1") -> AbortPlan:
    """The abort planned on a fresh read and its guarded record written, nothing after it."""
    strategy = ArgoRolloutsStrategy()
    rollout = await kube.read_rollout(WEB)
    plan = strategy.plan(rollout, await kube.rollout_replicasets(WEB), rollback_id)
    await kube.patch_rollout(WEB, strategy.record_ops(rollout, plan))
    return plan


async def abort(kube: Kube, rollback_id: str = "rb-1") -> AbortPlan:
    """The abort as the executor runs it: plan on a fresh read, the guarded record, then resume."""
    plan = await recorded_plan(kube, rollback_id)
    await ArgoRolloutsStrategy().resume(kube, WEB, rollback_id, timeout=TIMEOUT)
    return plan


def aborts(sim: KubeSim, mark: int = 0) -> list[int]:
    """The answers to every abort patch (status subresource) since ``mark``."""
    return [
        r.status for r in sim.requests.since(mark) if r.method == "PATCH" and r.path == STATUS_PATH
    ]


async def replicasets(kube: Kube) -> dict[str, tuple[int, int]]:
    return {
        rs["metadata"]["labels"]["rollouts-pod-template-hash"]: (
            rs["spec"]["replicas"],
            (rs.get("status") or {}).get("readyReplicas", 0),
        )
        for rs in await kube.rollout_replicasets(WEB)
    }


async def test_a_paused_canary_is_aborted_once_and_the_stable_version_serves_alone(
    kubesim: KubeSim, kube: Kube
) -> None:
    before = await paused_canary(kube)
    stable, canary = before["stableRS"], before["currentPodHash"]
    assert await replicasets(kube) == {stable: (3, 3), canary: (1, 1)}

    plan = await abort(kube)

    assert (plan.canary_hash, plan.stable_hash, plan.replicas) == (canary, stable, 4)
    assert (
        plan.summary
        == f"aborting Rollout default/web: canary web-{canary} to 0, stable web-{stable} to 4"
    )
    after = await kube.read_rollout(WEB)
    assert after["status"]["abort"] is True and after["status"]["phase"] == "Degraded"
    assert after["status"]["stableRS"] == stable  # an abort never promotes
    record = json.loads(after["metadata"]["annotations"][ANNOTATION_ARGO_ABORT])
    assert record["rollback_id"] == "rb-1" and record["canary_hash"] == canary
    # apply returned only once the canary was gone and the stable version Ready.
    assert await replicasets(kube) == {stable: (4, 4), canary: (0, 0)}
    assert aborts(kubesim) == [200]


async def test_killed_between_the_record_and_the_abort_a_resume_aborts_once(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    await recorded_plan(kube)  # ... and the process dies
    assert aborts(kubesim) == []
    assert "abort" not in await status(kube)

    await ArgoRolloutsStrategy().resume(kube, WEB, "rb-1", timeout=TIMEOUT)
    assert (await status(kube))["abort"] is True
    # Killed again after the abort: the next resume finds it done and writes nothing.
    await ArgoRolloutsStrategy().resume(kube, WEB, "rb-1", timeout=TIMEOUT)
    assert aborts(kubesim) == [200]


async def test_an_abort_answered_500_once_is_retried(kubesim: KubeSim, kube: Kube) -> None:
    await paused_canary(kube)
    kubesim.faults.fail("PATCH", f"^{STATUS_PATH}$", 500, count=1)

    await abort(kube)

    assert aborts(kubesim) == [500, 200]
    assert (await status(kube))["abort"] is True


async def test_an_already_aborted_rollout_is_refused_with_no_write(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    await kube.abort_rollout(WEB)  # a human ran kubectl argo rollouts abort
    await until(lambda: status(kube), lambda s: s.get("phase") == "Degraded")
    mark = kubesim.requests.mark()

    with pytest.raises(PlanError) as refused:
        await abort(kube)

    assert refused.value.reason_code == ReasonCode.ROLLOUT_ALREADY_ABORTED
    assert [r for r in kubesim.requests.since(mark) if r.is_write] == []


async def test_a_canary_replaced_since_the_plan_is_not_aborted(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    plan = await recorded_plan(kube)
    await paused_canary(kube, "example/app:3.0")  # a human deploys again before the abort

    with pytest.raises(PlanError) as refused:
        await ArgoRolloutsStrategy().resume(kube, WEB, "rb-1", timeout=TIMEOUT)

    assert refused.value.reason_code == ReasonCode.TARGET_CHANGED
    assert f"canary {plan.canary_hash} planned" in refused.value.message
    assert aborts(kubesim) == [] and "abort" not in await status(kube)


async def test_without_the_crd_nothing_breaks_and_it_is_said_once(
    kubesim: KubeSim, kube: Kube
) -> None:
    assert await kube.rollouts_served()
    # kubesim files a discovery GET under the verb "list".
    kubesim.faults.fail("list", r"^/apis/argoproj\.io/v1alpha1$", 404, count=2)
    with capture_logs() as logs:
        assert not await kube.rollouts_served()
        assert not await kube.rollouts_served()
    assert [e["event"] for e in logs] == ["argo_rollouts_not_served"]


async def test_without_the_crd_the_watch_cache_syncs_without_rollouts(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    kubesim.faults.fail("list", r"^/apis/argoproj\.io/v1alpha1$", 404, count=1)
    mark = kubesim.requests.mark()

    await kube.start_watches()
    assert await kube.wait_synced(TIMEOUT)

    assert kube.facts(WEB, now=datetime.now(UTC)).rollout is None  # as before Rollouts
    listed = {r.path for r in kubesim.requests.since(mark)}
    assert "/apis/apps/v1/deployments" in listed
    assert not any("/rollouts" in path for path in listed)


async def test_the_watch_cache_keeps_rollouts_trimmed_and_their_facts_follow_the_canary(
    kube: Kube,
) -> None:
    paused = await paused_canary(kube)
    await kube.start_watches()
    assert await kube.wait_synced(TIMEOUT)

    cached = kube.cache.rollout(WEB)
    assert cached is not None and "template" not in cached["spec"]
    facts = kube.facts(WEB, now=datetime.now(UTC))
    assert not facts.exists  # no Deployment of that name: the decision reads facts.rollout
    assert facts.rollout is not None and facts.rollout.updating
    assert facts.rollout.canary_rs == f"web-{paused['currentPodHash']}"
    assert facts.rollout.stable_rs == f"web-{paused['stableRS']}"
    assert facts.rollout.canary_started_at is not None

    await kube.abort_rollout(WEB)  # the watch brings the abort in
    await until(
        lambda: _cached_facts(kube), lambda f: f is not None and f.aborted and f.phase == "Degraded"
    )


async def _cached_facts(kube: Kube) -> Any:
    return kube.facts(WEB, now=datetime.now(UTC)).rollout
