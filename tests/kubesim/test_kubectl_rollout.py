"""The real kubectl v1.33 drives rollouts against kubesim and sees what a cluster would show.

Expectations come from kubectl's own logic (polymorphichelpers: rollout
status, history, undo) and the upstream deployment controller, not from
what kubesim happens to do.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim import KubeSim

from .kubectl_helpers import Kubectl, deployment_manifest, history_rows, make_kubectl, revision

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    return await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")


async def create(kubectl: Kubectl, tmp_path: pathlib.Path, manifest: dict[str, Any]) -> None:
    path = tmp_path / f"{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    await kubectl.run("create", "-f", str(path))


async def rollout_status(kubectl: Kubectl, name: str = "web") -> str:
    return (await kubectl.run("rollout", "status", f"deployment/{name}", "--timeout=60s")).stdout


async def replicasets(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """The ReplicaSets by revision number."""
    items = (await kubectl.json("get", "rs"))["items"]
    return {revision(rs) or "": rs for rs in items}


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_create_and_rollout_status_until_available(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, deployment_manifest())
    output = await rollout_status(kubectl)
    assert output.strip().endswith('deployment "web" successfully rolled out')

    listing = await kubectl.json("get", "rs,pods,deploy")
    kinds = [item["kind"] for item in listing["items"]]
    assert kinds.count("ReplicaSet") == 1
    assert kinds.count("Pod") == 3
    assert kinds.count("Deployment") == 1
    rs = next(item for item in listing["items"] if item["kind"] == "ReplicaSet")
    deploy = next(item for item in listing["items"] if item["kind"] == "Deployment")
    assert revision(rs) == revision(deploy) == "1"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    status = deploy["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (3, 3, 3)
    assert status["observedGeneration"] == deploy["metadata"]["generation"]
    for pod in (item for item in listing["items"] if item["kind"] == "Pod"):
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["containerStatuses"][0]["imageID"].startswith(
            "docker-pullable://example/app@sha256:"
        )


async def test_set_image_history_and_undo_reuse_the_old_replicaset(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, deployment_manifest())
    await rollout_status(kubectl)
    # The controller copies the Deployment's annotations to its current ReplicaSet, so a
    # change-cause annotated right after a change labels that change's revision.
    for version in ("2.0", "3.0"):
        await kubectl.run("set", "image", "deployment/web", f"app=example/app:{version}")
        await kubectl.run(
            "annotate",
            "deployment/web",
            "--overwrite",
            f"kubernetes.io/change-cause=ship {version}",
        )
        await rollout_status(kubectl)

    history = history_rows((await kubectl.run("rollout", "history", "deployment/web")).stdout)
    assert history == [("1", "<none>"), ("2", "ship 2.0"), ("3", "ship 3.0")]
    before = await replicasets(kubectl)

    undo = await kubectl.run("rollout", "undo", "deployment/web")
    assert undo.stdout.strip() == "deployment.apps/web rolled back"
    await rollout_status(kubectl)

    deploy = await kubectl.json("get", "deployment/web")
    assert image_of(deploy) == "example/app:2.0"
    assert revision(deploy) == "4"
    after = await replicasets(kubectl)
    assert len(after) == 3, "undo must reuse the revision-2 ReplicaSet, not create one"
    reused = after["4"]
    assert reused["metadata"]["name"] == before["2"]["metadata"]["name"]
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    assert reused["spec"]["replicas"] == 3
    assert after["3"]["spec"]["replicas"] == 0
    history = history_rows((await kubectl.run("rollout", "history", "deployment/web")).stdout)
    assert [number for number, _ in history] == ["1", "3", "4"]


async def test_undo_to_revision_restores_that_template(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, deployment_manifest())
    await rollout_status(kubectl)
    for version in ("2.0", "3.0"):
        await kubectl.run("set", "image", "deployment/web", f"app=example/app:{version}")
        await rollout_status(kubectl)

    await kubectl.run("rollout", "undo", "deployment/web", "--to-revision=1")
    await rollout_status(kubectl)
    deploy = await kubectl.json("get", "deployment/web")
    assert image_of(deploy) == "example/app:1.0"
    rs = (await replicasets(kubectl))["4"]
    assert image_of(rs) == "example/app:1.0"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"

    detail = (await kubectl.run("rollout", "history", "deployment/web", "--revision=4")).stdout
    assert "example/app:1.0" in detail

    again = await kubectl.run("rollout", "undo", "deployment/web", "--to-revision=4")
    assert "skipped rollback (current template already matches revision 4)" in again.stdout
    missing = await kubectl.run("rollout", "undo", "deployment/web", "--to-revision=9", check=False)
    assert missing.returncode != 0
    assert "unable to find specified revision 9 in history" in missing.stderr


async def test_rollout_status_fails_when_the_progress_deadline_passes(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, deployment_manifest(replicas=2, progressDeadlineSeconds=2))
    await rollout_status(kubectl)
    never_ready = {
        "spec": {"template": {"metadata": {"annotations": {"kubesim.rollbackd.io/ready": "false"}}}}
    }
    await kubectl.run("patch", "deployment/web", "--type=merge", "-p", json.dumps(never_ready))
    result = await kubectl.run("rollout", "status", "deployment/web", "--timeout=60s", check=False)
    assert result.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in result.stderr

    deploy = await kubectl.json("get", "deployment/web")
    progressing = next(c for c in deploy["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")


async def test_describe_shows_conditions_replicasets_and_events(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, deployment_manifest(replicas=2))
    await rollout_status(kubectl)
    await kubectl.run("set", "image", "deployment/web", "app=example/app:2.0")
    await rollout_status(kubectl)
    sets = await replicasets(kubectl)
    old, new = sets["1"]["metadata"]["name"], sets["2"]["metadata"]["name"]

    text = (await kubectl.run("describe", "deployment", "web")).stdout
    assert (
        "Replicas:               2 desired | 2 updated | 2 total | 2 available | 0 unavailable"
        in text
    )
    assert "Available      True    MinimumReplicasAvailable" in text
    assert "Progressing    True    NewReplicaSetAvailable" in text
    assert f"OldReplicaSets:  {old} (0/0 replicas created)" in text
    assert f"NewReplicaSet:   {new} (2/2 replicas created)" in text
    assert f"Scaled up replica set {old} from 0 to 2" in text
    assert f"Scaled down replica set {old} from 1 to 0" in text
    assert "deployment-controller" in text


async def test_client_side_apply_of_a_changed_manifest_rolls_out(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "web.json"
    path.write_text(json.dumps(deployment_manifest(replicas=2)))
    await kubectl.run("apply", "--server-side=false", "-f", str(path))
    await rollout_status(kubectl)
    path.write_text(json.dumps(deployment_manifest(replicas=2, image="example/app:2.0")))
    applied = await kubectl.run("apply", "--server-side=false", "-f", str(path))
    assert applied.stdout.strip() == "deployment.apps/web configured"
    await rollout_status(kubectl)

    sets = await replicasets(kubectl)
    assert image_of(sets["2"]) == "example/app:2.0"
    for rs in sets.values():
        assert (
            "kubectl.kubernetes.io/last-applied-configuration" not in rs["metadata"]["annotations"]
        )
    unchanged = await kubectl.run("apply", "--server-side=false", "-f", str(path))
    assert unchanged.stdout.strip() == "deployment.apps/web unchanged"


@pytest.mark.parametrize(
    ("patch_type", "patch"),
    [
        (
            "json",
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "example/app:2.0",
                }
            ],
        ),
        ("merge", {"spec": {"template": {"metadata": {"labels": {"app": "web", "track": "v2"}}}}}),
        (
            "strategic",
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "app", "image": "example/app:2.0"}]}
                    }
                }
            },
        ),
    ],
)
async def test_patch_flavours_start_a_new_revision(
    kubectl: Kubectl, tmp_path: pathlib.Path, patch_type: str, patch: Any
) -> None:
    await create(kubectl, tmp_path, deployment_manifest(replicas=1))
    await rollout_status(kubectl)
    await kubectl.run("patch", "deployment/web", f"--type={patch_type}", "-p", json.dumps(patch))
    await rollout_status(kubectl)
    sets = await replicasets(kubectl)
    assert sorted(sets) == ["1", "2"]
    deploy = await kubectl.json("get", "deployment/web")
    # Strategic merge keeps the container's other fields (ports) by merging on "name".
    assert deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    assert sets["2"]["spec"]["replicas"] == 1
    assert sets["1"]["spec"]["replicas"] == 0
