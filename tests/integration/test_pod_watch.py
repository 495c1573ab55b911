"""rollbackd's watch cache against kubesim: each pod as its ReplicaSet or its trouble, lists in pages.

The cache lists and watches pods, keeps a pod with nothing wrong as the name
of its ReplicaSet (what resolving an alert's pod to its Deployment needs) and
any other as the status fields pod health reads, and says whether its pod
view is current. It lists every kind with ``limit``/``continue``, first at
start and again after a 410, falling back to one full list when a continue
token expires.
"""

from __future__ import annotations

import copy
import itertools
import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from rollbackd.kube import Kube
from rollbackd.kube.pager import PAGE_SIZE, POD_PAGE_SIZE, list_all
from rollbackd.model import Target
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.stack import wait_for
from tests.integration.test_kube_adapter import wait_until
from tests.integration.test_kube_retries import deployment

pytestmark = pytest.mark.integration

TARGET = Target("default", "web")
PODS = "/api/v1/pods"
POD_METADATA_KEYS = {"name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion"}


def web_pods(sim: KubeSim) -> list[str]:
    return [p["metadata"]["name"] for p in sim.store.list("v1/pods", "default", copy=False)]


async def connect(sim: KubeSim, page_size: int) -> Kube:
    api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
    return Kube(api, list_page_size=page_size)


@pytest_asyncio.fixture
async def sim(tmp_path: pathlib.Path) -> AsyncIterator[KubeSim]:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig", pod_ready_delay=0.05) as sim:
        sim.store.create("apps/v1/deployments", deployment(replicas=5))
        await wait_until(lambda: len(web_pods(sim)) == 5)
        yield sim


@pytest_asyncio.fixture
async def kube(sim: KubeSim) -> AsyncIterator[Kube]:
    adapter = await connect(sim, page_size=2)
    async with adapter:
        await adapter.start_watches()
        assert await adapter.wait_synced(10), "watch cache never synced"
        yield adapter


def web_replicaset(sim: KubeSim) -> str:
    [replicaset] = sim.store.list("apps/v1/replicasets", "default", copy=False)
    return str(replicaset["metadata"]["name"])


async def settled_pods(kube: Kube, key: tuple[str, str]) -> list[dict[str, Any]]:
    """The ReplicaSet's cached pods once each is Ready and kept as its ReplicaSet (no trouble)."""

    async def all_settled() -> list[dict[str, Any]] | None:
        pods = (await kube.replicaset_pods({key}))[key]
        return pods if pods and all(p["status"] == {} for p in pods) else None

    found: list[dict[str, Any]] = await wait_for(
        all_settled, 10, "every ready pod kept as its ReplicaSet", interval=0.02
    )
    return found


async def test_pods_are_listed_in_pages_watched_and_a_ready_one_kept_as_its_replicaset(
    sim: KubeSim, kube: Kube
) -> None:
    pod_lists = [r for r in sim.requests if r.verb == "list" and r.path == PODS]
    assert len(pod_lists) == 3  # five pods, two a page
    queries = [parse_qs(r.query) for r in pod_lists]
    assert all(q["limit"] == ["2"] for q in queries)
    assert "continue" not in queries[0] and all("continue" in q for q in queries[1:])
    await wait_until(lambda: any(r.verb == "watch" and r.path == PODS for r in sim.requests))
    assert kube.pods_watched()

    for name in web_pods(sim):
        cached = kube.cache.pod("default", name)
        assert cached is not None and set(cached) == {"metadata"}
        assert set(cached["metadata"]) <= POD_METADATA_KEYS
        assert kube.resolve_pod("default", name) == TARGET
    key = ("default", web_replicaset(sim))
    pods = await settled_pods(kube, key)
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(web_pods(sim))
    assert all(p["metadata"]["ownerReferences"][0]["name"] == key[1] for p in pods)


