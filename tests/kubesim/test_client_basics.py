"""kubesim driven by kubernetes-asyncio, the client rollbackd uses against real clusters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.testing.kubesim import KubeSim

NS = "default"
DEADLINE = 10.0


@pytest.fixture
async def api_client(kubesim: KubeSim) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubesim.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration=configuration) as api:
        yield api


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after DEADLINE seconds."""

    async def poll() -> None:
        while True:  # polling with a deadline: the state lives in another component
            if await check():
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), DEADLINE)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


def deployment(name: str, image: str = "registry.local/web:1.0") -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=image)]),
            ),
        ),
    )


async def test_create_read_and_list_typed_objects(api_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_deployment(NS, deployment("web"))
    assert created.metadata.uid
    assert created.spec.strategy.type == "RollingUpdate"
    read = await apps.read_namespaced_deployment("web", NS)
    assert read.metadata.uid == created.metadata.uid
    listing = await apps.list_deployment_for_all_namespaces()
    assert [item.metadata.name for item in listing.items] == ["web"]
    assert listing.metadata.resource_version


async def test_missing_object_raises_api_exception_with_a_not_found_status(
    api_client: client.ApiClient,
) -> None:
    apps = client.AppsV1Api(api_client)
    with pytest.raises(ApiException) as raised:
        await apps.read_namespaced_deployment("absent", NS)
    assert raised.value.status == 404
    status = json.loads(raised.value.body)
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["details"]["name"] == "absent"


async def test_stale_replace_raises_409_conflict(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    created = await core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"})
    )
    created.data = {"a": "2"}
    await core.replace_namespaced_config_map("cfg", NS, created)
    created.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as raised:
        await core.replace_namespaced_config_map("cfg", NS, created)
    assert raised.value.status == 409
    assert json.loads(raised.value.body)["reason"] == "Conflict"
    current = await core.read_namespaced_config_map("cfg", NS)
    assert current.data == {"a": "2"}


async def test_all_three_patch_types(api_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(NS, deployment("web"))
    strategic = {
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:2"}]}}}
    }
    patched = await apps.patch_namespaced_deployment("web", NS, strategic)
    assert patched.spec.template.spec.containers[0].image == "web:2"
    merge = {"metadata": {"annotations": {"rollbackd.io/enabled": "false"}}}
    patched = await apps.patch_namespaced_deployment(
        "web", NS, merge, _content_type="application/merge-patch+json"
    )
    assert patched.metadata.annotations["rollbackd.io/enabled"] == "false"
    ops = [
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "web:2"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:1"},
    ]
    patched = await apps.patch_namespaced_deployment("web", NS, ops)
    assert patched.spec.template.spec.containers[0].image == "web:1"
    with pytest.raises(ApiException) as raised:
        await apps.patch_namespaced_deployment("web", NS, ops)  # the test op now fails
    assert raised.value.status == 422


async def test_dry_run_create_stores_nothing(api_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(api_client)
    preview = await apps.create_namespaced_deployment(NS, deployment("web"), dry_run="All")
    assert preview.metadata.name == "web"
    with pytest.raises(ApiException) as raised:
        await apps.read_namespaced_deployment("web", NS)
    assert raised.value.status == 404


async def test_deleting_a_deployment_collects_its_replicasets_and_pods(
    api_client: client.ApiClient,
) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    await apps.create_namespaced_deployment(NS, deployment("web"))

    async def has_pods() -> bool:
        return bool((await core.list_namespaced_pod(NS, label_selector="app=web")).items)

    await eventually(has_pods, "the controller created pods")
    await apps.delete_namespaced_deployment(
        "web", NS, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    assert (await apps.list_namespaced_replica_set(NS)).items == []
    assert (await core.list_namespaced_pod(NS, label_selector="app=web")).items == []


async def test_orphan_delete_keeps_dependents(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    owner = await core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    await core.create_namespaced_config_map(
        NS,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dep", owner_references=[reference])),
    )
    await core.delete_namespaced_config_map("owner", NS, propagation_policy="Orphan")
    dependent = await core.read_namespaced_config_map("dep", NS)
    assert not dependent.metadata.owner_references


async def test_injected_faults_surface_as_api_exceptions(
    kubesim: KubeSim, api_client: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(NS, deployment("web"))
    kubesim.faults.fail("patch", r"/deployments/web$", 409)
    kubesim.faults.fail("get", r"/deployments/web$", 503)
    with pytest.raises(ApiException) as conflict:
        await apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as unavailable:
        await apps.read_namespaced_deployment("web", NS)
    assert unavailable.value.status == 503
    read = await apps.read_namespaced_deployment("web", NS)
    assert read.spec.replicas == 1  # the failed patch changed nothing
