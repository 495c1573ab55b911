"""PodDisruptionBudgets (applied and read with the real kubectl) and the Eviction API a drain calls."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.testing.kubesim import KubeSim

from .kubectl_helpers import Kubectl, deployment_manifest, make_kubectl

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    return await make_kubectl(kubesim.kubeconfig, tmp_path / "kubectl-cache")


def budget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, **spec},
    }


async def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    documents = "\n---\n".join(json.dumps(obj) for obj in objects)
    await kubectl.run("apply", "-f", "-", stdin=documents)


async def allowed(kubectl: Kubectl, name: str, want: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pdb = await kubectl.json("get", "pdb", name)
        status = pdb.get("status") or {}
        if status.get("disruptionsAllowed") == want:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"disruptionsAllowed never became {want}: {status}")
        await asyncio.sleep(0.1)


async def pods(kubectl: Kubectl, app: str) -> list[str]:
    listing = await kubectl.json("get", "pods", "-l", f"app={app}")
    return sorted(p["metadata"]["name"] for p in listing["items"])


@pytest_asyncio.fixture
async def core(kubesim: KubeSim) -> AsyncIterator[client.CoreV1Api]:
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with api:
        yield client.CoreV1Api(api)


async def evict(core: client.CoreV1Api, pod: str) -> tuple[int, str]:
    """What a drain does for each pod (client-go's eviction call); 0 when evicted."""
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace="default"),
    )
    try:
        await core.create_namespaced_pod_eviction(pod, "default", eviction)
    except ApiException as exc:
        return exc.status, str(exc.body)
    return 0, ""


async def test_max_unavailable_one_of_two_ready_allows_one_eviction_at_a_time(
    kubectl: Kubectl, core: client.CoreV1Api
) -> None:
    await apply(kubectl, deployment_manifest("web", replicas=2), budget("web", maxUnavailable=1))
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=20s")
    status = await allowed(kubectl, "web", 1)
    assert status["expectedPods"] == 2
    assert status["currentHealthy"] == 2 and status["desiredHealthy"] == 1
    shown = await kubectl.run("get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}")
    assert shown.stdout == "1"

    first, second = await pods(kubectl, "web")
    code, output = await evict(core, first)
    assert code == 0, output
    # At once the budget is spent: the replacement is not ready yet.
    code, output = await evict(core, second)
    assert code == 429
    assert "Cannot evict pod as it would violate the pod's disruption budget" in output
    # Once the replacement is ready, the next eviction (the rest of a drain) goes through.
    await allowed(kubectl, "web", 1)
    code, output = await evict(core, second)
    assert code == 0, output


async def test_a_budget_that_needs_every_pod_blocks_a_drain(
    kubectl: Kubectl, core: client.CoreV1Api
) -> None:
    await apply(kubectl, deployment_manifest("db", replicas=2), budget("db", minAvailable=2))
    await kubectl.run("rollout", "status", "deployment/db", "--timeout=20s")
    status = await allowed(kubectl, "db", 0)
    assert status["desiredHealthy"] == 2
    code, output = await evict(core, (await pods(kubectl, "db"))[0])
    assert code == 429 and "disruption budget db needs 2 healthy pods" in output
    assert len(await pods(kubectl, "db")) == 2


async def test_an_unready_replica_spends_the_budget(kubectl: Kubectl) -> None:
    never_ready = {"kubesim.rollbackd.io/ready": "false"}
    await apply(
        kubectl,
        deployment_manifest("api", replicas=2, template_annotations=never_ready),
        budget("api", maxUnavailable=1),
    )
    status = await allowed(kubectl, "api", 0)
    assert status["currentHealthy"] == 0 and status["expectedPods"] == 2
