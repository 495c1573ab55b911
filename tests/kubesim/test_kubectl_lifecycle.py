"""kubectl pause/resume, scale, restart and expose against kubesim, as against a cluster."""

from __future__ import annotations

import json
import pathlib

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim import KubeSim

from .kubectl_helpers import Kubectl, deployment_manifest, make_kubectl, revision

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    kubectl = await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")
    path = tmp_path / "web.json"
    path.write_text(json.dumps(deployment_manifest(replicas=2)))
    await kubectl.run("create", "-f", str(path))
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s")
    return kubectl


async def test_paused_deployment_holds_the_rollout_and_refuses_undo(kubectl: Kubectl) -> None:
    await kubectl.run("set", "image", "deployment/web", "app=example/app:2.0")
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s")
    await kubectl.run("rollout", "pause", "deployment/web")
    await kubectl.run("set", "image", "deployment/web", "app=example/app:3.0")
    described = (await kubectl.run("describe", "deployment", "web")).stdout
    assert "Progressing    Unknown  DeploymentPaused" in described
    assert len((await kubectl.json("get", "rs"))["items"]) == 2

    undo = await kubectl.run("rollout", "undo", "deployment/web", check=False)
    assert undo.returncode != 0
    assert "you cannot rollback a paused deployment" in undo.stderr

    await kubectl.run("rollout", "resume", "deployment/web")
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s")
    images = {
        pod["spec"]["containers"][0]["image"]
        for pod in (await kubectl.json("get", "pods"))["items"]
    }
    assert images == {"example/app:3.0"}


async def test_scale_and_expose_give_endpoints_for_every_ready_pod(kubectl: Kubectl) -> None:
    await kubectl.run("scale", "deployment/web", "--replicas=4")
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s")
    await kubectl.run("expose", "deployment/web", "--port=80", "--target-port=8080")
    pods = {pod["metadata"]["name"] for pod in (await kubectl.json("get", "pods"))["items"]}
    assert len(pods) == 4
    endpoints = await kubectl.json("get", "endpoints", "web")
    [subset] = endpoints["subsets"]
    assert {address["targetRef"]["name"] for address in subset["addresses"]} == pods
    assert subset["ports"] == [{"port": 8080, "protocol": "TCP"}]
    # Scaling does not start a new revision.
    assert revision(await kubectl.json("get", "deployment/web")) == "1"


async def test_rollout_restart_is_a_new_revision_with_the_same_image(kubectl: Kubectl) -> None:
    await kubectl.run("rollout", "restart", "deployment/web")
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s")
    sets = {revision(rs): rs for rs in (await kubectl.json("get", "rs"))["items"]}
    assert sorted(sets) == ["1", "2"]
    template = sets["2"]["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    assert template["spec"]["containers"][0]["image"] == "example/app:1.0"
    assert sets["1"]["spec"]["replicas"] == 0
