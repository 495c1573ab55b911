"""Watch streams through kubernetes-asyncio: resume, bookmarks and 410 Gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.testing.kubesim import KubeSim

NS = "default"
DEADLINE = 10.0


async def connect(sim: KubeSim) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(sim.kubeconfig), client_configuration=configuration
    )
    return client.ApiClient(configuration=configuration)


@pytest.fixture
async def core(kubesim: KubeSim) -> AsyncIterator[client.CoreV1Api]:
    async with await connect(kubesim) as api:
        yield client.CoreV1Api(api)


async def make(core: client.CoreV1Api, name: str) -> client.V1ConfigMap:
    return await core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"v": "1"})
    )


async def collect(stream: watch.Watch, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)
            if len(events) == count:
                return

    await asyncio.wait_for(read(), DEADLINE)
    return events


async def test_list_then_watch_from_the_list_resource_version(core: client.CoreV1Api) -> None:
    await make(core, "old")
    listing = await core.list_namespaced_config_map(NS)
    async with watch.Watch() as stream:
        events_stream = stream.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=listing.metadata.resource_version,
            timeout_seconds=30,
        )
        await make(core, "new")
        await core.delete_namespaced_config_map("old", NS)
        events = await collect(events_stream, 2)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "new"),
        ("DELETED", "old"),
    ]
    assert isinstance(events[0]["object"], client.V1ConfigMap)


async def test_watch_resumes_after_the_last_seen_resource_version(core: client.CoreV1Api) -> None:
    first = await make(core, "a")
    await make(core, "b")
    await make(core, "c")
    async with watch.Watch() as stream:
        events = await collect(
            stream.stream(
                core.list_namespaced_config_map,
                NS,
                resource_version=first.metadata.resource_version,
                timeout_seconds=30,
            ),
            2,
        )
    assert [e["object"].metadata.name for e in events] == ["b", "c"]


async def test_bookmarks_are_delivered_when_allowed(
    kubesim: KubeSim, core: client.CoreV1Api
) -> None:
    kubesim.api.bookmark_interval = 0.05
    created = await make(core, "a")
    async with watch.Watch() as stream:
        events = await collect(
            stream.stream(
                core.list_namespaced_config_map,
                NS,
                resource_version=created.metadata.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=30,
            ),
            1,
        )
    assert events[0]["type"] == "BOOKMARK"
    assert int(events[0]["raw_object"]["metadata"]["resourceVersion"]) >= int(
        created.metadata.resource_version
    )


async def test_too_old_resource_version_raises_410() -> None:
    async with KubeSim(watch_history=3) as sim, await connect(sim) as api:
        core = client.CoreV1Api(api)
        first = await make(core, "first")
        for index in range(5):
            await make(core, f"later-{index}")
        async with watch.Watch() as stream:
            with pytest.raises(ApiException) as raised:
                await collect(
                    stream.stream(
                        core.list_namespaced_config_map,
                        NS,
                        resource_version=first.metadata.resource_version,
                        timeout_seconds=30,
                    ),
                    1,
                )
    assert raised.value.status == 410
    assert "Expired" in str(raised.value.reason)


async def test_a_dropped_watch_ends_the_stream(kubesim: KubeSim, core: client.CoreV1Api) -> None:
    created = await make(core, "a")
    async with watch.Watch() as stream:
        events_stream = stream.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=created.metadata.resource_version,
            timeout_seconds=30,
        )
        reader = asyncio.ensure_future(collect(events_stream, 1))

        async def drop() -> None:
            while True:  # the stream opens asynchronously; poll until it is registered
                if kubesim.faults.drop_watches(r"configmaps"):
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(drop(), DEADLINE)
        # With timeout_seconds set, the client does not reconnect: the stream just ends.
        assert await asyncio.wait_for(reader, DEADLINE) == []
