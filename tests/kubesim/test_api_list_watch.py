"""List selectors and pagination, and watch streams over raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
LINE_TIMEOUT = 10.0


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def names(self, path: str) -> list[str]:
        status, body = await self.call("GET", path)
        assert status == 200, body
        return [item["metadata"]["name"] for item in body["items"]]


class Watch:
    """An open raw watch stream, read one JSON line at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.response.content.readline(), LINE_TIMEOUT)
        assert line, "watch stream ended"
        event: dict[str, Any] = json.loads(line)
        return event

    async def ended(self) -> bool:
        return await asyncio.wait_for(self.response.content.readline(), LINE_TIMEOUT) == b""


@pytest.fixture
async def api(kubesim: KubeSim) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, kubesim.url)


async def make(api: Api, name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}},
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def test_label_selectors_support_equality_and_set_operators(api: Api) -> None:
    await make(api, "a", tier="web", env="prod")
    await make(api, "b", tier="db", env="prod")
    await make(api, "c", tier="web")
    await make(api, "d")
    cases = {
        "tier=web": ["a", "c"],
        "tier==web,env=prod": ["a"],
        "tier!=web": ["b", "d"],
        "tier in (web,db)": ["a", "b", "c"],
        "tier notin (web)": ["b", "d"],
        "env": ["a", "b"],
        "!env": ["c", "d"],
    }
    for selector, expected in cases.items():
        assert await api.names(f"{CONFIGMAPS}?labelSelector={selector}") == expected, selector


async def test_malformed_label_selector_is_400(api: Api) -> None:
    status, body = await api.call("GET", f"{CONFIGMAPS}?labelSelector=tier in (web")
    assert status == 400
    assert body["reason"] == "BadRequest"


async def test_field_selectors_on_name_namespace_and_unknown_fields(api: Api) -> None:
    await make(api, "a")
    await make(api, "b")
    await make(api, "k", namespace="kube-system")
    assert await api.names(f"{CONFIGMAPS}?fieldSelector=metadata.name=b") == ["b"]
    assert await api.names(f"{CONFIGMAPS}?fieldSelector=metadata.name!=b") == ["a"]
    all_ns = "/api/v1/configmaps?fieldSelector=metadata.namespace=kube-system"
    assert await api.names(all_ns) == ["k"]
    status, body = await api.call("GET", f"{CONFIGMAPS}?fieldSelector=data.v=0")
    assert status == 400
    assert "field label not supported" in body["message"]


async def test_event_field_selectors_used_by_kubectl_describe(api: Api) -> None:
    path = "/api/v1/namespaces/default/events"
    for name, target in (("e1", "web"), ("e2", "db")):
        event = {
            "metadata": {"name": name},
            "involvedObject": {"kind": "Deployment", "name": target, "namespace": "default"},
            "reason": "Test",
        }
        assert (await api.call("POST", path, event))[0] == 201
    selector = (
        "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Deployment"
    )
    assert await api.names(f"{path}?fieldSelector={selector}") == ["e1"]


async def test_all_namespaces_list_spans_namespaces(api: Api) -> None:
    await make(api, "a")
    await make(api, "k", namespace="kube-system")
    status, body = await api.call("GET", "/api/v1/configmaps")
    assert status == 200
    pairs = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]
    assert pairs == [("default", "a"), ("kube-system", "k")]


async def test_limit_and_continue_page_through_everything_once(api: Api) -> None:
    for index in range(7):
        await make(api, f"cm-{index}")
    seen: list[str] = []
    path = f"{CONFIGMAPS}?limit=3"
    pages = 0
    while True:
        status, body = await api.call("GET", path)
        assert status == 200
        assert body["metadata"]["resourceVersion"].isdigit()
        seen += [item["metadata"]["name"] for item in body["items"]]
        pages += 1
        token = body["metadata"].get("continue")
        if not token:
            break
        path = f"{CONFIGMAPS}?limit=3&continue={token}"
    assert seen == [f"cm-{index}" for index in range(7)]
    assert pages == 3
    status, _ = await api.call("GET", f"{CONFIGMAPS}?limit=3&continue=garbage!")
    assert status == 400


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def open_watch(
    session: aiohttp.ClientSession, sim: KubeSim, query: str
) -> tuple[aiohttp.ClientResponse, Watch]:
    response = await session.get(f"{sim.url}{CONFIGMAPS}?watch=true&{query}")
    assert response.status == 200
    return response, Watch(response)


