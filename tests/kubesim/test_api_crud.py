"""Create, read, replace and delete over raw HTTP, checked against real API server behaviour."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def deployment(name: str, image: str = "registry.local/web:1.0", **labels: str) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


class Api:
    """A tiny raw-HTTP client that returns (status, decoded body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def api(kubesim: KubeSim) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, kubesim.url)


async def test_create_sets_server_metadata_and_deployment_defaults(api: Api) -> None:
    status, created = await api.call("POST", DEPLOYMENTS, deployment("web"))
    assert status == 201
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"] and meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert "managedFields" not in meta
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"


async def test_resource_versions_come_from_one_increasing_counter(api: Api) -> None:
    _, first = await api.call("POST", CONFIGMAPS, {"metadata": {"name": "a"}, "data": {}})
    _, second = await api.call("POST", DEPLOYMENTS, deployment("b"))
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


async def test_create_of_an_existing_name_is_409_already_exists(api: Api) -> None:
    await api.call("POST", CONFIGMAPS, {"metadata": {"name": "dup"}})
    status, body = await api.call("POST", CONFIGMAPS, {"metadata": {"name": "dup"}})
    assert status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"] == {"name": "dup", "kind": "configmaps"}


async def test_generate_name_gets_a_random_suffix(api: Api) -> None:
    status, body = await api.call("POST", CONFIGMAPS, {"metadata": {"generateName": "job-"}})
    assert status == 201
    assert body["metadata"]["name"].startswith("job-")
    assert len(body["metadata"]["name"]) == len("job-") + 5


async def test_selector_not_matching_template_labels_is_422_invalid(api: Api) -> None:
    bad = deployment("web")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    status, body = await api.call("POST", DEPLOYMENTS, bad)
    assert status == 422
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Deployment"
    fields = [cause["field"] for cause in body["details"]["causes"]]
    assert "spec.template.metadata.labels" in fields
    status, _ = await api.call("GET", f"{DEPLOYMENTS}/web")
    assert status == 404  # nothing was stored


async def test_missing_name_is_422_and_name_differing_from_url_is_400(api: Api) -> None:
    status, body = await api.call("POST", CONFIGMAPS, {"metadata": {}})
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    await api.call("POST", CONFIGMAPS, {"metadata": {"name": "real"}})
    status, body = await api.call("PUT", f"{CONFIGMAPS}/real", {"metadata": {"name": "other"}})
    assert status == 400
    assert body["reason"] == "BadRequest"


async def test_malformed_json_is_400_and_stores_nothing(api: Api) -> None:
    status, body = await api.call("POST", CONFIGMAPS, raw=b'{"metadata": {"name": ')
    assert status == 400
    assert body["kind"] == "Status"
    assert body["reason"] == "BadRequest"
    _, listing = await api.call("GET", CONFIGMAPS)
    assert listing["items"] == []


async def test_namespace_in_body_must_match_the_url(api: Api) -> None:
    status, body = await api.call(
        "POST", CONFIGMAPS, {"metadata": {"name": "x", "namespace": "kube-system"}}
    )
    assert status == 400
    assert "namespace" in body["message"]


async def test_create_in_a_missing_namespace_is_404(api: Api) -> None:
    status, body = await api.call(
        "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}}
    )
    assert status == 404
    assert body["message"] == 'namespaces "nowhere" not found'


async def test_get_of_a_missing_object_is_a_not_found_status(api: Api) -> None:
    status, body = await api.call("GET", f"{DEPLOYMENTS}/absent")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "absent" not found',
        "reason": "NotFound",
        "details": {"name": "absent", "group": "apps", "kind": "deployments"},
        "code": 404,
    }


# Applications: a kind with spec, generation and a status subresource that no
# controller touches, so every change in these tests is the test's own.
APPLICATIONS = "/apis/argoproj.io/v1alpha1/namespaces/default/applications"


def application(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {"project": "default", "replicas": 1},
    }


async def test_replace_with_a_stale_resource_version_is_409_conflict(api: Api) -> None:
    _, created = await api.call("POST", APPLICATIONS, application("web"))
    first = json.loads(json.dumps(created))
    first["spec"]["replicas"] = 2
    status, updated = await api.call("PUT", f"{APPLICATIONS}/web", first)
    assert status == 200
    assert updated["metadata"]["generation"] == 2
    stale = json.loads(json.dumps(created))
    stale["spec"]["replicas"] = 5
    status, body = await api.call("PUT", f"{APPLICATIONS}/web", stale)
    assert status == 409
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on applications.argoproj.io "web": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    _, current = await api.call("GET", f"{APPLICATIONS}/web")
    assert current["spec"]["replicas"] == 2


async def test_generation_moves_only_when_spec_changes(api: Api) -> None:
    _, created = await api.call("POST", APPLICATIONS, application("web"))
    labelled = json.loads(json.dumps(created))
    labelled["metadata"]["labels"] = {"team": "sre"}
    _, updated = await api.call("PUT", f"{APPLICATIONS}/web", labelled)
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]


