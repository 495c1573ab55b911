"""The blue-green executor against kubesim: scale the previous colour, switch back, clean up.

Every test creates checkout-blue and checkout-green behind Service checkout
(``rollbackd.io/strategy: blue-green``), switches the selector from blue to
green as ``kubectl patch`` would, and asks the executor to roll green back.
Kills are cancellations at a chosen step followed by ``Executor.resume`` on
what the Deployment records, as a restarted daemon does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config

from rollbackd.bluegreen import ANNOTATION_BLUEGREEN, switch_record
from rollbackd.executor import Executor
from rollbackd.kube import Kube
from rollbackd.model import ANNOTATION_ROLLBACK, Decision, Phase, Policy, Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.state import RollbackState, decode_state
from rollbackd.strategies import RolloutStatus
from rollbackd.testing.kubesim import KubeSim
from rollbackd.verify import Verifier
from tests.integration.test_executor_rolling import (
    FakeSignals,
    RecordingPager,
    RecordingRecorder,
    pending_rollback,
)
from tests.integration.test_gitops import APPLICATIONS, StoreLog, application

pytestmark = pytest.mark.integration

NS = "default"
GREEN = Target(NS, "checkout-green")
BLUE = Target(NS, "checkout-blue")
SLOW_READY = {"kubesim.rollbackd.io/ready-after": "1s"}
NEVER_READY = {"kubesim.rollbackd.io/ready": "false"}

W = TypeVar("W")


def colour(name: str, image: str, replicas: int, annotations: Mapping[str, str]) -> dict[str, Any]:
    labels = {"app": "checkout", "version": name}
    return {
        "metadata": {"name": f"checkout-{name}", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(annotations)},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


@dataclass
class World:
    sim: KubeSim
    kube: Kube
    apps: client.AppsV1Api
    core: client.CoreV1Api
    recorder: RecordingRecorder
    pager: RecordingPager
    rollout_timeout: float = 20.0

    def executor(self) -> Executor:
        verifier = Verifier(
            FakeSignals().evaluate,
            self.kube.readiness,
            scrape_interval=timedelta(milliseconds=100),
            intervals=3,
            clock=lambda: datetime.now(UTC),
        )
        return Executor(
            self.kube,
            verifier,
            self.recorder,
            self.pager,
            rollout_timeout=self.rollout_timeout,
            clock=lambda: datetime.now(UTC),
            policy_for=lambda target: Policy(),
        )

    async def release(
        self,
        *,
        blue_annotations: Mapping[str, str] | None = None,
        blue_after_switch: int = 3,
        service_annotations: Mapping[str, str] | None = None,
        green_labels: Mapping[str, str] | None = None,
        service_labels: Mapping[str, str] | None = None,
    ) -> None:
        """blue serves; green is deployed beside it; the selector is switched to green."""
        await self.apps.create_namespaced_deployment(
            NS, colour("blue", "checkout:1.4", 3, blue_annotations or {})
        )
        green = colour("green", "checkout:1.5", 3, {})
        green["metadata"]["labels"] = dict(green_labels or {})
        await self.apps.create_namespaced_deployment(NS, green)
        annotations = {"rollbackd.io/strategy": "blue-green", **(service_annotations or {})}
        await self.core.create_namespaced_service(
            NS,
            {
                "metadata": {
                    "name": "checkout",
                    "annotations": annotations,
                    "labels": dict(service_labels or {}),
                },
                "spec": {
                    "selector": {"app": "checkout", "version": "blue"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            },
        )
        for target in (BLUE, GREEN):
            await self.rolled_out(target)
        await self.set_colour("green", manager="kubectl-patch")
        if blue_after_switch != 3:
            await self.scale(BLUE, blue_after_switch)

    async def set_colour(self, value: str, *, manager: str) -> None:
        await self.core.patch_namespaced_service(
            "checkout",
            NS,
            [{"op": "replace", "path": "/spec/selector/version", "value": value}],
            field_manager=manager,
            _content_type="application/json-patch+json",
        )

    async def scale(self, target: Target, replicas: int) -> None:
        await self.apps.patch_namespaced_deployment(
            target.name,
            NS,
            [{"op": "replace", "path": "/spec/replicas", "value": replicas}],
            _content_type="application/json-patch+json",
        )

    async def rolled_out(self, target: Target) -> None:
        outcome = await self.kube.wait_rollout_complete(target, timeout=20)
        assert outcome.status is RolloutStatus.COMPLETE, outcome.message

    def service(self) -> dict[str, Any]:
        found = self.sim.store.peek("v1/services", NS, "checkout")
        assert found is not None
        return found

    def replicas(self, target: Target) -> int:
        found = self.sim.store.peek("apps/v1/deployments", NS, target.name)
        assert found is not None
        return int(found["spec"]["replicas"])

    def annotations(self, target: Target) -> dict[str, str]:
        found = self.sim.store.peek("apps/v1/deployments", NS, target.name)
        assert found is not None
        return dict(found["metadata"].get("annotations") or {})

    def endpoint_pods(self) -> set[str]:
        endpoints = self.sim.store.peek("v1/endpoints", NS, "checkout") or {}
        return {
            address["targetRef"]["name"].rsplit("-", 2)[0]
            for subset in endpoints.get("subsets") or []
            for address in subset.get("addresses") or []
        }

    def events(self) -> list[str]:
        events = [
            e
            for e in self.sim.store.list("v1/events", NS)
            if e.get("reportingComponent") == "rollbackd"
        ]
        events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [e["reason"] for e in events]


def rollback_green() -> tuple[Rollback, Decision]:
    return pending_rollback(
        GREEN,
        "rb-20260101-0042",
        reason="error_ratio 30% > 5%",
        decision_reason="switch Service checkout back",
        revisions=(1, 1),
    )


@contextlib.asynccontextmanager
async def connected(kubesim: KubeSim, world: Callable[..., W]) -> AsyncIterator[W]:
    """A ``world`` whose adapter's watch cache has synced with ``kubesim``."""
    kube = await Kube.connect(kubeconfig=str(kubesim.kubeconfig))
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with kube, api:
        await kube.start_watches()
        assert await kube.wait_synced(10), "watch cache never synced"
        yield world(
            kubesim,
            kube,
            client.AppsV1Api(api),
            client.CoreV1Api(api),
            RecordingRecorder(kube),
            RecordingPager(),
        )


