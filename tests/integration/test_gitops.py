"""Safety rule 9 against kubesim: a GitOps owner is paused before the rollback.

Argo CD (Application: ``spec.syncPolicy.automated`` removed) and Flux
(Kustomization / HelmRelease: ``spec.suspend: true``) would re-apply the bad
version from Git at their next reconcile, so the executor pauses them before
it patches the template, says so on every page, and escalates without
touching the Deployment when the pause fails. kubesim stores the owner
objects; no GitOps controller runs, so every write to them is rollbackd's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from rollbackd.executor import EVENT_GITOPS_PAUSED
from rollbackd.gitops import ANNOTATION_PAUSED_SYNC, GitOpsError, PauseResult, pause
from rollbackd.kube import Kube
from rollbackd.model import Phase
from rollbackd.notify.base import NotificationKind
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_rolling import (
    TARGET,
    FakeSignals,
    Harness,
    Human,
    RecordingPager,
    RecordingRecorder,
    crash_in,
    deployment,
    rollback_to_v1,
    rollbackd_events,
)

pytestmark = pytest.mark.integration

APPLICATIONS = "argoproj.io/v1alpha1/applications"
KUSTOMIZATIONS = "kustomize.toolkit.fluxcd.io/v1/kustomizations"
HELMRELEASES = "helm.toolkit.fluxcd.io/v2/helmreleases"
DEPLOYMENTS = "apps/v1/deployments"
AUTOMATED = {"prune": True, "selfHeal": True}
ARGO_TRACKING = {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:default/web"}
FLUX_KUSTOMIZATION = {
    "kustomize.toolkit.fluxcd.io/name": "apps",
    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
}


def namespace(sim: KubeSim, name: str) -> None:
    sim.store.create("v1/namespaces", {"metadata": {"name": name}})


def application(name: str = "shop", *, automated: Mapping[str, Any] | None = AUTOMATED) -> Any:
    sync_policy: dict[str, Any] = {"syncOptions": ["CreateNamespace=true"]}
    if automated is not None:
        sync_policy["automated"] = dict(automated)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/shop.git", "path": "web"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "default"},
            "syncPolicy": sync_policy,
        },
    }


def flux_object(kind: str, name: str, namespace: str, *, suspend: bool | None = None) -> Any:
    group = (
        "kustomize.toolkit.fluxcd.io/v1" if kind == "Kustomization" else "helm.toolkit.fluxcd.io/v2"
    )
    spec: dict[str, Any] = {"interval": "5m"}
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": group,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class StoreLog:
    """Committed changes in order: (key, name, object) for the kinds of interest."""

    def __init__(self, sim: KubeSim, *keys: str) -> None:
        self.changes: list[tuple[str, str, dict[str, Any]]] = []
        self._keys = set(keys)
        self.stop: Callable[[], None] = sim.store.subscribe(self._record)

    def _record(self, event_type: str, key: str, obj: dict[str, Any]) -> None:
        if key in self._keys and event_type == "MODIFIED":
            self.changes.append((key, obj["metadata"]["name"], obj))

    def first(self, key: str, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """Index of the first change of ``key`` matching ``predicate`` (-1 if none)."""
        for index, (changed_key, _, obj) in enumerate(self.changes):
            if changed_key == key and predicate(obj):
                return index
        return -1


def image_of(deployment: Mapping[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest_asyncio.fixture
async def harness(kubesim: KubeSim) -> AsyncIterator[Harness]:
    assert kubesim.controller is not None, "kubesim started without its deployment controller"
    kube = await Kube.connect(kubeconfig=str(kubesim.kubeconfig))
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with kube, api:
        await kube.start_watches()
        assert await kube.wait_synced(10), "watch cache never synced"
        yield Harness(
            kubesim, kube, Human(api), RecordingRecorder(kube), RecordingPager(), FakeSignals()
        )


async def managed_v1_then_v2(
    harness: Harness,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """v1 then v2 synced by a GitOps controller: its metadata is there from the start.

    From the start matters: the controller copies Deployment annotations onto
    each ReplicaSet, and a rollback restores them from the chosen one.
    """
    body = deployment("web:1.0")
    body["metadata"]["labels"] = dict(labels or {})
    body["metadata"]["annotations"] = dict(annotations or {})
    await harness.human.create(body)
    await harness.rolled_out()
    await harness.human.set_image("web:2.0")
    await harness.rolled_out()


def gitops_event_data(harness: Harness) -> Mapping[str, Any]:
    recorded = [data for kind, _, data in harness.recorder.events if kind == "gitops_paused"]
    assert len(recorded) == 1, harness.recorder.events
    assert recorded[0] is not None
    return recorded[0]


async def test_argo_application_auto_sync_is_removed_before_the_template_is_patched(
    harness: Harness,
) -> None:
    namespace(harness.sim, "argocd")
    harness.sim.store.create(APPLICATIONS, application())
    await managed_v1_then_v2(harness, annotations=ARGO_TRACKING)
    log = StoreLog(harness.sim, APPLICATIONS, DEPLOYMENTS)
    rollback, decision = rollback_to_v1()

    result = await harness.executor().run(rollback, decision)
    log.stop()

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    app = harness.sim.store.get(APPLICATIONS, "argocd", "shop")
    assert "automated" not in app["spec"]["syncPolicy"]
    # Only auto-sync is switched off; the rest of the sync policy stays.
    assert app["spec"]["syncPolicy"]["syncOptions"] == ["CreateNamespace=true"]
    record = json.loads(app["metadata"]["annotations"][ANNOTATION_PAUSED_SYNC])
    assert record == {"rollback_id": rollback.id, "automated": AUTOMATED}
    paused_at = log.first(APPLICATIONS, lambda a: "automated" not in a["spec"]["syncPolicy"])
    patched_at = log.first(DEPLOYMENTS, lambda d: image_of(d) == "web:1.0")
    assert 0 <= paused_at < patched_at, log.changes
    assert (
        gitops_event_data(harness)
        == PauseResult("argocd:shop", "Application", "argocd", "shop", False, rollback.id).as_dict()
    )
    assert (EVENT_GITOPS_PAUSED, "Normal") in rollbackd_events(harness.sim)
    pages = {kind: (summary, details) for kind, summary, details in harness.pager.pages}
    summary, details = pages[NotificationKind.ROLLBACK_STARTED]
    assert "managed by argocd:shop" in summary
    assert "revert the change in Git" in summary
    assert details["gitops"]["kind"] == "Application"
    assert details["gitops"]["paused"] is True
    completed_summary, _ = pages[NotificationKind.ROLLBACK_COMPLETED]
    assert "revert the change in Git" in completed_summary


async def test_flux_kustomization_is_suspended_in_the_namespace_its_label_names(
    harness: Harness,
) -> None:
    namespace(harness.sim, "flux-system")
    harness.sim.store.create(KUSTOMIZATIONS, flux_object("Kustomization", "apps", "flux-system"))
    await managed_v1_then_v2(harness, labels=FLUX_KUSTOMIZATION)
    rollback, decision = rollback_to_v1()

    result = await harness.executor().run(rollback, decision)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    kustomization = harness.sim.store.get(KUSTOMIZATIONS, "flux-system", "apps")
    assert kustomization["spec"]["suspend"] is True
    assert kustomization["spec"]["interval"] == "5m"
    record = json.loads(kustomization["metadata"]["annotations"][ANNOTATION_PAUSED_SYNC])
    assert record == {"rollback_id": rollback.id, "suspend": False}
    data = gitops_event_data(harness)
    assert (data["kind"], data["namespace"], data["name"]) == (
        "Kustomization",
        "flux-system",
        "apps",
    )
    assert data["already_paused"] is False
    started = [d for k, _, d in harness.pager.pages if k is NotificationKind.ROLLBACK_STARTED]
    assert started[0]["gitops"]["owner"] == "flux:kustomization/apps"


async def test_flux_helmrelease_defaults_to_the_deployments_namespace(harness: Harness) -> None:
    harness.sim.store.create(HELMRELEASES, flux_object("HelmRelease", "web", "default"))
    await managed_v1_then_v2(harness, labels={"helm.toolkit.fluxcd.io/name": "web"})

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert harness.sim.store.get(HELMRELEASES, "default", "web")["spec"]["suspend"] is True


async def test_a_rollback_resumed_after_a_restart_still_says_git_must_be_reverted(
    harness: Harness,
) -> None:
    namespace(harness.sim, "argocd")
    harness.sim.store.create(APPLICATIONS, application())
    await managed_v1_then_v2(harness, annotations=ARGO_TRACKING)
    state = await crash_in(harness, Phase.VERIFYING)
    harness.pager.pages.clear()

    result = await harness.executor().resume(TARGET, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    # The start page is sent again (the outbox keeps one per rollback), then the resolve.
    assert harness.pager.kinds == [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.ROLLBACK_COMPLETED,
    ]
    for _, summary, details in harness.pager.pages:
        assert "managed by argocd:shop: auto-sync paused" in summary
        assert details["gitops"] == {"owner": "argocd:shop", "paused": True}


async def test_missing_owner_escalates_without_touching_the_template(harness: Harness) -> None:
    await managed_v1_then_v2(harness, labels={"argocd.argoproj.io/instance": "ghost"})
    before = await harness.kube.read_deployment(TARGET)
    log = StoreLog(harness.sim, DEPLOYMENTS)

    result = await harness.executor().run(*rollback_to_v1())
    log.stop()

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "gitops_pause_failed"
    assert "argocd/ghost not found" in result.reason
    after = await harness.kube.read_deployment(TARGET)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert log.first(DEPLOYMENTS, lambda d: image_of(d) != "web:2.0") == -1
    assert Phase.ROLLING_BACK not in harness.recorder.phase_names
    assert harness.pager.kinds == [NotificationKind.ESCALATION]
    _, summary, details = harness.pager.pages[0]
    assert details["reason_code"] == "gitops_pause_failed"
    assert details["gitops"]["owner"] == "argocd:ghost"
    assert details["gitops"]["paused"] is False
    assert "revert the change in Git" in summary


async def test_an_owner_that_refuses_the_pause_escalates(harness: Harness) -> None:
    harness.sim.store.create(HELMRELEASES, flux_object("HelmRelease", "web", "default"))
    await managed_v1_then_v2(harness, labels={"helm.toolkit.fluxcd.io/name": "web"})
    harness.sim.faults.fail("patch", r"/helmreleases/web$", 403, count=1)

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "gitops_pause_failed"
    assert "403" in result.reason
    assert image_of(await harness.kube.read_deployment(TARGET)) == "web:2.0"
    assert harness.sim.store.get(HELMRELEASES, "default", "web")["spec"].get("suspend") is None


async def test_an_already_suspended_owner_is_left_as_it_is(harness: Harness) -> None:
    namespace(harness.sim, "flux-system")
    harness.sim.store.create(
        KUSTOMIZATIONS, flux_object("Kustomization", "apps", "flux-system", suspend=True)
    )
    version = harness.sim.store.get(KUSTOMIZATIONS, "flux-system", "apps")["metadata"][
        "resourceVersion"
    ]
    await managed_v1_then_v2(harness, labels=FLUX_KUSTOMIZATION)

    result = await harness.executor().run(*rollback_to_v1())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    unchanged = harness.sim.store.get(KUSTOMIZATIONS, "flux-system", "apps")
    assert unchanged["metadata"]["resourceVersion"] == version
    data = gitops_event_data(harness)
    assert data["already_paused"] is True
    assert data["paused_by"] is None  # suspended by someone else: nothing of ours to restore


async def test_pausing_twice_is_idempotent_and_names_the_first_rollback(harness: Harness) -> None:
    namespace(harness.sim, "argocd")
    harness.sim.store.create(APPLICATIONS, application())
    await managed_v1_then_v2(harness, labels={"argocd.argoproj.io/instance": "shop"})

    first = await pause(harness.kube, TARGET, "argocd:shop", rollback_id="rb-1")
    version = harness.sim.store.get(APPLICATIONS, "argocd", "shop")["metadata"]["resourceVersion"]
    second = await pause(harness.kube, TARGET, "argocd:shop", rollback_id="rb-2")

    assert (first.already_paused, first.paused_by) == (False, "rb-1")
    assert (second.already_paused, second.paused_by) == (True, "rb-1")
    app = harness.sim.store.get(APPLICATIONS, "argocd", "shop")
    assert app["metadata"]["resourceVersion"] == version


async def test_an_application_in_another_namespace_is_found_from_the_tracking_id(
    harness: Harness,
) -> None:
    namespace(harness.sim, "team-shop")
    body = application()
    body["metadata"]["namespace"] = "team-shop"
    harness.sim.store.create(APPLICATIONS, body)
    # Argo CD names an Application outside its own namespace "<namespace>_<name>".
    tracking = {"argocd.argoproj.io/tracking-id": "team-shop_shop:apps/Deployment:default/web"}
    await managed_v1_then_v2(harness, annotations=tracking)

    result = await pause(harness.kube, TARGET, "argocd:team-shop_shop", rollback_id="rb-1")

    assert (result.namespace, result.name, result.already_paused) == ("team-shop", "shop", False)
    app = harness.sim.store.get(APPLICATIONS, "team-shop", "shop")
    assert "automated" not in app["spec"]["syncPolicy"]


async def test_a_concurrent_change_is_not_overwritten(harness: Harness) -> None:
    """Safety rule 10 for the owner: a write from a stale read is refused and redone."""
    namespace(harness.sim, "argocd")
    harness.sim.store.create(APPLICATIONS, application())
    await managed_v1_then_v2(harness, labels={"argocd.argoproj.io/instance": "shop"})
    # Hold rollbackd's patch while a human edits the auto-sync policy.
    harness.sim.faults.delay("patch", r"/applications/shop$", 2.0, count=1)
    pausing = asyncio.create_task(pause(harness.kube, TARGET, "argocd:shop", rollback_id="rb-1"))
    async with asyncio.timeout(5):  # the held patch has arrived once its rule is used up
        while True:
            if not harness.sim.faults.active_rules:
                break
            await asyncio.sleep(0.01)
    edited = harness.sim.store.get(APPLICATIONS, "argocd", "shop")
    edited["spec"]["syncPolicy"]["automated"] = {"prune": False}
    harness.sim.store.update(APPLICATIONS, edited)

    result = await pausing

    assert result.already_paused is False
    app = harness.sim.store.get(APPLICATIONS, "argocd", "shop")
    assert "automated" not in app["spec"]["syncPolicy"]
    # The record holds what the human set, not the stale block read first.
    record = json.loads(app["metadata"]["annotations"][ANNOTATION_PAUSED_SYNC])
    assert record["automated"] == {"prune": False}


async def test_an_unrecognised_owner_is_a_clear_error(harness: Harness) -> None:
    await harness.deploy_v1_then_v2()
    with pytest.raises(GitOpsError, match="unrecognised GitOps owner"):
        await pause(harness.kube, TARGET, "spinnaker:web", rollback_id="rb-1")
