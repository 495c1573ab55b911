"""Gateway API HTTPRoutes through the real kubectl: discovery, get, patch, watch, the CRD's schema, status."""

from __future__ import annotations

import json
import pathlib

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim import KubeSim

from .crd_helpers import (
    HTTPROUTES,
    KubectlWatch,
    create,
    route_manifest,
    service_manifest,
    wait_for,
)
from .kubectl_helpers import Kubectl, make_kubectl

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    return await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")


def weights(route: dict) -> dict[str, int]:
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def condition(route: dict, cond_type: str) -> dict:
    [parent] = route["status"]["parents"]
    return next(c for c in parent["conditions"] if c["type"] == cond_type)


async def test_get_shows_hostnames_and_defaults_and_json_patch_moves_weight(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    for name in ("web-stable", "web-canary"):
        await create(kubectl, tmp_path, service_manifest(name, name))
    await create(kubectl, tmp_path, route_manifest("web", [("web-stable", 90), ("web-canary", 10)]))

    table = (await kubectl.run("get", "httproutes")).stdout
    assert table.split()[:3] == ["NAME", "HOSTNAMES", "AGE"]
    assert '["shop.example.com"]' in table
    route = await kubectl.json("get", "httproute", "web")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    # The CRD's defaults: core Service backends, a Gateway parent in the Gateway API group.
    [ref, _] = route["spec"]["rules"][0]["backendRefs"]
    assert (ref["group"], ref["kind"]) == ("", "Service")
    assert route["spec"]["parentRefs"][0]["kind"] == "Gateway"

    await kubectl.run(
        "patch",
        "httproute",
        "web",
        "--type=json",
        "-p",
        json.dumps(
            [
                {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
            ]
        ),
    )
    patched = await kubectl.json("get", "httproute", "web")
    assert weights(patched) == {"web-stable": 100, "web-canary": 0}
    assert patched["metadata"]["generation"] == 2
    # The gateway controller's status: accepted, every backend resolved, this generation seen.
    await wait_for(
        lambda: kubectl.json("get", "httproute", "web"),
        lambda r: condition(r, "ResolvedRefs")["observedGeneration"] == 2,
    )
    assert condition(patched, "Accepted")["status"] == "True"
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def test_watch_sees_the_weight_change(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    await create(kubectl, tmp_path, route_manifest("web", [("a", 50), ("b", 50)]))
    async with KubectlWatch(kubectl, "get", "httproute", "web", "--watch", "-o", "json") as watch:
        first = await watch.next_object()
        assert weights(first) == {"a": 50, "b": 50}
        await kubectl.run(
            "patch",
            "httproute",
            "web",
            "--type=json",
            "-p",
            '[{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":0}]',
        )
        seen = [await watch.next_object()]
        while weights(seen[-1]) != {"a": 50, "b": 0}:
            seen.append(await watch.next_object())
    assert int(seen[-1]["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


async def test_a_stale_resource_version_is_a_conflict_and_changes_nothing(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, route_manifest("web", [("a", 90), ("b", 10)]))
    stale = await kubectl.json("get", "httproute", "web")
    await kubectl.run("annotate", "httproute", "web", "team=shop")  # someone else writes first
    stale["spec"]["rules"][0]["backendRefs"][1]["weight"] = 0
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(stale))
    result = await kubectl.run("replace", "-f", str(path), check=False)
    assert result.returncode != 0
    assert "the object has been modified" in result.stderr
    # A JSON patch carrying the stale resourceVersion is refused the same way.
    result = await kubectl.run(
        "patch",
        "httproute",
        "web",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/metadata/resourceVersion",
                    "value": stale["metadata"]["resourceVersion"],
                },
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
            ]
        ),
        check=False,
    )
    assert result.returncode != 0
    assert "the object has been modified" in result.stderr
    assert weights(await kubectl.json("get", "httproute", "web")) == {"a": 90, "b": 10}


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (
            -1,
            "spec.rules[0].backendRefs[0].weight: Invalid value: -1: spec.rules[0].backendRefs[0]"
            ".weight in body should be greater than or equal to 0",
        ),
        (
            1_000_001,
            "spec.rules[0].backendRefs[0].weight in body should be less than or equal to 1000000",
        ),
        (
            "heavy",
            'spec.rules[0].backendRefs[0].weight: Invalid value: "string": spec.rules[0]'
            '.backendRefs[0].weight in body must be of type integer: "string"',
        ),
    ],
)
async def test_weights_the_crd_refuses_are_422_with_the_field_path(
    kubectl: Kubectl, tmp_path: pathlib.Path, weight: object, expected: str
) -> None:
    result = await kubectl.run(
        "create", "-f", "-", stdin=json.dumps(route_manifest("web", [("a", weight)])), check=False
    )
    assert result.returncode != 0
    assert 'The HTTPRoute "web" is invalid' in result.stderr
    assert expected in result.stderr
    assert (await kubectl.run("get", "httproutes", "-o", "name")).stdout == ""


async def test_a_service_backend_without_port_and_a_patch_to_a_negative_weight_are_refused(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    manifest = route_manifest("web", [("a", 1)])
    del manifest["spec"]["rules"][0]["backendRefs"][0]["port"]
    result = await kubectl.run("create", "-f", "-", stdin=json.dumps(manifest), check=False)
    assert "Must have port for Service reference" in result.stderr

    await create(kubectl, tmp_path, route_manifest("web", [("a", 3), ("b", 1)]))
    result = await kubectl.run(
        "patch",
        "httproute",
        "web",
        "--type=merge",
        "-p",
        json.dumps(
            {"spec": {"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": -5}]}]}}
        ),
        check=False,
    )
    assert result.returncode != 0
    assert "should be greater than or equal to 0" in result.stderr
    assert weights(await kubectl.json("get", "httproute", "web")) == {"a": 3, "b": 1}


async def test_a_missing_service_is_accepted_and_reported_until_it_exists(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, route_manifest("web", [("web-stable", 0), ("ghost", 0)]))
    await create(kubectl, tmp_path, service_manifest("web-stable", "web"))

    async def route() -> dict:
        return dict(await kubectl.json("get", "httproute", "web"))

    missing = await wait_for(route, lambda r: "status" in r)
    resolved = condition(missing, "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert resolved["message"] == 'Service "ghost" not found'
    assert condition(missing, "Accepted")["status"] == "True"  # all-zero weights are valid

    await create(kubectl, tmp_path, service_manifest("ghost", "ghost"))
    found = await wait_for(route, lambda r: condition(r, "ResolvedRefs")["status"] == "True")
    assert condition(found, "ResolvedRefs")["reason"] == "ResolvedRefs"
    assert kubesim.store.peek(HTTPROUTES, "default", "web") is not None
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def test_discovery_lists_both_custom_resources(kubectl: Kubectl) -> None:
    routes = (await kubectl.run("api-resources", "--api-group=gateway.networking.k8s.io")).stdout
    assert routes.splitlines()[1].split() == [
        "httproutes",
        "gateway.networking.k8s.io/v1",
        "true",
        "HTTPRoute",
    ]
    rollouts = (await kubectl.run("api-resources", "--api-group=argoproj.io")).stdout
    assert ["rollouts", "ro", "argoproj.io/v1alpha1", "true", "Rollout"] in [
        line.split() for line in rollouts.splitlines()
    ]