@pytest_asyncio.fixture
async def world(kubesim: KubeSim) -> AsyncIterator[World]:
    async with connected(kubesim, World) as started:
        yield started


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (kubesim's store has no change event)
            await asyncio.sleep(0.01)


async def kill_when(
    world: World, condition: Callable[[], bool]
) -> tuple[RollbackState, asyncio.Task[Rollback]]:
    """Run the rollback, cancel it (the kill) once ``condition`` holds; the state it left."""
    task = asyncio.create_task(world.executor().run(*rollback_green()))
    await until(condition)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return decode_state(world.annotations(GREEN)[ANNOTATION_ROLLBACK]), task


async def kill_once(world: World, reached: asyncio.Event) -> None:
    """Run the rollback and cancel it (the kill) once a recorder hook set ``reached``."""
    task = asyncio.create_task(world.executor().run(*rollback_green()))
    async with asyncio.timeout(30):
        await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the whole path -------------------------------------------------------------


async def test_scales_the_previous_colour_up_switches_back_verifies_and_scales_green_down(
    world: World,
) -> None:
    await world.release(blue_after_switch=0)
    assert world.endpoint_pods() == {"checkout-green"}

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    service = world.service()
    assert service["spec"]["selector"] == {"app": "checkout", "version": "blue"}
    # The switch is rollbackd's own (its field manager), which the next decision reads.
    assert switch_record(service)[1] == "rollbackd"
    await until(lambda: world.endpoint_pods() == {"checkout-blue"})
    assert world.replicas(BLUE) == 3
    # Cleanup after ROLLBACK_COMPLETED: green to 0, the record gone in the same write.
    assert world.replicas(GREEN) == 0
    assert ANNOTATION_BLUEGREEN not in world.annotations(GREEN)
    assert world.events() == [
        "RollbackPlanned",
        "RollbackStarted",
        "RollbackReady",
        "RollbackVerified",
        "RollbackCleanedUp",
    ]
    plan = next(data for kind, _, data in world.recorder.events if kind == "plan")
    assert plan is not None and plan["strategy"] == "blue-green"
    assert plan["changes"]["selector_before"] == {"app": "checkout", "version": "green"}
    assert plan["changes"]["selector_after"] == {"app": "checkout", "version": "blue"}
    assert plan["changes"]["replicas_scaled"] == [
        {"deployment": "checkout-blue", "from": 0, "to": 3}
    ]
    cleanup = [message for kind, message, _ in world.recorder.events if kind == "cleanup"]
    assert cleanup == ["scaled default/checkout-green 3 -> 0"]
    started = next(
        summary for kind, summary, _ in world.pager.pages if kind.name == "ROLLBACK_STARTED"
    )
    assert "switching Service checkout selector version=green -> version=blue" in started


async def test_cleanup_keep_leaves_the_bad_colour_running(world: World) -> None:
    await world.release(service_annotations={"rollbackd.io/cleanup": "keep"})
    result = await world.executor().run(*rollback_green())
    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.replicas(GREEN) == 3
    assert ANNOTATION_BLUEGREEN not in world.annotations(GREEN)


# --- kills between two writes ---------------------------------------------------------


async def test_killed_between_the_scale_up_and_the_switch_resumes_and_switches_once(
    world: World,
) -> None:
    # blue's pods take a second to be Ready: the kill lands while rollbackd waits for them.
    await world.release(blue_annotations=SLOW_READY, blue_after_switch=0)
    state, _ = await kill_when(world, lambda: world.replicas(BLUE) == 3)
    assert state.phase is Phase.ROLLING_BACK
    assert world.service()["spec"]["selector"]["version"] == "green"  # not switched yet
    mark = world.sim.requests.mark()

    result = await world.executor().resume(GREEN, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.service()["spec"]["selector"]["version"] == "blue"
    writes = [r for r in world.sim.requests.since(mark) if r.is_write and "/services/" in r.path]
    assert len(writes) == 1  # one switch
    scale_ups = [
        r
        for r in world.sim.requests.since(mark)
        if r.method == "PATCH" and r.path.endswith("/deployments/checkout-blue")
    ]
    assert scale_ups == []  # blue already had its replicas: not written again
    assert world.replicas(GREEN) == 0


async def test_killed_between_the_switch_and_the_cleanup_cleans_up_on_resume(
    world: World,
) -> None:
    await world.release()
    completed = asyncio.Event()

    async def hang_when_completed(rollback: Rollback) -> None:
        if rollback.phase is Phase.ROLLBACK_COMPLETED:
            completed.set()
            await asyncio.Event().wait()

    world.recorder.on_phase = hang_when_completed
    await kill_once(world, completed)
    world.recorder.on_phase = None
    annotations = world.annotations(GREEN)
    state = decode_state(annotations[ANNOTATION_ROLLBACK])
    assert state.phase is Phase.ROLLBACK_COMPLETED
    assert world.replicas(GREEN) == 3
    executor = world.executor()
    assert executor.cleanup_due(annotations)  # what the daemon's start looks for

    await executor.resume(GREEN, state)

    assert world.replicas(GREEN) == 0
    assert not executor.cleanup_due(world.annotations(GREEN))
    assert world.service()["spec"]["selector"]["version"] == "blue"


# --- failure modes: nothing half switched ------------------------------------------------


async def test_a_concurrent_selector_change_is_a_conflict_and_nothing_is_switched(
    world: World,
) -> None:
    await world.release(blue_annotations=SLOW_READY, blue_after_switch=0)
    task = asyncio.create_task(world.executor().run(*rollback_green()))
    await until(lambda: world.replicas(BLUE) == 3)
    # A human moves the selector on (a third version) while rollbackd waits for blue.
    await world.set_colour("green-hotfix", manager="kubectl-edit")

    result = await task

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "target_changed"
    assert "Service checkout was changed by someone else" in result.reason
    assert world.service()["spec"]["selector"]["version"] == "green-hotfix"  # theirs stays
    assert world.replicas(GREEN) == 3  # and nothing was cleaned up
    assert NotificationKind.ESCALATION in world.pager.kinds


async def test_a_selector_changed_between_rollbackds_read_and_its_patch_is_not_overwritten(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.release()
    read = world.kube.read_service
    reads = 0

    async def read_then_a_human_edits(namespace: str, name: str) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        service = await read(namespace, name)
        if reads == 1:  # the human's edit lands after rollbackd's read, before its patch
            await world.set_colour("green-hotfix", manager="kubectl-edit")
        return service

    monkeypatch.setattr(world.kube, "read_service", read_then_a_human_edits)

    result = await world.executor().run(*rollback_green())

    # The resourceVersion test failed the patch; the re-read saw the human's selector.
    assert reads == 2
    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "target_changed")
    assert world.service()["spec"]["selector"]["version"] == "green-hotfix"
    assert switch_record(world.service())[1] == "kubectl-edit"


async def test_a_switch_the_api_server_fails_once_is_retried_and_made_once(world: World) -> None:
    await world.release()
    world.sim.faults.fail("patch", r"/services/checkout$", 503, count=1)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    patches = [
        r.status
        for r in world.sim.requests.since(mark)
        if r.method == "PATCH" and r.path.endswith("/services/checkout")
    ]
    assert patches == [503, 200]  # the adapter's retry, one switch
    assert world.service()["spec"]["selector"]["version"] == "blue"


async def test_a_switch_rollbackd_may_not_make_escalates_with_nothing_switched(
    world: World,
) -> None:
    await world.release()
    # RBAC without patch on services: the API server answers 403 every time.
    world.sim.faults.fail("patch", r"/services/checkout$", 403, count=100)

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "kube_forbidden")
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(GREEN) == 3
    assert "RollbackStarted" not in world.events()


async def test_a_previous_colour_that_never_becomes_ready_escalates_unswitched(
    world: World,
) -> None:
    world.rollout_timeout = 2.0
    await world.release(blue_after_switch=0)
    # While idle, blue got a version whose pods never turn Ready.
    await world.apps.patch_namespaced_deployment(
        BLUE.name,
        NS,
        [{"op": "replace", "path": "/spec/template/metadata/annotations", "value": NEVER_READY}],
        _content_type="application/json-patch+json",
    )

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ESCALATED
    assert result.reason_code == "previous_color_not_ready"
    assert "was not switched: manual rollback needed" in result.reason
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(GREEN) == 3
    assert "RollbackStarted" not in world.events()


async def test_a_gitops_owner_that_cannot_be_paused_stops_it_before_any_switch(
    world: World,
) -> None:
    # Argo CD would re-apply the bad colour's selector: no pause, no switch.
    await world.release(blue_after_switch=0, green_labels={"argocd.argoproj.io/instance": "ghost"})
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(BLUE) == 0
    writes = [r for r in world.sim.requests.since(mark) if r.is_write and "/events" not in r.path]
    # Only the state annotation on green (PLANNING, then ESCALATED) was written.
    assert {r.path.rsplit("/", 1)[1] for r in writes} == {"checkout-green"}
    _, summary, details = world.pager.pages[-1]
    assert details["gitops"]["owner"] == "argocd:ghost" and "revert the change in Git" in summary


async def test_an_unknown_strategy_on_the_service_escalates_before_any_write(
    world: World,
) -> None:
    await world.release(service_annotations={"rollbackd.io/strategy": "purple"})
    mark = world.sim.requests.mark()
    result = await world.executor().run(*rollback_green())
    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "strategy_unknown")
    writes = [
        r
        for r in world.sim.requests.since(mark)
        if r.is_write and ("/services/" in r.path or r.path.endswith("checkout-blue"))
    ]
    assert writes == []
    assert world.service()["spec"]["selector"]["version"] == "green"


