"""kubesim's Services for blue-green: managedFields date the selector switch; traffic follows it.

managedFields follow the real API server's rule for an Update entry's
``time``: it moves when that manager changes a field; a field changed by
another manager changes owner. The workload metrics serve only the colour a
blue-green Service selects, so a real Prometheus sees the switch.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from kubernetes_asyncio import client, config

from rollbackd.bluegreen import switch_record
from rollbackd.testing.kubesim import KubeSim

from .kubectl_helpers import make_kubectl

NS = "default"


@pytest_asyncio.fixture
async def core(kubesim: KubeSim) -> AsyncIterator[client.CoreV1Api]:
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with api:
        yield client.CoreV1Api(api)


def service(colour: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "checkout", "annotations": {"rollbackd.io/strategy": "blue-green"}},
        "spec": {"selector": {"app": "checkout", "version": colour}, "ports": [{"port": 80}]},
    }


async def patch(core: client.CoreV1Api, ops: list[dict[str, Any]], manager: str) -> Any:
    return await core.patch_namespaced_service(
        "checkout", NS, ops, field_manager=manager, _content_type="application/json-patch+json"
    )


def raw(kubesim: KubeSim) -> dict[str, Any]:
    found = kubesim.store.peek("v1/services", NS, "checkout")
    assert found is not None
    return found


async def test_the_selector_switch_is_dated_and_owned_by_the_manager_that_made_it(
    kubesim: KubeSim, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_service(NS, service("blue"), field_manager="helm")
    created_at, owner = switch_record(raw(kubesim))
    assert owner == "helm" and created_at is not None

    await asyncio.sleep(1.1)  # managedFields times have second precision
    switch = [{"op": "replace", "path": "/spec/selector/version", "value": "green"}]
    await patch(core, switch, "kubectl-patch")
    switched_at, owner = switch_record(raw(kubesim))
    assert owner == "kubectl-patch"
    assert switched_at is not None and switched_at > created_at
    managers = {e["manager"]: e for e in raw(kubesim)["metadata"]["managedFields"]}
    assert "f:selector" not in managers["helm"]["fieldsV1"].get("f:spec", {})

    # Another manager's annotation does not move the switch's time...
    await asyncio.sleep(1.1)
    note = [{"op": "add", "path": "/metadata/annotations/note", "value": "x"}]
    await patch(core, note, "kubectl-annotate")
    assert switch_record(raw(kubesim)) == (switched_at, "kubectl-patch")
    # ...and a write that changes nothing moves nothing.
    await patch(core, switch, "kubectl-patch")
    assert switch_record(raw(kubesim)) == (switched_at, "kubectl-patch")


async def test_a_client_without_field_manager_is_named_by_its_user_agent(
    kubesim: KubeSim, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_service(NS, service("blue"))
    _, owner = switch_record(raw(kubesim))
    assert owner == "OpenAPI-Generator"  # the client's User-Agent up to its first /


async def test_only_the_selected_colour_serves_traffic_and_a_switch_moves_it(
    kubesim: KubeSim, core: client.CoreV1Api
) -> None:
    apps = client.AppsV1Api(core.api_client)
    for name in ("blue", "green"):
        labels = {"app": "checkout", "version": name}
        await apps.create_namespaced_deployment(
            NS,
            {
                "metadata": {"name": f"checkout-{name}"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "app", "image": "checkout:1"}]},
                    },
                },
            },
        )
    await core.create_namespaced_service(NS, service("blue"))
    workload = kubesim.workload
    assert workload is not None

    def ready_pods() -> int:
        pods = kubesim.store.list("v1/pods", NS)
        return sum(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
            for p in pods
            if p.get("status", {}).get("conditions")
        )

    async with asyncio.timeout(20):
        while ready_pods() < 2:  # noqa: ASYNC110  (the store has no change event)
            await asyncio.sleep(0.05)
    metrics = workload.render()
    assert 'deployment="checkout-blue"' in metrics
    assert 'deployment="checkout-green"' not in metrics  # Ready, but idle

    switch = [{"op": "replace", "path": "/spec/selector/version", "value": "green"}]
    await patch(core, switch, "kubectl-patch")
    metrics = workload.render()
    assert 'deployment="checkout-green"' in metrics
    assert 'deployment="checkout-blue"' not in metrics


async def test_the_real_kubectl_patch_is_recorded_as_the_switch_and_shown_to_users(
    kubesim: KubeSim, core: client.CoreV1Api, tmp_path: pathlib.Path
) -> None:
    kubectl = await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")
    await core.create_namespaced_service(NS, service("blue"), field_manager="helm")
    await kubectl.run(
        "patch", "service", "checkout", "-p", '{"spec":{"selector":{"version":"green"}}}'
    )
    _, owner = switch_record(raw(kubesim))
    assert owner == "kubectl-patch"  # kubectl sends its own field manager
    # What the operations doc tells users to look at.
    shown = await kubectl.json("get", "service", "checkout", "--show-managed-fields")
    owners = [
        e["manager"]
        for e in shown["metadata"]["managedFields"]
        if "f:selector" in e.get("fieldsV1", {}).get("f:spec", {})
    ]
    assert owners == ["kubectl-patch"]
