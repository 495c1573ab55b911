"""The watch cache's answer to pod health: the pods of each (namespace, ReplicaSet) asked for.

Pods are found by their controlling ReplicaSet's name within their namespace,
never across namespaces; a Ready pod comes back reporting no trouble and a
troubled one with the status fields judged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest_asyncio

from rollbackd.kube.cache import WatchCache
from tests.unit.test_kube_podrecord import running, whole_pod


def in_namespace(pod: dict[str, Any], namespace: str, name: str, owner: str) -> dict[str, Any]:
    pod["metadata"].update(namespace=namespace, name=name)
    pod["metadata"]["ownerReferences"][0]["name"] = owner
    return pod


PODS = [
    in_namespace(whole_pod("a"), "shop", "web-7f9-a", "web-7f9"),
    in_namespace(whole_pod("b", containers=[running(restarts=3)]), "shop", "web-7f9-b", "web-7f9"),
    in_namespace(whole_pod("c"), "shop", "web-5d1-c", "web-5d1"),  # the old ReplicaSet
    in_namespace(whole_pod("d"), "staging", "web-7f9-d", "web-7f9"),  # same name, elsewhere
]


class FakeApi:
    """Lists once (pods as above, nothing else); every watch stays open and silent."""

    async def list_call(self, path: str, query: Sequence[tuple[str, str]], accept: str) -> Any:
        items = PODS if path == "/api/v1/pods" else []
        return {"items": items, "metadata": {"resourceVersion": "7"}}

    async def open_watch(self, path: str, **params: Any) -> Any:
        await asyncio.Event().wait()


@pytest_asyncio.fixture
async def cache() -> AsyncIterator[WatchCache]:
    api = FakeApi()
    subject = WatchCache(api.list_call, api.open_watch)
    subject.start()
    assert await subject.wait_synced(5)
    yield subject
    await subject.stop()


async def test_the_pods_of_a_replicaset_are_its_own_in_its_namespace(cache: WatchCache) -> None:
    assert cache.current("pods")
    found = await cache.replicaset_pods({("shop", "web-7f9"), ("staging", "gone-1")})
    assert set(found) == {("shop", "web-7f9"), ("staging", "gone-1")}
    assert found[("staging", "gone-1")] == []
    by_name = {p["metadata"]["name"]: p for p in found[("shop", "web-7f9")]}
    assert sorted(by_name) == ["web-7f9-a", "web-7f9-b"], "not the old ReplicaSet, not staging"
    assert by_name["web-7f9-a"]["status"] == {}, "a Ready pod reports no trouble"
    [restarted] = by_name["web-7f9-b"]["status"]["containerStatuses"]
    assert restarted["restartCount"] == 3