async def test_a_pod_in_trouble_arrives_with_what_pod_health_reads_and_leaves_it_when_well(
    sim: KubeSim, kube: Kube
) -> None:
    key = ("default", web_replicaset(sim))
    await settled_pods(kube, key)
    victim = sorted(web_pods(sim))[0]
    pod = sim.store.get("v1/pods", "default", victim)
    healthy = copy.deepcopy(pod["status"])
    crashing = {
        "name": "app",
        "ready": False,
        "restartCount": 4,
        "image": "web:1.0",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {
            "terminated": {"reason": "Error", "exitCode": 1, "finishedAt": "2026-01-01T00:00:00Z"}
        },
    }
    pod["status"]["containerStatuses"] = [crashing]
    sim.store.update("v1/pods", pod, subresource="status")

    async def cached_trouble() -> dict[str, Any] | None:
        pods = (await kube.replicaset_pods({key}))[key]
        return next((p for p in pods if p["metadata"]["name"] == victim and p["status"]), None)

    trouble = await wait_for(cached_trouble, 10, "the crash loop in the cache", interval=0.02)
    [kept] = trouble["status"]["containerStatuses"]
    assert kept["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}, "the message is not read"
    assert kept["restartCount"] == 4 and kept["lastState"]["terminated"]["reason"] == "Error"
    assert kube.resolve_pod("default", victim) == TARGET

    pod = sim.store.get("v1/pods", "default", victim)
    pod["status"] = healthy
    sim.store.update("v1/pods", pod, subresource="status")

    async def settled_again() -> bool:
        pods = (await kube.replicaset_pods({key}))[key]
        return any(p["metadata"]["name"] == victim and p["status"] == {} for p in pods)

    await wait_for(settled_again, 10, "the recovered pod kept as its ReplicaSet", interval=0.02)


async def test_the_pod_view_is_not_current_while_its_watch_fails_and_is_once_it_resumes(
    sim: KubeSim, kube: Kube
) -> None:
    await wait_until(kube.pods_watched)
    sim.faults.fail_for("watch", PODS, 503, duration=1.5)
    sim.faults.fail_for("list", PODS, 503, duration=1.5)
    assert sim.faults.drop_watches("^/api/v1/pods$") >= 1
    await wait_until(lambda: not kube.pods_watched())
    assert kube.cache.current("deployments"), "only the failing kind is stale"
    gone = sorted(web_pods(sim))[0]
    sim.store.delete("v1/pods", "default", gone)
    await wait_until(kube.pods_watched, timeout=20)
    await wait_until(lambda: kube.resolve_pod("default", gone) is None)


async def test_pods_are_listed_in_smaller_pages_than_the_other_kinds(sim: KubeSim) -> None:
    """Whole pods are most of a list: smaller pages leave less decoded JSON resident."""
    async with await connect(sim, page_size=PAGE_SIZE) as kube:
        await kube.start_watches()
        assert await kube.wait_synced(10)
    lists = {r.path: parse_qs(r.query) for r in sim.requests if r.verb == "list"}
    assert lists[PODS]["limit"] == [str(POD_PAGE_SIZE)] and POD_PAGE_SIZE < PAGE_SIZE
    assert lists["/apis/apps/v1/deployments"]["limit"] == [str(PAGE_SIZE)]


async def test_pods_added_and_removed_later_arrive_through_the_watch(
    sim: KubeSim, kube: Kube
) -> None:
    before = set(web_pods(sim))
    current = sim.store.get("apps/v1/deployments", "default", "web")
    current["spec"]["replicas"] = 7
    sim.store.update("apps/v1/deployments", current)
    await wait_until(lambda: len(web_pods(sim)) == 7)
    added = set(web_pods(sim)) - before
    await wait_until(lambda: all(kube.resolve_pod("default", name) == TARGET for name in added))

    gone = sorted(before)[0]
    sim.store.delete("v1/pods", "default", gone)
    await wait_until(lambda: kube.resolve_pod("default", gone) is None)
    assert kube.cache.pod("default", gone) is None


async def test_readiness_and_images_are_read_on_demand_for_one_deployment(
    sim: KubeSim, kube: Kube
) -> None:
    def all_ready() -> bool:
        status = sim.store.get("apps/v1/deployments", "default", "web").get("status") or {}
        return status.get("readyReplicas") == 5

    await wait_until(all_ready)
    report = await kube.readiness(TARGET)
    assert (report.desired, report.ready) == (5, 5)
    images = await kube.pod_images(TARGET)
    assert list(images) == ["app"] and images["app"]
    selected = [r for r in sim.requests if r.verb == "list" and r.path.endswith("/pods")]
    assert any("labelSelector=app" in r.query for r in selected)


async def test_a_watch_answered_with_silence_stops_counting_as_current(sim: KubeSim) -> None:
    """A connection that hangs without an error (a partition, a proxy that lost its state)
    is a failed watch once it has been silent past the watch's own timeout and a grace."""
    api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
    async with Kube(api, watch_timeout=1) as kube:  # read timeout 1 s + 5 s grace
        await kube.start_watches()
        assert await kube.wait_synced(10)
        await wait_until(kube.pods_watched)
        sim.faults.delay("watch", f"^{PODS}$", 40, count=1)  # the next pod watch: no answer
        sim.faults.drop_watches(f"^{PODS}$")
        await wait_until(lambda: not kube.pods_watched(), timeout=15)
        await wait_until(kube.pods_watched, timeout=20)  # the next watch is answered


async def test_a_relist_after_410_is_paginated_and_replaces_the_pods(
    tmp_path: pathlib.Path,
) -> None:
    async with KubeSim(
        kubeconfig_path=tmp_path / "kc", pod_ready_delay=0.05, watch_history=3
    ) as sim:
        sim.store.create("apps/v1/deployments", deployment(replicas=3))
        await wait_until(lambda: len(web_pods(sim)) == 3)
        async with await connect(sim, page_size=2) as kube:
            kube.cache._watch_timeout = 1  # short watches: resume soon after the writes
            await kube.start_watches()
            assert await kube.wait_synced(10)
            mark = sim.requests.mark()
            sim.faults.drop_watches()
            # More writes than the history keeps: resuming is a 410, then a relist.
            for index in range(6):
                sim.store.create(
                    "v1/configmaps", {"metadata": {"name": f"c{index}", "namespace": "default"}}
                )
            victim = web_pods(sim)[0]
            sim.store.delete("v1/pods", "default", victim)

            def relisted() -> bool:
                lists = [r for r in sim.requests.since(mark) if r.verb == "list" and r.path == PODS]
                return len(lists) >= 2

            await wait_until(relisted)
            await wait_until(lambda: kube.resolve_pod("default", victim) is None)
            lists = [r for r in sim.requests.since(mark) if r.verb == "list" and r.path == PODS]
            assert "limit=2" in lists[0].query and "continue=" not in lists[0].query
            # A list in one piece only follows a continue token that expired meanwhile
            # (on a busy machine the history of 3 can run out between two pages).
            for before, unpaged in itertools.pairwise(lists):
                if "limit=" not in unpaged.query:
                    assert "continue=" in before.query and before.status == 410, before


async def test_an_expired_continue_token_falls_back_to_one_full_list(
    tmp_path: pathlib.Path,
) -> None:
    async with KubeSim(kubeconfig_path=tmp_path / "kc", watch_history=2) as sim:
        names = [f"cm-{index}" for index in range(5)]
        for name in names:
            sim.store.create("v1/configmaps", {"metadata": {"name": name, "namespace": "default"}})
        async with await connect(sim, page_size=2) as kube:
            calls: list[Sequence[tuple[str, str]]] = []

            async def call(path: str, query: Sequence[tuple[str, str]], accept: str) -> Any:
                calls.append(query)
                page = await kube.request("GET", path, query=query, accept=accept)
                if len(calls) == 1:  # churn past the history after the first page
                    for extra in ("x1", "x2", "x3"):
                        sim.store.create(
                            "v1/configmaps", {"metadata": {"name": extra, "namespace": "default"}}
                        )
                return page

            items, resource_version = await list_all(
                call,
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                _name,
                page_size=2,
            )
        assert items == [*names, "x1", "x2", "x3"]  # one consistent list, no duplicates
        assert resource_version == str(sim.store.resource_version)
        assert [dict(q).get("limit") for q in calls] == ["2", "2", None]


def _name(item: dict[str, Any]) -> str:
    return str(item["metadata"]["name"])
