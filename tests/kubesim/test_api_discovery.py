"""Discovery and OpenAPI answers, as kubectl and client libraries read them."""

from __future__ import annotations

from typing import Any

import aiohttp

from rollbackd.testing.kubesim import KubeSim


async def get_json(sim: KubeSim, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(sim.url + path) as response:
        return response.status, await response.json(content_type=None)


async def test_version_reports_a_1_33_server(kubesim: KubeSim) -> None:
    status, body = await get_json(kubesim, "/version")
    assert status == 200
    assert (body["major"], body["minor"]) == ("1", "33")
    assert body["gitVersion"].startswith("v1.33.")


async def test_core_group_lists_v1_and_the_core_kinds(kubesim: KubeSim) -> None:
    _, versions = await get_json(kubesim, "/api")
    assert versions["kind"] == "APIVersions"
    assert versions["versions"] == ["v1"]
    _, resources = await get_json(kubesim, "/api/v1")
    by_name = {entry["name"]: entry for entry in resources["resources"]}
    for name in ("pods", "services", "endpoints", "configmaps", "secrets", "events"):
        assert by_name[name]["namespaced"] is True
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["pods"]["shortNames"] == ["po"]
    assert "pods/status" in by_name
    assert "watch" in by_name["pods"]["verbs"]


async def test_groups_include_apps_events_coordination_and_gitops_kinds(kubesim: KubeSim) -> None:
    _, groups = await get_json(kubesim, "/apis")
    names = {group["name"] for group in groups["groups"]}
    assert {
        "apps",
        "events.k8s.io",
        "coordination.k8s.io",
        "argoproj.io",
        "kustomize.toolkit.fluxcd.io",
        "helm.toolkit.fluxcd.io",
    } <= names
    _, apps = await get_json(kubesim, "/apis/apps")
    assert apps["preferredVersion"]["groupVersion"] == "apps/v1"


async def test_deployments_advertise_status_and_scale_subresources(kubesim: KubeSim) -> None:
    _, resources = await get_json(kubesim, "/apis/apps/v1")
    by_name = {entry["name"]: entry for entry in resources["resources"]}
    deployments = by_name["deployments"]
    assert deployments["kind"] == "Deployment"
    assert deployments["singularName"] == "deployment"
    assert deployments["shortNames"] == ["deploy"]
    assert sorted(deployments["verbs"]) == sorted(
        ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    )
    scale = by_name["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert "deployments/status" in by_name
    assert "replicasets/scale" in by_name


async def test_openapi_v3_declares_field_validation_for_every_kind(kubesim: KubeSim) -> None:
    _, index = await get_json(kubesim, "/openapi/v3")
    assert "apis/apps/v1" in index["paths"]
    _, document = await get_json(kubesim, index["paths"]["apis/apps/v1"]["serverRelativeURL"])
    patch_op = document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch_op["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert "fieldValidation" in [param["name"] for param in patch_op["parameters"]]


async def test_unknown_paths_answer_a_not_found_status(kubesim: KubeSim) -> None:
    for path in ("/apis/nope.example.com/v1", "/apis/apps/v1/widgets", "/nothing/here"):
        status, body = await get_json(kubesim, path)
        assert status == 404, path
        assert body["kind"] == "Status"
        assert body["reason"] == "NotFound"
        assert body["code"] == 404


async def test_health_endpoints_answer_ok(kubesim: KubeSim) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/livez"):
            async with session.get(kubesim.url + path) as response:
                assert response.status == 200
                assert await response.text() == "ok"
