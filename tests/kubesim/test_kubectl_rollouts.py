"""Argo Rollouts through the real kubectl: steps, pause, promotion, the abort patch, bad specs.

The promotion and abort patches are the ones ``kubectl argo rollouts promote``
and ``abort`` send (merge patches on the status subresource), sent here with
``kubectl patch --subresource=status``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim import KubeSim

from .crd_helpers import KubectlWatch, create, rollout_manifest, wait_for
from .kubectl_helpers import Kubectl, make_kubectl

pytestmark = pytest.mark.integration

HASH = "rollouts-pod-template-hash"
ABORT = '{"status":{"abort":true}}'  # pkg/kubectl-argo-rollouts/cmd/abort: abortPatch
PROMOTE = '{"status":{"pauseConditions":null}}'  # unpausing a pause step


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    return await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")


async def status_of(kubectl: Kubectl, name: str = "web") -> dict[str, Any]:
    return dict((await kubectl.json("get", "rollout", name)).get("status") or {})


async def replica_sets(kubectl: Kubectl) -> dict[str, tuple[int, int]]:
    """Pod template hash -> (spec.replicas, status.availableReplicas) of every ReplicaSet."""
    items = (await kubectl.json("get", "rs"))["items"]
    return {
        rs["metadata"]["labels"][HASH]: (
            rs["spec"]["replicas"],
            (rs.get("status") or {}).get("availableReplicas", 0),
        )
        for rs in items
    }


async def until_phase(kubectl: Kubectl, phase: str, **fields: Any) -> dict[str, Any]:
    return dict(
        await wait_for(
            lambda: status_of(kubectl),
            lambda s: s.get("phase") == phase and all(s.get(k) == v for k, v in fields.items()),
        )
    )


async def set_image(kubectl: Kubectl, image: str) -> None:
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
    await kubectl.run("patch", "rollout", "web", "--type=json", "-p", json.dumps(patch))


async def test_steps_pause_promotion_to_stable(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1s"}}]
    await create(kubectl, tmp_path, rollout_manifest(steps=steps))
    first = await until_phase(kubectl, "Healthy")
    stable = first["stableRS"]
    assert first["currentPodHash"] == stable and first["currentStepIndex"] == 4  # initial deploy
    table = (await kubectl.run("get", "ro")).stdout.split()
    assert table[:6] == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[6:11] == ["web", "4", "4", "4", "4"]

    await set_image(kubectl, "example/app:2.0")
    paused = await until_phase(kubectl, "Paused", currentStepIndex=1)
    canary = paused["currentPodHash"]
    assert canary != stable and paused["stableRS"] == stable
    assert paused["message"] == "CanaryPauseStep"
    assert paused["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    # setWeight 25 of 4 replicas: one canary pod beside three stable ones.
    assert await replica_sets(kubectl) == {stable: (3, 3), canary: (1, 1)}
    ro = await kubectl.json("get", "rollout", "web")
    assert ro["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "2"

    await kubectl.run(
        "patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", PROMOTE
    )
    # setWeight 50, then a timed pause that ends by itself, then the canary is the stable.
    done = await until_phase(kubectl, "Healthy", stableRS=canary)
    assert done["currentStepIndex"] == 4
    sets = await wait_for(
        lambda: replica_sets(kubectl), lambda rs: rs == {stable: (0, 0), canary: (4, 4)}
    )
    assert sets[canary] == (4, 4)
    reasons = {event["reason"] for event in (await kubectl.json("get", "events"))["items"]}
    assert {"RolloutStepCompleted", "RolloutCompleted", "ScalingReplicaSet"} <= reasons
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def test_the_abort_patch_on_the_status_subresource_scales_the_canary_to_zero(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, rollout_manifest(steps=[{"setWeight": 50}, {"pause": {}}]))
    stable = (await until_phase(kubectl, "Healthy"))["stableRS"]
    await set_image(kubectl, "example/app:2.0")
    canary = (await until_phase(kubectl, "Paused"))["currentPodHash"]
    assert await replica_sets(kubectl) == {stable: (2, 2), canary: (2, 2)}

    async with KubectlWatch(kubectl, "get", "rollout", "web", "--watch", "-o", "json") as watch:
        await watch.next_object()
        await kubectl.run(
            "patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", ABORT
        )
        seen = await watch.next_object()
        while (seen.get("status") or {}).get("phase") != "Degraded":
            seen = await watch.next_object()
    aborted = seen["status"]
    assert aborted["abort"] is True and aborted["abortedAt"]
    assert aborted["message"] == "RolloutAborted: Rollout aborted update to revision 2"
    assert aborted["currentStepIndex"] == 0 and "pauseConditions" not in aborted
    progressing = next(c for c in aborted["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "RolloutAborted")
    # All the traffic to stable: the canary has no pods left, the stable all of them.
    await wait_for(lambda: replica_sets(kubectl), lambda rs: rs == {stable: (4, 4), canary: (0, 0)})
    pods = (await kubectl.json("get", "pods", "-l", f"{HASH}={canary}"))["items"]
    assert pods == []
    assert aborted["stableRS"] == stable  # the abort never promotes

    # Going back to the stable template ends the abort and skips the steps.
    await set_image(kubectl, "example/app:1.0")
    back = await until_phase(kubectl, "Healthy", currentPodHash=stable)
    assert "abort" not in back and back["currentStepIndex"] == 2
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def test_a_retry_after_an_abort_starts_the_steps_again(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, rollout_manifest(steps=[{"setWeight": 25}, {"pause": {}}]))
    await until_phase(kubectl, "Healthy")
    await set_image(kubectl, "example/app:2.0")
    await until_phase(kubectl, "Paused")
    await kubectl.run(
        "patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", ABORT
    )
    await until_phase(kubectl, "Degraded")
    retry = '{"status":{"abort":false}}'
    await kubectl.run(
        "patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", retry
    )
    again = await until_phase(kubectl, "Paused", currentStepIndex=1)
    assert "abortedAt" not in again


async def test_a_full_promotion_skips_the_remaining_steps(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    await create(kubectl, tmp_path, rollout_manifest(steps=steps))
    await until_phase(kubectl, "Healthy")
    await set_image(kubectl, "example/app:2.0")
    canary = (await until_phase(kubectl, "Paused", currentStepIndex=1))["currentPodHash"]
    full = '{"status":{"promoteFull":true}}'  # promote --full
    await kubectl.run("patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", full)
    done = await until_phase(kubectl, "Healthy", stableRS=canary)
    assert done["currentStepIndex"] == 4 and "promoteFull" not in done


async def test_a_stale_resource_version_is_a_conflict(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, rollout_manifest())
    stale = await kubectl.json("get", "rollout", "web")
    await kubectl.run("annotate", "rollout", "web", "team=shop")
    stale["spec"]["replicas"] = 9
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(stale))
    result = await kubectl.run("replace", "-f", str(path), check=False)
    assert result.returncode != 0 and "the object has been modified" in result.stderr
    assert (await kubectl.json("get", "rollout", "web"))["spec"]["replicas"] == 4


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"replicas": "four"},
            'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        ),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": "half"}]}}},
            "spec.strategy.canary.steps[0].setWeight in body must be of type integer",
        ),
        (
            {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
            None,  # an empty list satisfies "required": the controller reports it instead
        ),
        (
            {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}},
            "spec.template.spec.containers: Required value",
        ),
    ],
)
async def test_schema_violations_are_422(
    kubectl: Kubectl, change: dict[str, Any], expected: str | None
) -> None:
    manifest = rollout_manifest()
    manifest["spec"].update(change)
    result = await kubectl.run("create", "-f", "-", stdin=json.dumps(manifest), check=False)
    if expected is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    assert 'The Rollout "web" is invalid' in result.stderr
    assert expected in result.stderr


async def test_status_and_selector_writes_the_crd_refuses(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, rollout_manifest())
    await until_phase(kubectl, "Healthy")
    result = await kubectl.run(
        "patch",
        "rollout",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"abort":"yes"}}',
        check=False,
    )
    assert result.returncode != 0
    assert (
        'status.abort: Invalid value: "string": status.abort in body must be of type boolean'
        in (result.stderr)
    )
    assert "abort" not in await status_of(kubectl)
    result = await kubectl.run(
        "patch",
        "rollout",
        "web",
        "--type=merge",
        "-p",
        '{"spec":{"selector":{"matchLabels":{"app":"other"}}}}',
        check=False,
    )
    assert result.returncode != 0 and ".spec.selector is immutable" in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"replicas": -1},
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 150}]}}},
            "spec.strategy.canary.steps[0].setWeight: Invalid value: 150: "
            "SetWeight needs to be between 0 and 100",
        ),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}},
            "Step must have one of the following set",
        ),
        (
            {"selector": {"matchLabels": {"app": "other"}}},
            "spec.template.metadata.labels: Invalid value: "
            'map[string]string{"app":"web"}: `selector` does not match template `labels`',
        ),
        (
            {"strategy": {}},
            "Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'",
        ),
    ],
)
async def test_specs_the_controller_refuses_are_accepted_and_degraded(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path, change: dict[str, Any], message: str
) -> None:
    manifest = rollout_manifest()
    manifest["spec"].update(change)
    await create(kubectl, tmp_path, manifest)
    status = await until_phase(kubectl, "Degraded")
    [invalid] = [c for c in status["conditions"] if c["type"] == "InvalidSpec"]
    assert invalid["status"] == "True"
    assert invalid["message"].startswith('The Rollout "web" is invalid: ')
    assert message in invalid["message"]
    assert status["message"] == f"InvalidSpec: {invalid['message']}"
    assert (await kubectl.json("get", "rs"))["items"] == []  # nothing scaled
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def test_an_abort_the_api_server_fails_changes_nothing_and_a_retry_applies(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    await create(kubectl, tmp_path, rollout_manifest(steps=[{"setWeight": 50}, {"pause": {}}]))
    stable = (await until_phase(kubectl, "Healthy"))["stableRS"]
    await set_image(kubectl, "example/app:2.0")
    canary = (await until_phase(kubectl, "Paused"))["currentPodHash"]
    kubesim.faults.fail("patch", r"/rollouts/web/status$", 500, count=1)
    args = ("patch", "rollout", "web", "--subresource=status", "--type=merge", "-p", ABORT)
    failed = await kubectl.run(*args, check=False)
    assert failed.returncode != 0
    assert "abort" not in await status_of(kubectl)
    assert (await replica_sets(kubectl))[canary] == (2, 2)

    await kubectl.run(*args)
    await until_phase(kubectl, "Degraded")
    await wait_for(lambda: replica_sets(kubectl), lambda rs: rs == {stable: (4, 4), canary: (0, 0)})


async def test_a_human_pause_holds_the_steps_until_it_is_lifted(
    kubectl: Kubectl, tmp_path: pathlib.Path
) -> None:
    """``kubectl argo rollouts pause`` sets spec.paused: no step completes, no pause condition."""
    await create(kubectl, tmp_path, rollout_manifest(steps=[{"setWeight": 25}]))
    stable = (await until_phase(kubectl, "Healthy"))["stableRS"]
    pause = '{"spec":{"paused":true}}'  # pkg/kubectl-argo-rollouts/cmd/pause
    await kubectl.run("patch", "rollout", "web", "--type=merge", "-p", pause)
    await until_phase(kubectl, "Paused", message="manually paused")

    await set_image(kubectl, "example/app:2.0")
    # The sync that saw the canary available would have completed setWeight 25.
    held = await until_phase(kubectl, "Paused", updatedReplicas=1, availableReplicas=4)
    assert held["currentStepIndex"] == 0 and held["stableRS"] == stable
    assert held["message"] == "manually paused" and "pauseConditions" not in held

    resume = '{"spec":{"paused":false}}'
    await kubectl.run("patch", "rollout", "web", "--type=merge", "-p", resume)
    done = await until_phase(kubectl, "Healthy", stableRS=held["currentPodHash"])
    assert done["currentStepIndex"] == 1