async def test_facts_from_the_watch_cache_tell_the_decision_about_the_switch(
    world: World,
) -> None:
    await world.release()
    await until(
        lambda: (
            (f := world.kube.facts(GREEN, now=datetime.now(UTC)).bluegreen) is not None
            and f.live_color == "green"
            and f.switched_by == "kubectl-patch"
        )
    )
    facts = world.kube.facts(GREEN, now=datetime.now(UTC)).bluegreen
    assert facts is not None
    assert facts.previous == "checkout-blue" and facts.previous_since is not None
    assert facts.switched_at is not None
    assert datetime.now(UTC) - facts.switched_at < timedelta(seconds=30)
    assert world.kube.facts(BLUE, now=datetime.now(UTC)).bluegreen is not None
    # Services carry only what the facts read in the cache.
    cached = world.kube.cache.services(NS)
    assert json.dumps(cached).count("managedFields") == 1


# --- GitOps: the Service's own owner ------------------------------------------------------

SHOP_APP = {"argocd.argoproj.io/instance": "shop"}  # green's Application
ROUTING_APP = {"argocd.argoproj.io/instance": "shop-routing"}  # the Service's, when separate


def argocd(world: World, *names: str) -> None:
    """Argo CD's namespace and an auto-syncing Application per name."""
    world.sim.store.create("v1/namespaces", {"metadata": {"name": "argocd"}})
    for name in names:
        world.sim.store.create(APPLICATIONS, application(name))