async def test_unchanged_replace_does_not_bump_the_resource_version(api: Api) -> None:
    _, created = await api.call(
        "POST", CONFIGMAPS, {"metadata": {"name": "same"}, "data": {"a": "1"}}
    )
    _, again = await api.call("PUT", f"{CONFIGMAPS}/same", created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_replace_of_a_missing_object_is_404(api: Api) -> None:
    status, body = await api.call("PUT", f"{CONFIGMAPS}/ghost", {"metadata": {"name": "ghost"}})
    assert status == 404
    assert body["reason"] == "NotFound"


async def test_plain_update_ignores_status_and_status_subresource_ignores_spec(api: Api) -> None:
    _, created = await api.call("POST", APPLICATIONS, application("web"))
    sneaky = json.loads(json.dumps(created))
    sneaky["status"] = {"health": "Degraded"}
    _, after_main = await api.call("PUT", f"{APPLICATIONS}/web", sneaky)
    assert "status" not in after_main
    status_write = json.loads(json.dumps(after_main))
    status_write["status"] = {"health": "Healthy"}
    status_write["spec"]["replicas"] = 9
    status, after_status = await api.call("PUT", f"{APPLICATIONS}/web/status", status_write)
    assert status == 200
    assert after_status["status"] == {"health": "Healthy"}
    assert after_status["spec"]["replicas"] == 1


async def test_scale_subresource_reads_and_writes_spec_replicas(api: Api) -> None:
    await api.call("POST", DEPLOYMENTS, deployment("web"))
    status, scale = await api.call("GET", f"{DEPLOYMENTS}/web/scale")
    assert status == 200
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"] == "app=web"
    scale["spec"]["replicas"] = 4
    # No precondition: the controller may write the Deployment between GET and PUT.
    del scale["metadata"]["resourceVersion"]
    status, written = await api.call("PUT", f"{DEPLOYMENTS}/web/scale", scale)
    assert status == 200 and written["spec"]["replicas"] == 4
    _, current = await api.call("GET", f"{DEPLOYMENTS}/web")
    assert current["spec"]["replicas"] == 4


async def test_dry_run_validates_and_answers_without_storing(api: Api) -> None:
    status, body = await api.call("POST", f"{DEPLOYMENTS}?dryRun=All", deployment("web"))
    assert status == 201
    assert body["metadata"]["name"] == "web"
    status, _ = await api.call("GET", f"{DEPLOYMENTS}/web")
    assert status == 404
    bad = deployment("bad")
    bad["spec"]["selector"] = {"matchLabels": {"app": "nope"}}
    status, _ = await api.call("POST", f"{DEPLOYMENTS}?dryRun=All", bad)
    assert status == 422
    _, created = await api.call("POST", CONFIGMAPS, {"metadata": {"name": "keep"}})
    status, _ = await api.call("DELETE", f"{CONFIGMAPS}/keep?dryRun=All")
    assert status == 200
    status, kept = await api.call("GET", f"{CONFIGMAPS}/keep")
    assert status == 200 and kept["metadata"]["uid"] == created["metadata"]["uid"]
    status, _ = await api.call("POST", f"{CONFIGMAPS}?dryRun=Some", {"metadata": {"name": "x"}})
    assert status == 400


def owned_by(owner: dict[str, Any], name: str) -> dict[str, Any]:
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


async def test_delete_garbage_collects_dependents_recursively(api: Api) -> None:
    _, root = await api.call("POST", CONFIGMAPS, {"metadata": {"name": "root"}})
    _, child = await api.call("POST", CONFIGMAPS, owned_by(root, "child"))
    await api.call("POST", CONFIGMAPS, owned_by(child, "grandchild"))
    await api.call("POST", CONFIGMAPS, {"metadata": {"name": "unrelated"}})
    status, body = await api.call("DELETE", f"{CONFIGMAPS}/root")
    assert status == 200
    assert body["status"] == "Success"
    assert body["details"]["name"] == "root"
    _, listing = await api.call("GET", CONFIGMAPS)
    assert [item["metadata"]["name"] for item in listing["items"]] == ["unrelated"]


async def test_orphan_propagation_keeps_dependents_without_the_owner_reference(api: Api) -> None:
    _, root = await api.call("POST", CONFIGMAPS, {"metadata": {"name": "root"}})
    await api.call("POST", CONFIGMAPS, owned_by(root, "child"))
    status, _ = await api.call(
        "DELETE", f"{CONFIGMAPS}/root", {"kind": "DeleteOptions", "propagationPolicy": "Orphan"}
    )
    assert status == 200
    status, child = await api.call("GET", f"{CONFIGMAPS}/child")
    assert status == 200
    assert "ownerReferences" not in child["metadata"]


async def test_delete_of_a_missing_object_is_404(api: Api) -> None:
    status, body = await api.call("DELETE", f"{DEPLOYMENTS}/ghost")
    assert status == 404
    assert body["message"] == 'deployments.apps "ghost" not found'


async def test_custom_resources_are_stored_as_given(api: Api) -> None:
    path = "/apis/argoproj.io/v1alpha1/namespaces/default/applications"
    app = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop"},
        "spec": {"syncPolicy": {"automated": {"prune": True}}},
    }
    status, created = await api.call("POST", path, app)
    assert status == 201
    assert created["spec"] == app["spec"]
    status, read = await api.call("GET", f"{path}/shop")
    assert status == 200 and read["metadata"]["uid"] == created["metadata"]["uid"]


async def test_namespaces_are_cluster_scoped_and_start_with_default_and_kube_system(
    api: Api,
) -> None:
    status, listing = await api.call("GET", "/api/v1/namespaces")
    assert status == 200
    names = {item["metadata"]["name"] for item in listing["items"]}
    assert {"default", "kube-system"} <= names
    status, created = await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "team-a"}})
    assert status == 201
    assert created["status"]["phase"] == "Active"
    assert "namespace" not in created["metadata"]
