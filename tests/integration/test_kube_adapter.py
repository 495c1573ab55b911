"""The Kubernetes adapter against kubesim, through kubernetes-asyncio as against a cluster."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from rollbackd.kube import ConflictError, Kube, NotFoundError
from rollbackd.model import ANNOTATION_RESTORED, ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.strategies import RolloutStatus
from rollbackd.testing.kubesim import KubeSim

pytestmark = pytest.mark.integration

DEPLOYMENTS = "apps/v1/deployments"
TARGET = Target("default", "web")


def deployment(image: str, *, replicas: int = 2, **template_annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": TARGET.name, "namespace": TARGET.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": template_annotations},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def set_image(sim: KubeSim, image: str) -> None:
    """What `kubectl set image` does: a spec change the controller rolls out."""
    current = sim.store.get(DEPLOYMENTS, TARGET.namespace, TARGET.name)
    current["spec"]["template"]["spec"]["containers"][0]["image"] = image
    sim.store.update(DEPLOYMENTS, current)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate`` holds; fails the test at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def sim(kubesim: KubeSim) -> AsyncIterator[KubeSim]:
    """kubesim, which must be simulating its deployment controller."""
    assert kubesim.controller is not None, "kubesim started without its deployment controller"
    yield kubesim


@pytest_asyncio.fixture
async def kube(sim: KubeSim) -> AsyncIterator[Kube]:
    adapter = await Kube.connect(kubeconfig=str(sim.kubeconfig))
    async with adapter:
        await adapter.start_watches()
        assert await adapter.wait_synced(10), "watch cache never synced"
        yield adapter


async def rolled_out(kube: Kube, revision: int) -> None:
    outcome = await kube.wait_rollout_complete(TARGET, timeout=20)
    assert outcome.status is RolloutStatus.COMPLETE, outcome.message
    await wait_until(
        lambda: (
            (facts := kube.facts(TARGET, now=datetime.now(UTC))).exists
            and bool(facts.revisions)
            and facts.revisions[0].revision == revision
            and facts.revisions[0].available_replicas > 0
        )
    )


async def test_facts_come_from_the_watch_cache_newest_revision_first(
    sim: KubeSim, kube: Kube
) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)
    set_image(sim, "web:2.0")
    await rolled_out(kube, 2)

    facts = kube.facts(TARGET, now=datetime.now(UTC))
    assert facts.exists
    assert [r.revision for r in facts.revisions] == [2, 1]
    assert [r.images for r in facts.revisions] == [("web:2.0",), ("web:1.0",)]
    current, previous = facts.revisions
    assert current.replaced_at is None
    assert previous.replaced_at == current.created_at
    assert facts.rollout_started_at == current.created_at
    assert "pod-template-hash" not in current.template["metadata"]["labels"]
    assert facts.template["spec"]["containers"][0]["image"] == "web:2.0"
    assert facts.uid and facts.resource_version and not facts.paused
    assert facts.gitops_owner is None


async def test_an_unknown_target_does_not_exist(kube: Kube) -> None:
    facts = kube.facts(Target("default", "nope"), now=datetime.now(UTC))
    assert not facts.exists
    with pytest.raises(NotFoundError):
        await kube.read_deployment(Target("default", "nope"))


async def test_a_deployment_the_cache_has_not_seen_is_read_fresh(sim: KubeSim) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    async with await Kube.connect(kubeconfig=str(sim.kubeconfig)) as cold:  # no watches
        assert cold.cached_deployment(TARGET) is None
        found = await cold.deployment(TARGET)
        with pytest.raises(NotFoundError):
            await cold.deployment(Target("default", "nope"))
    assert found["metadata"]["name"] == TARGET.name


async def test_gitops_owner_is_detected_from_labels(sim: KubeSim, kube: Kube) -> None:
    body = deployment("web:1.0")
    body["metadata"]["labels"] = {"argocd.argoproj.io/instance": "shop"}
    sim.store.create(DEPLOYMENTS, body)
    await wait_until(lambda: kube.facts(TARGET, now=datetime.now(UTC)).exists)
    assert kube.facts(TARGET, now=datetime.now(UTC)).gitops_owner == "argocd:shop"


async def test_pods_resolve_to_their_deployment(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)
    pods = sim.store.list("v1/pods", TARGET.namespace)
    assert pods
    await wait_until(
        lambda: kube.resolve_pod(TARGET.namespace, pods[0]["metadata"]["name"]) is not None
    )
    assert kube.resolve_pod(TARGET.namespace, pods[0]["metadata"]["name"]) == TARGET
    assert kube.resolve_pod(TARGET.namespace, "no-such-pod") is None
    assert kube.targets() == [TARGET]


async def test_a_stale_resource_version_is_a_conflict_and_changes_nothing(
    sim: KubeSim, kube: Kube
) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    stale = (await kube.read_deployment(TARGET))["metadata"]["resourceVersion"]
    set_image(sim, "web:2.0")  # a human deploys after we read

    with pytest.raises(ConflictError):
        await kube.patch_deployment(
            TARGET,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:1"},
            ],
        )
    current = await kube.read_deployment(TARGET)
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2.0"


async def test_state_annotation_is_written_guarded_and_removed(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)  # the controller has stopped writing status
    now = datetime.now(UTC).replace(microsecond=0)
    state = RollbackState("rb-1", Phase.PLANNING, 2, 1, now, now, "rollback")
    rv = (await kube.read_deployment(TARGET))["metadata"]["resourceVersion"]

    written = await kube.write_state(
        TARGET, state, resource_version=rv, extra={ANNOTATION_RESTORED: '{"x": 1}'}
    )
    annotations = written["metadata"]["annotations"]
    assert decode_state(annotations[ANNOTATION_ROLLBACK]) == state
    assert json.loads(annotations[ANNOTATION_RESTORED]) == {"x": 1}

    with pytest.raises(ConflictError):
        await kube.write_state(TARGET, None, resource_version=rv)

    # The controller reacts to annotation changes too, so write from a fresh read.
    for _attempt in range(5):
        fresh = (await kube.read_deployment(TARGET))["metadata"]["resourceVersion"]
        try:
            cleared = await kube.write_state(TARGET, None, resource_version=fresh)
            break
        except ConflictError:
            continue
    else:
        pytest.fail("the state annotation could not be cleared in 5 attempts")
    assert ANNOTATION_ROLLBACK not in cleared["metadata"]["annotations"]
    assert ANNOTATION_RESTORED in cleared["metadata"]["annotations"]


async def test_the_watch_survives_dropped_streams(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)

    assert sim.faults.drop_watches() > 0
    set_image(sim, "web:2.0")

    def cached_image() -> str:
        cached = kube.cached_deployment(TARGET) or {}
        return str(cached["spec"]["template"]["spec"]["containers"][0]["image"])

    await wait_until(lambda: cached_image() == "web:2.0")
    assert kube.synced


async def test_events_are_emitted_on_the_deployment(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    uid = (await kube.read_deployment(TARGET))["metadata"]["uid"]

    await kube.emit_event(TARGET, reason="RollbackPlanned", message="to revision 1", uid=uid)

    ours = [
        e
        for e in sim.store.list("v1/events", TARGET.namespace)
        if e.get("reportingComponent") == "rollbackd"
    ]
    assert len(ours) == 1
    assert ours[0]["reason"] == "RollbackPlanned"
    assert ours[0]["involvedObject"]["kind"] == "Deployment"
    assert ours[0]["involvedObject"]["uid"] == uid


async def test_event_failures_are_logged_not_raised(sim: KubeSim, kube: Kube) -> None:
    sim.faults.fail("POST", r".*/events", 500, count=1)
    await kube.emit_event(TARGET, reason="RollbackPlanned", message="ignored")


async def test_readiness_counts_ready_pods_and_service_endpoints(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0", replicas=2))
    sim.store.create(
        "v1/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": TARGET.namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    await rolled_out(kube, 1)

    async with asyncio.timeout(10):
        while True:
            report = await kube.readiness(TARGET)
            if report.ok:
                break
            await asyncio.sleep(0.05)
    assert (report.desired, report.ready) == (2, 2)
    assert [(s.name, s.ready_addresses) for s in report.services] == [("web", 2)]


async def test_rollout_that_never_becomes_ready_times_out(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0", **{"kubesim.rollbackd.io/ready": "false"}))
    outcome = await kube.wait_rollout_complete(TARGET, timeout=1.0, poll_interval=0.2)
    assert outcome.status is RolloutStatus.TIMEOUT
    assert "available" in outcome.message


async def test_image_digests_of_running_pods(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)
    images = await kube.pod_images(TARGET)
    assert list(images) == ["app"]
    assert all("sha256:" in image_id for image_id in images["app"])


async def test_leader_election_takes_the_lease(sim: KubeSim, kube: Kube) -> None:
    leading = asyncio.Event()
    stopped_leading = asyncio.Event()

    async def started() -> None:
        leading.set()
        try:
            await asyncio.Event().wait()  # lead until cancelled
        finally:
            stopped_leading.set()

    async def stopped() -> None:
        return None

    task = asyncio.create_task(
        kube.run_leader_election(
            namespace="default",
            lease_name="rollbackd",
            identity="replica-a",
            lease_duration=4,
            renew_deadline=3,
            retry_period=1,
            on_started=started,
            on_stopped=stopped,
        )
    )
    try:
        async with asyncio.timeout(10):
            await leading.wait()
        lease = sim.store.get("coordination.k8s.io/v1/leases", "default", "rollbackd")
        assert lease["spec"]["holderIdentity"] == "replica-a"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Shutting the election down also ended the leader's work: no leaked task.
    assert stopped_leading.is_set()


async def test_a_watch_that_fell_too_far_behind_relists(tmp_path: pathlib.Path) -> None:
    with capture_logs() as logs:
        await _watch_relists_after_410(tmp_path)
    assert any(e["event"] == "watch_expired_relisting" for e in logs)


async def _watch_relists_after_410(tmp_path: pathlib.Path) -> None:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig", watch_history=5) as small:
        async with await Kube.connect(kubeconfig=str(small.kubeconfig)) as adapter:
            await adapter.start_watches()
            assert await adapter.wait_synced(10)
            small.store.create(DEPLOYMENTS, deployment("web:1.0"))
            await wait_until(lambda: adapter.cached_deployment(TARGET) is not None)

            # Drop the stream and, before it can reconnect, push its resourceVersion
            # out of the server's short history: the resumed watch gets 410 Gone.
            small.faults.drop_watches()
            for n in range(20):
                current = small.store.get(DEPLOYMENTS, TARGET.namespace, TARGET.name)
                current["metadata"].setdefault("annotations", {})["note"] = str(n)
                small.store.update(DEPLOYMENTS, current)

            def caught_up() -> bool:
                cached = adapter.cached_deployment(TARGET) or {}
                return (cached.get("metadata", {}).get("annotations") or {}).get("note") == "19"

            await wait_until(caught_up)
            assert adapter.synced


async def test_the_watch_rides_out_api_errors_on_reconnect(sim: KubeSim, kube: Kube) -> None:
    sim.store.create(DEPLOYMENTS, deployment("web:1.0"))
    await rolled_out(kube, 1)

    def cached_image() -> str:
        cached = kube.cached_deployment(TARGET) or {}
        return str(cached["spec"]["template"]["spec"]["containers"][0]["image"])

    with capture_logs() as logs:
        # The reconnecting watch meets three 503s before it gets through.
        sim.faults.fail("watch", r"/apis/apps/v1/deployments$", 503, count=3)
        sim.faults.drop_watches(r"deployments")
        set_image(sim, "web:2.0")
        await wait_until(lambda: cached_image() == "web:2.0")
    failures = [e for e in logs if e["event"] == "watch_failed" and e["kind"] == "deployments"]
    assert len(failures) == 3