def auto_sync(world: World, name: str) -> bool:
    app = world.sim.store.peek(APPLICATIONS, "argocd", name)
    assert app is not None
    return "automated" in app["spec"].get("syncPolicy", {})


def application_patches(world: World, mark: Any) -> list[str]:
    return [
        r.path.rsplit("/", 1)[1]
        for r in world.sim.requests.since(mark)
        if r.method == "PATCH" and "/applications/" in r.path
    ]


async def test_a_service_owned_by_another_application_is_paused_too_before_the_switch(
    world: World,
) -> None:
    argocd(world, "shop", "shop-routing")
    await world.release(green_labels=SHOP_APP, service_labels=ROUTING_APP)
    log = StoreLog(world.sim, APPLICATIONS, "v1/services")
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())
    log.stop()

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert not auto_sync(world, "shop") and not auto_sync(world, "shop-routing")
    assert sorted(application_patches(world, mark)) == ["shop", "shop-routing"]
    # Both pauses land before the selector is switched back.
    switched = log.first("v1/services", lambda svc: svc["spec"]["selector"]["version"] == "blue")
    paused = [
        log.first(APPLICATIONS, lambda app, n=name: app["metadata"]["name"] == n)  # type: ignore[misc]
        for name in ("shop", "shop-routing")
    ]
    assert -1 < max(paused) < switched, (paused, switched)
    # Named on the pages, the journal and the Events, the Service's owner as such.
    kind, summary, details = world.pager.pages[0]
    assert kind is NotificationKind.ROLLBACK_STARTED
    assert (
        "managed by argocd:shop and argocd:shop-routing (Service default/checkout): "
        "auto-sync paused; revert the change in Git"
    ) in summary, summary
    assert [p["name"] for p in details["gitops"]["also_paused"]] == ["shop-routing"]
    messages = [m for k, m, _ in world.recorder.events if k == "gitops_paused"]
    assert len(messages) == 2 and "owner of Service default/checkout" in messages[1], messages
    assert world.events().count("GitOpsPaused") == 2
    assert "argocd:shop-routing" in world.pager.pages[-1][1]  # the resolve page too


