"""The simulated deployment controller over a Store, without HTTP: what rollbackd relies on.

Time is a fake clock shared by the store and the controller, so pod
readiness, minReadySeconds and progress deadlines advance only when a test
says so, and ``settle()`` runs every reconcile that is due.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim.controller import Controller
from rollbackd.testing.kubesim.store import Store

DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
PODS = "v1/pods"
REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"
READY_DELAY = 1.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Cluster:
    """A Store and a started Controller sharing one fake clock."""

    def __init__(self, store: Store, controller: Controller, clock: FakeClock) -> None:
        self.store = store
        self.controller = controller
        self.clock = clock

    async def settle(self) -> None:
        await self.controller.settle(timeout=10)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()

    async def run_until(
        self, done: Callable[[], bool], *, step: float = READY_DELAY, max_steps: int = 50
    ) -> int:
        """Advance time step by step until ``done()``; returns the number of steps taken."""
        await self.settle()
        for steps in range(max_steps):
            if done():
                return steps
            await self.advance(step)
        raise AssertionError(f"condition not reached after {max_steps} steps")

    def deployment(self, name: str = "web") -> dict[str, Any]:
        return self.store.get(DEPLOYMENTS, "default", name)

    def replicasets(self, name: str = "web") -> list[dict[str, Any]]:
        return sorted(
            (rs for rs in self.store.list(REPLICASETS, "default") if owner(rs) == name),
            key=lambda rs: int(rs["metadata"]["annotations"][REVISION]),
        )

    def pods(self, rs_name: str | None = None) -> list[dict[str, Any]]:
        return [
            p for p in self.store.list(PODS, "default") if rs_name is None or owner(p) == rs_name
        ]

    def rollout_complete(self, name: str = "web") -> bool:
        d = self.deployment(name)
        status = d.get("status") or {}
        want = d["spec"]["replicas"]
        return (
            status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == want
            and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want
        )

    def edit(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        d = self.deployment(name)
        change(d)
        self.store.update(DEPLOYMENTS, d)

    def set_image(self, image: str, name: str = "web") -> None:
        self.edit(
            name, lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image=image)
        )


def owner(obj: dict[str, Any]) -> str | None:
    refs = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
    return refs[0]["name"] if refs else None


def manifest(
    name: str = "web",
    *,
    image: str = "app:1",
    replicas: int = 3,
    strategy: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "annotations": dict(annotations or {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            **spec,
        },
    }
    if strategy is not None:
        body["spec"]["strategy"] = strategy
    return body


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = FakeClock()
    store = Store(clock=clock)
    store.create("v1/namespaces", {"metadata": {"name": "default"}})
    controller = Controller(store, pod_ready_delay=READY_DELAY, resync=0.05, clock=clock)
    await controller.start()
    try:
        yield Cluster(store, controller, clock)
    finally:
        await controller.stop()
    assert controller.errors == 0, "a reconcile raised; see the log"


async def deploy(cluster: Cluster, **kwargs: Any) -> None:
    cluster.store.create(DEPLOYMENTS, manifest(**kwargs))
    await cluster.run_until(lambda: cluster.rollout_complete(kwargs.get("name", "web")))


# ------------------------------------------------------------ replica sets


async def test_replicaset_is_named_by_template_hash_and_owned_by_the_deployment(
    cluster: Cluster,
) -> None:
    await deploy(cluster)
    d = cluster.deployment()
    [rs] = cluster.replicasets()
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == pod_hash
    assert rs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": d["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    pods = cluster.pods(rs["metadata"]["name"])
    assert len(pods) == 3
    for pod in pods:
        assert pod["metadata"]["name"].startswith(f"{rs['metadata']['name']}-")
        assert len(pod["metadata"]["name"]) == len(rs["metadata"]["name"]) + 6
        assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]


async def test_each_template_change_gets_the_next_revision(cluster: Cluster) -> None:
    await deploy(cluster)
    for image in ("app:2", "app:3"):
        cluster.set_image(image)
        await cluster.run_until(cluster.rollout_complete)
    revisions = [rs["metadata"]["annotations"][REVISION] for rs in cluster.replicasets()]
    assert revisions == ["1", "2", "3"]
    assert cluster.deployment()["metadata"]["annotations"][REVISION] == "3"
    assert [rs["spec"]["replicas"] for rs in cluster.replicasets()] == [0, 0, 3]


async def test_rollback_reuses_the_old_replicaset_with_a_new_revision_and_history(
    cluster: Cluster,
) -> None:
    await deploy(cluster)
    first = cluster.replicasets()[0]["metadata"]["name"]
    cluster.set_image("app:2")
    await cluster.run_until(cluster.rollout_complete)

    cluster.set_image("app:1")  # what `kubectl rollout undo` writes: the old template
    await cluster.run_until(cluster.rollout_complete)

    replicasets = {rs["metadata"]["name"]: rs for rs in cluster.replicasets()}
    assert len(replicasets) == 2, "a rollback must not create a third ReplicaSet"
    reused = replicasets[first]["metadata"]["annotations"]
    assert reused[REVISION] == "3"
    assert reused[HISTORY] == "1"
    assert replicasets[first]["spec"]["replicas"] == 3
    assert cluster.deployment()["metadata"]["annotations"][REVISION] == "3"

    cluster.set_image("app:2")
    await cluster.run_until(cluster.rollout_complete)
    cluster.set_image("app:1")
    await cluster.run_until(cluster.rollout_complete)
    reused = {rs["metadata"]["name"]: rs for rs in cluster.replicasets()}[first]
    assert reused["metadata"]["annotations"][REVISION] == "5"
    assert reused["metadata"]["annotations"][HISTORY] == "1,3"


async def test_deployment_annotations_are_copied_to_the_replicaset_except_the_skip_list(
    cluster: Cluster,
) -> None:
    await deploy(
        cluster,
        annotations={
            "kubernetes.io/change-cause": "first deploy",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    )
    [rs] = cluster.replicasets()
    annotations = rs["metadata"]["annotations"]
    assert annotations["kubernetes.io/change-cause"] == "first deploy"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations
    assert annotations["deployment.kubernetes.io/desired-replicas"] == "3"
    assert annotations["deployment.kubernetes.io/max-replicas"] == "4"


# ---------------------------------------------------------- rolling update


@pytest.mark.parametrize(
    ("surge", "unavailable", "max_total", "min_available"),
    [(1, 0, 5, 4), (0, 1, 4, 3), ("50%", "25%", 6, 3)],
)
async def test_rolling_update_stays_within_surge_and_unavailable(
    cluster: Cluster, surge: int | str, unavailable: int | str, max_total: int, min_available: int
) -> None:
    strategy = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }
    await deploy(cluster, replicas=4, strategy=strategy)
    observed: list[tuple[int, int]] = []

    def watch(_event: str, key: str, _obj: dict[str, Any]) -> None:
        if key == REPLICASETS:
            rss = cluster.store.list(REPLICASETS, "default", copy=False)
            total = sum(rs["spec"]["replicas"] for rs in rss)
            available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in rss)
            observed.append((total, available))

    unsubscribe = cluster.store.subscribe(watch)
    try:
        cluster.set_image("app:2")
        steps = await cluster.run_until(cluster.rollout_complete)
    finally:
        unsubscribe()
    assert steps >= 1
    assert max(total for total, _ in observed) == max_total
    assert min(available for _, available in observed) >= min_available


async def test_old_pods_stay_while_new_pods_never_become_ready(cluster: Cluster) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    await deploy(cluster, replicas=3, strategy=strategy)
    cluster.edit(
        "web",
        lambda d: (
            d["spec"]["template"]
            .setdefault("metadata", {})
            .update(annotations={"kubesim.rollbackd.io/ready": "false"})
        ),
    )
    await cluster.settle()
    for _ in range(5):
        await cluster.advance(READY_DELAY)
    old, new = cluster.replicasets()
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (3, 1)
    [stuck] = cluster.pods(new["metadata"]["name"])
    assert stuck["status"]["phase"] == "Running"
    ready = {c["type"]: c["status"] for c in stuck["status"]["conditions"]}["Ready"]
    assert ready == "False"
    assert stuck["status"]["containerStatuses"][0]["ready"] is False


async def test_recreate_removes_every_old_pod_before_creating_new_ones(cluster: Cluster) -> None:
    await deploy(cluster, replicas=2, strategy={"type": "Recreate"})
    overlap: list[int] = []

    def watch(event: str, key: str, _obj: dict[str, Any]) -> None:
        if key == PODS:
            images = {
                p["spec"]["containers"][0]["image"] for p in cluster.store.list(PODS, copy=False)
            }
            overlap.append(len(images))

    unsubscribe = cluster.store.subscribe(watch)
    try:
        cluster.set_image("app:2")
        await cluster.run_until(cluster.rollout_complete)
    finally:
        unsubscribe()
    assert overlap and max(overlap) == 1, "old and new pods ran at the same time"
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"app:2"}


async def test_paused_deployment_scales_but_does_not_roll_out(cluster: Cluster) -> None:
    await deploy(cluster)
    cluster.edit("web", lambda d: d["spec"].update(paused=True))
    await cluster.settle()
    cluster.set_image("app:2")
    cluster.edit("web", lambda d: d["spec"].update(replicas=5))
    await cluster.run_until(lambda: len(cluster.pods()) == 5)
    assert len(cluster.replicasets()) == 1
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"app:1"}
    progressing = {c["type"]: c for c in cluster.deployment()["status"]["conditions"]}[
        "Progressing"
    ]
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")

    cluster.edit("web", lambda d: d["spec"].update(paused=False))
    await cluster.run_until(cluster.rollout_complete)
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"app:2"}


async def test_revision_history_limit_deletes_the_oldest_scaled_down_replicasets(
    cluster: Cluster,
) -> None:
    await deploy(cluster, replicas=1, revisionHistoryLimit=2)
    for version in range(2, 6):
        cluster.set_image(f"app:{version}")
        await cluster.run_until(cluster.rollout_complete)
    revisions = [rs["metadata"]["annotations"][REVISION] for rs in cluster.replicasets()]
    assert revisions == ["3", "4", "5"]


async def test_scale_down_removes_unready_pods_first(cluster: Cluster) -> None:
    await deploy(cluster, replicas=2)
    cluster.edit("web", lambda d: d["spec"].update(replicas=4))
    await cluster.settle()  # two new pods exist but are not Ready yet
    ready_before = {p["metadata"]["name"] for p in cluster.pods() if _ready(p)}
    assert len(ready_before) == 2
    cluster.edit("web", lambda d: d["spec"].update(replicas=2))
    await cluster.settle()
    assert {p["metadata"]["name"] for p in cluster.pods()} == ready_before


# ------------------------------------------------------------- conditions


def _conditions(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (d.get("status") or {}).get("conditions", [])}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


async def test_progressing_reasons_follow_the_rollout(cluster: Cluster) -> None:
    seen: list[tuple[str, str, str]] = []

    def watch(_event: str, key: str, obj: dict[str, Any]) -> None:
        if key == DEPLOYMENTS:
            progressing = _conditions(obj).get("Progressing")
            entry = progressing and (
                progressing["status"],
                progressing["reason"],
                progressing["message"],
            )
            if entry and (not seen or seen[-1] != entry):
                seen.append(entry)

    unsubscribe = cluster.store.subscribe(watch)
    try:
        cluster.store.create(DEPLOYMENTS, manifest(replicas=2))
        await cluster.settle()
        available = _conditions(cluster.deployment())["Available"]
        assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
        await cluster.run_until(cluster.rollout_complete)
    finally:
        unsubscribe()
    rs_name = cluster.replicasets()[0]["metadata"]["name"]
    assert seen == [
        ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"'),
        ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'),
        ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.'),
    ]
    available = _conditions(cluster.deployment())["Available"]
    assert (available["status"], available["reason"], available["message"]) == (
        "True",
        "MinimumReplicasAvailable",
        "Deployment has minimum availability.",
    )


async def test_progress_updates_keep_the_transition_time(cluster: Cluster) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    await deploy(cluster, replicas=3, strategy=strategy)
    cluster.set_image("app:2")
    await cluster.settle()
    first = _conditions(cluster.deployment())["Progressing"]
    await cluster.advance(READY_DELAY)
    later = _conditions(cluster.deployment())["Progressing"]
    assert later["reason"] == "ReplicaSetUpdated"
    assert later["lastUpdateTime"] > first["lastUpdateTime"]
    assert later["lastTransitionTime"] == first["lastTransitionTime"]


async def test_progress_deadline_exceeded_when_new_pods_never_become_ready(
    cluster: Cluster,
) -> None:
    await deploy(cluster, replicas=2, progressDeadlineSeconds=10)
    cluster.edit(
        "web",
        lambda d: d["spec"]["template"]["metadata"].update(
            annotations={"kubesim.rollbackd.io/ready": "false"}
        ),
    )
    await cluster.settle()
    new_rs = cluster.replicasets()[-1]["metadata"]["name"]
    await cluster.advance(5)
    assert _conditions(cluster.deployment())["Progressing"]["status"] == "True"

    await cluster.advance(7)  # past lastUpdateTime + 10s: the deadline timer fires
    progressing = _conditions(cluster.deployment())["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert progressing["message"] == f'ReplicaSet "{new_rs}" has timed out progressing.'


async def test_min_ready_seconds_delays_availability(cluster: Cluster) -> None:
    cluster.store.create(DEPLOYMENTS, manifest(replicas=1, minReadySeconds=5))
    await cluster.settle()
    await cluster.advance(READY_DELAY)
    status = cluster.deployment()["status"]
    assert status.get("readyReplicas") == 1
    assert status.get("availableReplicas", 0) == 0
    await cluster.advance(6)
    assert cluster.deployment()["status"].get("availableReplicas") == 1
    assert cluster.rollout_complete()


async def test_scaling_events_are_recorded_on_the_deployment(cluster: Cluster) -> None:
    await deploy(cluster, replicas=2)
    d = cluster.deployment()
    rs_name = cluster.replicasets()[0]["metadata"]["name"]
    events = cluster.store.list(
        "v1/events",
        "default",
        field_selector=f"involvedObject.uid={d['metadata']['uid']},reason=ScalingReplicaSet",
    )
    [event] = events
    assert event["message"] == f"Scaled up replica set {rs_name} from 0 to 2"
    assert event["source"] == {"component": "deployment-controller"}
    assert event["involvedObject"]["kind"] == "Deployment"
    assert event["type"] == "Normal"
    assert event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"]


# ---------------------------------------------------------- pods and endpoints


async def test_pods_report_image_digests_and_ready_timing_from_the_template(
    cluster: Cluster,
) -> None:
    cluster.store.create(
        DEPLOYMENTS,
        manifest(replicas=1, template_annotations={"kubesim.rollbackd.io/ready-after": "3s"}),
    )
    await cluster.settle()
    await cluster.advance(2)
    [pod] = cluster.pods()
    assert not _ready(pod)
    status = pod["status"]["containerStatuses"][0]
    assert status["image"] == "app:1"
    assert status["imageID"].startswith("docker-pullable://app@sha256:")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"]
    await cluster.advance(1.5)
    [pod] = cluster.pods()
    assert _ready(pod)


async def test_endpoints_list_ready_and_not_ready_pods_of_the_service(cluster: Cluster) -> None:
    cluster.store.create(
        "v1/services",
        {
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    cluster.store.create(DEPLOYMENTS, manifest(replicas=2))
    await cluster.settle()
    endpoints = cluster.store.get("v1/endpoints", "default", "web")
    [subset] = endpoints["subsets"]
    assert "addresses" not in subset
    assert len(subset["notReadyAddresses"]) == 2
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert endpoints["metadata"]["labels"] == {"tier": "front"}

    await cluster.advance(READY_DELAY)
    [subset] = cluster.store.get("v1/endpoints", "default", "web")["subsets"]
    assert "notReadyAddresses" not in subset
    pod_names = {p["metadata"]["name"] for p in cluster.pods()}
    assert {a["targetRef"]["name"] for a in subset["addresses"]} == pod_names
    assert {a["ip"] for a in subset["addresses"]} == {p["status"]["podIP"] for p in cluster.pods()}

    cluster.store.delete(DEPLOYMENTS, "default", "web")
    await cluster.settle()
    assert "subsets" not in cluster.store.get("v1/endpoints", "default", "web")


async def test_a_change_to_one_deployment_touches_only_its_own_objects(cluster: Cluster) -> None:
    for index in range(20):
        cluster.store.create(DEPLOYMENTS, manifest(f"svc{index}", replicas=1))
    await cluster.run_until(lambda: all(cluster.rollout_complete(f"svc{i}") for i in range(20)))
    touched: set[str] = set()

    def watch(_event: str, key: str, obj: dict[str, Any]) -> None:
        if key != "v1/events":
            touched.add(obj["metadata"]["name"].split("-")[0])

    unsubscribe = cluster.store.subscribe(watch)
    try:
        cluster.set_image("app:2", name="svc7")
        await cluster.run_until(lambda: cluster.rollout_complete("svc7"))
    finally:
        unsubscribe()
    assert touched == {"svc7"}


async def test_scaling_mid_rollout_is_proportional_like_the_upstream_docs_example(
    cluster: Cluster,
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    await deploy(cluster, replicas=10, strategy=strategy)
    cluster.edit(
        "web",
        lambda d: d["spec"]["template"]["metadata"].update(
            annotations={"kubesim.rollbackd.io/ready": "false"}
        ),
    )
    await cluster.settle()
    await cluster.advance(READY_DELAY)
    old, new = cluster.replicasets()
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (8, 5)

    cluster.edit("web", lambda d: d["spec"].update(replicas=15))
    await cluster.settle()
    old, new = cluster.replicasets()
    # 5 more replicas allowed (15 + 3 surge - 13): 3 to the old ReplicaSet, 2 to the new one.
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (11, 7)


async def test_repeated_identical_events_are_aggregated_with_a_count(cluster: Cluster) -> None:
    await deploy(cluster, replicas=2)
    for replicas in (3, 2, 3):
        cluster.edit("web", lambda d, n=replicas: d["spec"].update(replicas=n))
        await cluster.run_until(cluster.rollout_complete)
    rs_name = cluster.replicasets()[0]["metadata"]["name"]
    events = {
        e["message"]: e
        for e in cluster.store.list("v1/events", "default")
        if e["reason"] == "ScalingReplicaSet"
    }
    repeated = events[f"Scaled up replica set {rs_name} from 2 to 3"]
    assert repeated["count"] == 2
    assert repeated["lastTimestamp"] >= repeated["firstTimestamp"]
    assert events[f"Scaled down replica set {rs_name} from 3 to 2"]["count"] == 1


async def test_image_pull_failure_knob_leaves_pods_pending_in_back_off(cluster: Cluster) -> None:
    await deploy(cluster, replicas=1)
    cluster.edit(
        "web",
        lambda d: d["spec"]["template"]["metadata"].update(
            annotations={"kubesim.rollbackd.io/image-pull": "fail"}
        ),
    )
    cluster.set_image("app:missing")
    await cluster.settle()
    await cluster.advance(10 * READY_DELAY)
    new_rs = cluster.replicasets()[-1]["metadata"]["name"]
    [pod] = cluster.pods(new_rs)
    assert pod["status"]["phase"] == "Pending"
    [container] = pod["status"]["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "ImagePullBackOff"
    assert container["imageID"] == ""
    assert not _ready(pod)
    assert len(cluster.pods()) == 2, "the old pod keeps serving while the new one cannot start"
