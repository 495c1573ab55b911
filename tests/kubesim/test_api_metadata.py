"""Metadata-only lists and watches (PartialObjectMetadata), and consistent paginated lists.

What client-go's metadata informers and pager ask of the API server, over raw
HTTP and through the real kubernetes-asyncio client: the conversions
``handlers/response.go`` makes, the 406 it answers when one does not fit, and
continue tokens that page through one snapshot or expire with a 410.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from rollbackd.testing.kubesim import KubeSim

PODS = "/api/v1/namespaces/default/pods"
LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
ONE_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# client-go's metadata client: protobuf first, the same conversion in JSON, then plain JSON.
CLIENT_GO_LIST_ACCEPT = (
    "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)
LINE_TIMEOUT = 10.0


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": labels or {"app": "web"},
            "annotations": {"note": "kept in metadata"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-1",
                    "uid": "rs-uid",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "web:1.0"}]},
    }


@pytest.fixture
async def session(kubesim: KubeSim) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=kubesim.url) as http:
        yield http


async def get(http: aiohttp.ClientSession, path: str, accept: str) -> tuple[int, Any]:
    async with http.get(path, headers={"Accept": accept}) as response:
        return response.status, await response.json(content_type=None)


def add_pods(sim: KubeSim, *names: str) -> None:
    for name in names:
        sim.store.create("v1/pods", pod(name))


async def test_a_metadata_list_has_every_pods_metadata_and_nothing_else(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    add_pods(kubesim, "a", "b")
    full = kubesim.store.get("v1/pods", "default", "a")
    status, body = await get(session, PODS, LIST_ACCEPT)
    assert status == 200, body
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["apiVersion"] == "meta.k8s.io/v1"
    assert body["metadata"]["resourceVersion"] == str(kubesim.store.resource_version)
    assert [item["metadata"]["name"] for item in body["items"]] == ["a", "b"]
    first = body["items"][0]
    assert set(first) == {"kind", "apiVersion", "metadata"}
    assert (first["kind"], first["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
    assert first["metadata"] == full["metadata"]  # the whole ObjectMeta, as upstream


async def test_client_go_accept_with_protobuf_first_gets_json_metadata(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    add_pods(kubesim, "a")
    status, body = await get(session, PODS, CLIENT_GO_LIST_ACCEPT)
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"


@pytest.mark.parametrize(
    "accept",
    [
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v9",
        "application/json;as=PartialObjectMetadataList;g=apps;v=v1",
        "application/json;as=Deployment;g=meta.k8s.io;v=v1",
        "text/plain",
    ],
)
async def test_a_conversion_the_server_does_not_know_falls_back_to_whole_objects(
    kubesim: KubeSim, session: aiohttp.ClientSession, accept: str
) -> None:
    # Negotiation skips a clause it cannot serve and falls back to its first type.
    add_pods(kubesim, "a")
    status, body = await get(session, PODS, accept)
    assert status == 200
    assert body["kind"] == "PodList"
    assert body["items"][0]["spec"]["containers"][0]["image"] == "web:1.0"


async def test_one_object_as_metadata_and_the_conversions_that_do_not_fit_are_406(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    add_pods(kubesim, "a")
    status, body = await get(session, f"{PODS}/a", ONE_ACCEPT)
    assert status == 200
    assert body["kind"] == "PartialObjectMetadata"
    assert body["metadata"]["name"] == "a" and "spec" not in body

    status, body = await get(session, f"{PODS}/a", LIST_ACCEPT)
    assert status == 406
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotAcceptable", 406)
    assert body["message"] == (
        "you requested PartialObjectMetadataList, but the requested object is not a list "
        "(*core.Pod)"
    )
    status, body = await get(session, PODS, ONE_ACCEPT)
    assert status == 406
    assert body["message"] == (
        "you requested PartialObjectMetadata, but the requested object is a list (*core.PodList)"
    )


async def read_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    line = await asyncio.wait_for(response.content.readline(), LINE_TIMEOUT)
    assert line, "watch stream ended"
    event: dict[str, Any] = json.loads(line)
    return event


async def test_a_metadata_watch_streams_partial_objects_and_bookmarks(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.api.bookmark_interval = 0.05
    add_pods(kubesim, "a")
    rv = kubesim.store.resource_version
    query = f"watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
    async with session.get(f"{PODS}?{query}", headers={"Accept": ONE_ACCEPT}) as response:
        assert response.status == 200
        add_pods(kubesim, "b")
        kubesim.store.delete("v1/pods", "default", "a")
        seen: list[tuple[str, str]] = []
        while len(seen) < 2:
            event = await read_event(response)
            obj = event["object"]
            assert (obj["kind"], obj["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
            assert set(obj) == {"kind", "apiVersion", "metadata"}
            if event["type"] == "BOOKMARK":
                assert int(obj["metadata"]["resourceVersion"]) >= rv
                continue
            if event["type"] == "MODIFIED":
                continue  # kubesim's kubelet may mark a pod scheduled or Ready
            seen.append((event["type"], obj["metadata"]["name"]))
        assert seen == [("ADDED", "b"), ("DELETED", "a")]


async def test_a_watch_asking_for_a_list_conversion_is_refused(
    session: aiohttp.ClientSession,
) -> None:
    status, body = await get(session, f"{PODS}?watch=true", LIST_ACCEPT)
    assert status == 406
    assert body["reason"] == "NotAcceptable"


async def list_pages(
    http: aiohttp.ClientSession, query: str, between: Any = None
) -> tuple[list[str], set[str]]:
    """Names over every page and the resourceVersions the pages carried; ``between`` once."""
    names: list[str] = []
    versions: set[str] = set()
    token = ""
    while True:
        page_query = query + (f"&continue={token}" if token else "")
        status, body = await get(http, f"{PODS}?{page_query}", LIST_ACCEPT)
        assert status == 200, body
        names += [item["metadata"]["name"] for item in body["items"]]
        versions.add(body["metadata"]["resourceVersion"])
        token = body["metadata"].get("continue", "")
        if not token:
            return names, versions
        if between is not None:
            between()
            between = None


async def test_continued_pages_show_the_first_pages_snapshot(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    add_pods(kubesim, "a", "b", "c", "d", "e")

    def churn() -> None:
        kubesim.store.delete("v1/pods", "default", "d")
        add_pods(kubesim, "c2", "f")
        relabelled = kubesim.store.get("v1/pods", "default", "e")
        relabelled["metadata"]["labels"] = {"app": "other"}
        kubesim.store.update("v1/pods", relabelled)

    names, versions = await list_pages(session, "limit=2", between=churn)
    assert names == ["a", "b", "c", "d", "e"]
    assert len(versions) == 1  # every page carries the snapshot's resourceVersion
    # A fresh list sees the churn; the label selector is judged on the state listed.
    names, _ = await list_pages(session, "limit=2")
    assert names == ["a", "b", "c", "c2", "e", "f"]
    selected, _ = await list_pages(session, "limit=2&labelSelector=app%3Dweb")
    assert selected == ["a", "b", "c", "c2", "f"]


async def test_a_label_selector_is_applied_to_the_snapshot(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    add_pods(kubesim, "a", "b", "c", "d")

    def relabel() -> None:
        for name in ("c", "d"):
            moved = kubesim.store.get("v1/pods", "default", name)
            moved["metadata"]["labels"] = {"app": "other"}
            kubesim.store.update("v1/pods", moved)

    selected, _ = await list_pages(session, "limit=2&labelSelector=app%3Dweb", between=relabel)
    assert selected == ["a", "b", "c", "d"]  # they still matched when the list began


async def test_a_continue_token_older_than_the_history_is_410_with_an_inconsistent_token(
    session: aiohttp.ClientSession,
) -> None:
    async with KubeSim(watch_history=2) as sim:
        add_pods(sim, "a", "b", "c")
        status, first = await get(session, f"{sim.url}{PODS}?limit=1", LIST_ACCEPT)
        assert status == 200
        add_pods(sim, "d", "e", "f")  # the snapshot's history is compacted away
        token = first["metadata"]["continue"]
        status, body = await get(session, f"{sim.url}{PODS}?limit=1&continue={token}", LIST_ACCEPT)
        assert status == 410
        assert (body["reason"], body["code"]) == ("Expired", 410)
        assert body["message"].startswith(
            "The provided continue parameter is too old to display a consistent list result."
        )
        inconsistent = body["metadata"]["continue"]
        status, rest = await get(
            session, f"{sim.url}{PODS}?limit=10&continue={inconsistent}", LIST_ACCEPT
        )
        assert status == 200
        # The remainder as it is now, after the first page's last key.
        assert [item["metadata"]["name"] for item in rest["items"]] == ["b", "c", "d", "e", "f"]
        assert rest["metadata"]["resourceVersion"] == str(sim.store.resource_version)


def decode(api: client.ApiClient, value: Any, model: str) -> Any:
    """The client's own deserializer, as its typed calls use it."""
    return api.deserialize(SimpleNamespace(data=json.dumps(value)), model)


async def test_the_real_kubernetes_asyncio_client_reads_the_metadata_list(
    kubesim: KubeSim,
) -> None:
    # kubernetes-asyncio has no PartialObjectMetadata model: its parts are
    # ListMeta and ObjectMeta, which the client's deserializer must accept.
    add_pods(kubesim, "a", "b")
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with api:
        response = await api.call_api(
            PODS,
            "GET",
            query_params=[("limit", "1")],
            header_params={"Accept": LIST_ACCEPT},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        body = json.loads(await response.read())
        assert response.status == 200
        list_meta = decode(api, body["metadata"], "V1ListMeta")
        assert isinstance(list_meta, client.V1ListMeta) and list_meta._continue
        item = decode(api, body["items"][0]["metadata"], "V1ObjectMeta")
        assert isinstance(item, client.V1ObjectMeta)
        assert item.name == "a" and item.labels == {"app": "web"}
        assert item.owner_references[0].kind == "ReplicaSet"