async def test_a_service_in_the_deployments_own_application_pauses_it_once(world: World) -> None:
    argocd(world, "shop")
    await world.release(green_labels=SHOP_APP, service_labels=SHOP_APP)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == ["shop"]
    assert [k for k, _, _ in world.recorder.events].count("gitops_paused") == 1
    _, summary, details = world.pager.pages[0]
    assert "managed by argocd:shop: auto-sync paused" in summary and "also_paused" not in details


async def test_a_service_whose_owner_cannot_be_paused_escalates_with_nothing_switched(
    world: World,
) -> None:
    # The Service's Application does not exist: its sync could still switch back.
    argocd(world, "shop")
    await world.release(blue_after_switch=0, green_labels=SHOP_APP, service_labels={**ROUTING_APP})
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "Application argocd/shop-routing not found" in result.reason
    assert "argocd:shop stays paused" in result.reason  # the human knows what to resume
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(BLUE) == 0
    writes = [
        r.path.rsplit("/", 1)[1]
        for r in world.sim.requests.since(mark)
        if r.is_write and "/events" not in r.path
    ]
    assert set(writes) == {"checkout-green", "shop"}  # the state annotation and one pause
    _, summary, details = world.pager.pages[-1]
    assert details["gitops"]["owner"] == "argocd:shop-routing"
    assert "auto-sync could not be paused, so nothing was rolled back" in summary


async def test_a_kill_after_both_pauses_resumes_without_pausing_again(world: World) -> None:
    argocd(world, "shop", "shop-routing")
    await world.release(green_labels=SHOP_APP, service_labels=ROUTING_APP)
    paused_twice = asyncio.Event()

    async def hang_after_the_second_pause(kind: str) -> None:
        if kind == "gitops_paused" and not auto_sync(world, "shop-routing"):
            paused_twice.set()
            await asyncio.Event().wait()

    world.recorder.on_event = hang_after_the_second_pause
    await kill_once(world, paused_twice)
    world.recorder.on_event = None
    state = decode_state(world.annotations(GREEN)[ANNOTATION_ROLLBACK])
    assert state.phase is Phase.PLANNING  # killed between the pauses and the first write
    assert world.service()["spec"]["selector"]["version"] == "green"
    mark = world.sim.requests.mark()
    world.pager.pages.clear()

    result = await world.executor().resume(GREEN, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == []  # both already paused by this rollback
    assert world.service()["spec"]["selector"]["version"] == "blue"
    _, summary, _ = world.pager.pages[0]
    assert "argocd:shop and argocd:shop-routing (Service default/checkout)" in summary, summary


async def test_a_rollback_resumed_mid_switch_still_names_the_services_owner(
    world: World,
) -> None:
    argocd(world, "shop", "shop-routing")
    await world.release(
        blue_annotations=SLOW_READY,
        blue_after_switch=0,
        green_labels=SHOP_APP,
        service_labels=ROUTING_APP,
    )
    state, _ = await kill_when(world, lambda: world.replicas(BLUE) == 3)
    assert state.phase is Phase.ROLLING_BACK
    world.pager.pages.clear()
    mark = world.sim.requests.mark()

    result = await world.executor().resume(GREEN, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == []
    summaries = [summary for _, summary, _ in world.pager.pages]
    assert summaries and all(
        "argocd:shop and argocd:shop-routing (Service default/checkout)" in s for s in summaries
    ), summaries