async def test_watch_without_resource_version_sends_current_state_then_changes(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    await make(api, "existing")
    response, watch = await open_watch(session, kubesim, "")
    try:
        first = await watch.next()
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "existing")
        await make(api, "new")
        added = await watch.next()
        assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "new")
        await api.call("DELETE", f"{CONFIGMAPS}/existing")
        deleted = await watch.next()
        assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "existing")
    finally:
        response.close()


async def test_watch_from_a_resource_version_replays_only_later_events(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    before = await make(api, "before")
    after = await make(api, "after")
    rv = before["metadata"]["resourceVersion"]
    response, watch = await open_watch(session, kubesim, f"resourceVersion={rv}")
    try:
        event = await watch.next()
        assert event["type"] == "ADDED"
        assert event["object"]["metadata"]["name"] == "after"
        assert (
            event["object"]["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
        )
    finally:
        response.close()


async def test_watch_label_selector_filters_events(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    response, watch = await open_watch(session, kubesim, "labelSelector=app=web")
    try:
        await make(api, "other", app="db")
        await make(api, "mine", app="web")
        event = await watch.next()
        assert event["object"]["metadata"]["name"] == "mine"
    finally:
        response.close()


async def test_too_old_resource_version_is_a_410_error_event(
    session: aiohttp.ClientSession,
) -> None:
    # A tiny history, so that a few writes compact the start of it away.
    async with KubeSim(watch_history=2) as sim:
        for index in range(5):
            sim.store.create(
                "v1/configmaps", {"metadata": {"name": f"x{index}", "namespace": "default"}}
            )
        response, watch = await open_watch(session, sim, "resourceVersion=1")
        try:
            event = await watch.next()
            assert event["type"] == "ERROR"
            assert event["object"]["kind"] == "Status"
            assert event["object"]["code"] == 410
            assert event["object"]["reason"] == "Expired"
            assert await watch.ended()
        finally:
            response.close()


async def test_bookmarks_carry_the_current_resource_version(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.api.bookmark_interval = 0.05
    created = await make(api, "a")
    rv = created["metadata"]["resourceVersion"]
    response, watch = await open_watch(
        session, kubesim, f"resourceVersion={rv}&allowWatchBookmarks=true"
    )
    try:
        event = await watch.next()
        assert event["type"] == "BOOKMARK"
        assert event["object"]["kind"] == "ConfigMap"
        assert int(event["object"]["metadata"]["resourceVersion"]) >= int(rv)
    finally:
        response.close()


async def test_timeout_seconds_ends_the_stream(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    response, watch = await open_watch(session, kubesim, "timeoutSeconds=1&resourceVersion=1")
    try:
        assert await watch.ended()
    finally:
        response.close()


async def test_objects_entering_and_leaving_a_label_selector_are_added_and_deleted(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    await make(api, "mover", app="db")
    response, watch = await open_watch(session, kubesim, "labelSelector=app=web")
    try:
        relabel = {"metadata": {"labels": {"app": "web"}}}
        for labels, expected in (("web", "ADDED"), ("web2", "DELETED")):
            relabel["metadata"]["labels"]["app"] = labels
            async with session.patch(
                f"{kubesim.url}{CONFIGMAPS}/mover",
                json=relabel,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as patched:
                assert patched.status == 200
            event = await watch.next()
            assert (event["type"], event["object"]["metadata"]["name"]) == (expected, "mover")
    finally:
        response.close()


async def test_watch_with_table_accept_streams_one_row_tables(
    api: Api, kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    await make(api, "a")
    await make(api, "b")
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    response = await session.get(
        f"{kubesim.url}{CONFIGMAPS}?watch=true", headers={"Accept": accept}
    )
    try:
        watch = Watch(response)
        first, second = await watch.next(), await watch.next()
        assert first["object"]["kind"] == "Table"
        assert [c["name"] for c in first["object"]["columnDefinitions"]] == ["Name", "Age"]
        assert first["object"]["rows"][0]["cells"][0] == "a"
        assert second["object"]["rows"][0]["cells"][0] == "b"
    finally:
        response.close()
