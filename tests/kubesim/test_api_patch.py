"""PATCH in its three flavours, and the errors the real API server gives for bad patches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JSON_PATCH = "application/json-patch+json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"owner": "sre"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.local/web:1.0",
                            "env": [{"name": "MODE", "value": "fast"}],
                            "ports": [{"containerPort": 8080}],
                        },
                        {"name": "sidecar", "image": "registry.local/proxy:2.0"},
                    ]
                },
            },
        },
    }


class Patcher:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def send(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        headers = {"Content-Type": content_type}
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def patch(self, name: str, body: Any, content_type: str) -> tuple[int, Any]:
        return await self.send("PATCH", f"{DEPLOYMENTS}/{name}", body, content_type)


@pytest.fixture
async def api(kubesim: KubeSim) -> AsyncIterator[Patcher]:
    async with aiohttp.ClientSession() as session:
        client = Patcher(session, kubesim.url)
        status, _ = await client.send("POST", DEPLOYMENTS, deployment("web"))
        assert status == 201
        yield client


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


async def test_strategic_merge_updates_one_container_by_name(api: Patcher) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:2.0"}]}}}}
    status, patched = await api.patch("web", body, STRATEGIC)
    assert status == 200
    assert [(c["name"], c["image"]) for c in containers(patched)] == [
        ("main", "web:2.0"),
        ("sidecar", "registry.local/proxy:2.0"),
    ]
    assert containers(patched)[0]["env"] == [{"name": "MODE", "value": "fast"}]
    assert patched["metadata"]["generation"] == 2


async def test_strategic_merge_merges_env_by_name_and_honours_delete_directive(
    api: Patcher,
) -> None:
    body = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "main", "env": [{"name": "EXTRA", "value": "1"}]},
                        {"name": "sidecar", "$patch": "delete"},
                    ]
                }
            }
        }
    }
    status, patched = await api.patch("web", body, STRATEGIC)
    assert status == 200
    assert [c["name"] for c in containers(patched)] == ["main"]
    assert containers(patched)[0]["env"] == [
        {"name": "MODE", "value": "fast"},
        {"name": "EXTRA", "value": "1"},
    ]


async def test_strategic_merge_replace_directive_and_element_order_are_accepted(
    api: Patcher,
) -> None:
    body = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "main"}],
                    "containers": [{"name": "main", "ports": [{"containerPort": 9090}]}],
                }
            }
        }
    }
    status, patched = await api.patch("web", body, STRATEGIC)
    assert status == 200
    assert [c["name"] for c in containers(patched)] == ["sidecar", "main"]
    ports = containers(patched)[1]["ports"]
    assert [p["containerPort"] for p in ports] == [8080, 9090]
    replace = {"metadata": {"annotations": {"$patch": "replace", "fresh": "yes"}}}
    status, patched = await api.patch("web", replace, STRATEGIC)
    assert status == 200
    # The controller may add its revision annotation back; "owner" must be gone.
    assert patched["metadata"]["annotations"]["fresh"] == "yes"
    assert "owner" not in patched["metadata"]["annotations"]


async def test_merge_patch_replaces_lists_and_null_deletes(api: Patcher) -> None:
    body = {
        "metadata": {"annotations": {"owner": None, "rollbackd.io/enabled": "false"}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}},
    }
    status, patched = await api.patch("web", body, MERGE)
    assert status == 200
    annotations = patched["metadata"]["annotations"]
    assert "owner" not in annotations
    assert annotations["rollbackd.io/enabled"] == "false"
    assert [c["name"] for c in containers(patched)] == ["only"]


async def test_json_patch_with_a_passing_test_applies(api: Patcher) -> None:
    ops = [
        {
            "op": "test",
            "path": "/spec/template/spec/containers/0/image",
            "value": "registry.local/web:1.0",
        },
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:0.9"},
    ]
    status, patched = await api.patch("web", ops, JSON_PATCH)
    assert status == 200
    assert containers(patched)[0]["image"] == "web:0.9"


async def test_json_patch_with_a_failing_test_is_422_and_changes_nothing(api: Patcher) -> None:
    _, before = await api.send("GET", f"{DEPLOYMENTS}/web")
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 9},
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "not-this"},
    ]
    status, body = await api.patch("web", ops, JSON_PATCH)
    assert status == 422
    assert body["reason"] == "Invalid"
    _, after = await api.send("GET", f"{DEPLOYMENTS}/web")
    assert after["spec"] == before["spec"]  # status is the controller's to change


async def test_malformed_json_patch_document_is_400(api: Patcher) -> None:
    for document in ([{"op": "frobnicate", "path": "/spec"}], {"op": "add"}):
        status, body = await api.patch("web", document, JSON_PATCH)
        assert status == 400, document
        assert body["reason"] == "BadRequest"
    status, body = await api.patch("web", b"[{not json", JSON_PATCH)
    assert status == 400


async def test_patch_that_breaks_validation_is_422_and_changes_nothing(api: Patcher) -> None:
    _, before = await api.send("GET", f"{DEPLOYMENTS}/web")
    body = {"spec": {"template": {"metadata": {"labels": {"app": "elsewhere"}}}}}
    status, error = await api.patch("web", body, MERGE)
    assert status == 422
    assert error["reason"] == "Invalid"
    _, after = await api.send("GET", f"{DEPLOYMENTS}/web")
    assert after["spec"] == before["spec"]  # status is the controller's to change


async def test_unsupported_patch_content_type_is_415(api: Patcher) -> None:
    status, body = await api.patch("web", {"spec": {}}, "text/plain")
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"


async def test_strategic_merge_on_a_custom_resource_is_415(api: Patcher) -> None:
    path = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/default/helmreleases"
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "shop"},
        "spec": {"suspend": False},
    }
    await api.send("POST", path, release)
    status, body = await api.send("PATCH", f"{path}/shop", {"spec": {"suspend": True}}, STRATEGIC)
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"
    status, patched = await api.send("PATCH", f"{path}/shop", {"spec": {"suspend": True}}, MERGE)
    assert status == 200
    assert patched["spec"]["suspend"] is True


async def test_patch_of_a_missing_object_is_404(api: Patcher) -> None:
    status, body = await api.patch("ghost", {"spec": {}}, MERGE)
    assert status == 404
    assert body["message"] == 'deployments.apps "ghost" not found'


async def test_patch_with_stale_resource_version_is_409(api: Patcher) -> None:
    body = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}}
    status, error = await api.patch("web", body, MERGE)
    assert status == 409
    assert error["reason"] == "Conflict"


async def test_dry_run_patch_answers_the_result_without_storing(api: Patcher) -> None:
    status, preview = await api.send(
        "PATCH", f"{DEPLOYMENTS}/web?dryRun=All", {"spec": {"replicas": 6}}, MERGE
    )
    assert status == 200
    assert preview["spec"]["replicas"] == 6
    _, current = await api.send("GET", f"{DEPLOYMENTS}/web")
    assert current["spec"]["replicas"] == 1


async def test_scale_subresource_accepts_patches(api: Patcher) -> None:
    status, scale = await api.send(
        "PATCH", f"{DEPLOYMENTS}/web/scale", {"spec": {"replicas": 3}}, MERGE
    )
    assert status == 200
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    _, current = await api.send("GET", f"{DEPLOYMENTS}/web")
    assert current["spec"]["replicas"] == 3


async def test_status_patch_changes_only_status(api: Patcher) -> None:
    # A custom resource: no controller rewrites its status behind the test's back.
    path = "/apis/argoproj.io/v1alpha1/namespaces/default/applications"
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop"},
        "spec": {"project": "default"},
    }
    await api.send("POST", path, app)
    body = {"spec": {"project": "other"}, "status": {"sync": {"status": "Synced"}}}
    status, patched = await api.send("PATCH", f"{path}/shop/status", body, MERGE)
    assert status == 200
    assert patched["status"] == {"sync": {"status": "Synced"}}
    assert patched["spec"] == {"project": "default"}
    body = {"spec": {"project": "other"}, "status": {"sync": {"status": "OutOfSync"}}}
    status, patched = await api.send("PATCH", f"{path}/shop", body, MERGE)
    assert status == 200
    assert patched["status"] == {"sync": {"status": "Synced"}}
    assert patched["spec"] == {"project": "other"}


async def test_server_side_apply_is_approximated_by_a_merge_that_can_create(api: Patcher) -> None:
    applied = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"a": "1"},
    }
    path = "/api/v1/namespaces/default/configmaps/settings"
    status, _ = await api.send("PATCH", path, applied, "application/apply-patch+yaml")
    assert status == 400  # fieldManager is required, as upstream
    status, created = await api.send(
        "PATCH", f"{path}?fieldManager=test", applied, "application/apply-patch+yaml"
    )
    assert status == 201
    assert created["data"] == {"a": "1"}
