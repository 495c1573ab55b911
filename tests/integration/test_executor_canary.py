"""The canary executor against kubesim: scale the canary to 0, or shift its route weight.

Every test creates the stable ``checkout`` (3 replicas, track=stable) and the
canary ``checkout-canary`` (annotated ``rollbackd.io/canary-of: checkout``)
and asks the executor to take the canary out of traffic. Kills are
cancellations at a chosen step followed by ``Executor.resume`` on what the
canary records, as a restarted daemon does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from rollbackd.canary import ANNOTATION_CANARY, ANNOTATION_CANARY_REPLICAS
from rollbackd.model import ANNOTATION_ROLLBACK, Decision, Phase, Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.state import RollbackState, decode_state
from rollbackd.strategies import RolloutStatus
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_bluegreen import World as BlueGreenWorld
from tests.integration.test_executor_bluegreen import connected
from tests.integration.test_executor_rolling import pending_rollback

pytestmark = pytest.mark.integration

NS = "default"
STABLE = Target(NS, "checkout")
CANARY = Target(NS, "checkout-canary")
NEVER_READY = {"kubesim.rollbackd.io/ready": "false"}
GATEWAY = ("gateway.networking.k8s.io", "v1", NS, "httproutes")


def deployment(
    name: str,
    track: str,
    image: str,
    replicas: int,
    *,
    annotations: Mapping[str, str] | None = None,
    template_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"app": "checkout", "track": track}
    return {
        "metadata": {"name": name, "namespace": NS, "annotations": dict(annotations or {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(template_annotations or {})},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def service(name: str, selector: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": dict(selector), "ports": [{"port": 80, "targetPort": 8080}]},
    }


def route(stable_weight: int = 90, canary_weight: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout"},
        "spec": {
            "parentRefs": [{"name": "public"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "checkout-stable", "port": 80, "weight": stable_weight},
                        {"name": "checkout-canary", "port": 80, "weight": canary_weight},
                    ]
                }
            ],
        },
    }


class World(BlueGreenWorld):
    """The blue-green tests' world (executor, replicas, annotations), with a canary release."""

    async def release_canary(
        self,
        *,
        canary_of: str = "checkout",
        canary_route: str | None = None,
        stable_template: Mapping[str, str] | None = None,
        with_route: bool = False,
    ) -> None:
        """stable serves; the canary is deployed beside it behind one Service (and a route)."""
        stable = deployment(
            "checkout", "stable", "checkout:1.4", 3, template_annotations=stable_template
        )
        await self.apps.create_namespaced_deployment(NS, stable)
        annotations = {"rollbackd.io/canary-of": canary_of}
        if canary_route is not None:
            annotations["rollbackd.io/canary-route"] = canary_route
        canary = deployment("checkout-canary", "canary", "checkout:1.5", 1, annotations=annotations)
        await self.apps.create_namespaced_deployment(NS, canary)
        await self.core.create_namespaced_service(NS, service("checkout", {"app": "checkout"}))
        if with_route:
            for track in ("stable", "canary"):
                selector = {"app": "checkout", "track": track}
                await self.core.create_namespaced_service(
                    NS, service(f"checkout-{track}", selector)
                )
            custom = client.CustomObjectsApi(self.apps.api_client)
            await custom.create_namespaced_custom_object(*GATEWAY, route())
        outcome = await self.kube.wait_rollout_complete(CANARY, timeout=20)
        assert outcome.status is RolloutStatus.COMPLETE, outcome.message
        if not stable_template:
            outcome = await self.kube.wait_rollout_complete(STABLE, timeout=20)
            assert outcome.status is RolloutStatus.COMPLETE, outcome.message

    def weights(self) -> dict[str, int]:
        found = self.sim.store.peek("gateway.networking.k8s.io/v1/httproutes", NS, "checkout")
        assert found is not None
        refs = found["spec"]["rules"][0]["backendRefs"]
        return {ref["name"]: ref.get("weight", 1) for ref in refs}

    async def set_weights(self, stable: int, canary: int) -> None:
        ops = [
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": stable},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": canary},
        ]
        await self.kube.request(
            "PATCH",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/checkout",
            body=ops,
            content_type="application/json-patch+json",
        )

    def event_message(self, reason: str) -> str:
        """The message of rollbackd's Event with this reason ("" when there is none)."""
        events = self.sim.store.list("v1/events", NS)
        return next((e.get("message", "") for e in events if e.get("reason") == reason), "")


def rollback_canary() -> tuple[Rollback, Decision]:
    return pending_rollback(
        CANARY,
        "rb-20260101-0077",
        reason="error_ratio 30% > 5%",
        decision_reason="take canary checkout-canary out of traffic",
        revisions=(1, 1),
    )


@pytest_asyncio.fixture
async def world(kubesim: KubeSim) -> AsyncIterator[World]:
    async with connected(kubesim, World) as started:
        yield started


# --- by replicas ---------------------------------------------------------------------


async def test_scales_the_canary_to_zero_records_its_replicas_and_verifies_the_stable(
    world: World,
) -> None:
    await world.release_canary()
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_canary())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.replicas(CANARY) == 0
    assert world.annotations(CANARY)[ANNOTATION_CANARY_REPLICAS] == "1"  # for the human
    assert world.replicas(STABLE) == 3  # the stable is only read, never written
    writes = [r for r in world.sim.requests.since(mark) if r.is_write and "/deployments/" in r.path]
    assert all(r.path.endswith("/checkout-canary") for r in writes)
    plan = next(data for kind, _, data in world.recorder.events if kind == "plan")
    assert plan is not None and plan["strategy"] == "canary"
    assert plan["changes"]["replicas_scaled"] == [
        {"deployment": "checkout-canary", "from": 1, "to": 0}
    ]
    assert ANNOTATION_CANARY_REPLICAS in world.event_message("RollbackStarted")
    assert world.event_message("RollbackVerified"), world.events()


async def test_a_kill_after_the_one_write_resumes_without_scaling_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.release_canary()
    task = asyncio.create_task(world.executor().run(*rollback_canary()))
    async with asyncio.timeout(20):
        while world.replicas(CANARY) != 0:  # noqa: ASYNC110  (kubesim's store has no change event)
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    annotations = world.annotations(CANARY)
    # The record and the scale-down are one write: never one without the other.
    assert ANNOTATION_CANARY in annotations and annotations[ANNOTATION_CANARY_REPLICAS] == "1"
    state = decode_state(annotations[ANNOTATION_ROLLBACK])
    sent: list[dict[str, Any]] = []
    patch = world.kube.patch_deployment

    async def recording(target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        sent.extend(ops)
        return await patch(target, ops)

    monkeypatch.setattr(world.kube, "patch_deployment", recording)

    result = await world.executor().resume(CANARY, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert [op for op in sent if op["path"] == "/spec/replicas"] == []  # not scaled again
    assert world.replicas(CANARY) == 0
    assert world.annotations(CANARY)[ANNOTATION_CANARY_REPLICAS] == "1"


@pytest.mark.parametrize(
    ("canary_of", "code", "words"),
    [
        ("checkout-gone", "canary_stable_not_found", "checkout-gone, which does not exist"),
        ("checkout-canary", "canary_of_invalid", "names the canary itself"),
    ],
)
async def test_a_canary_of_naming_no_usable_deployment_escalates_with_nothing_scaled(
    world: World, canary_of: str, code: str, words: str
) -> None:
    await world.release_canary(canary_of=canary_of)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, code)
    assert words in result.reason
    assert world.replicas(CANARY) == 1
    assert ANNOTATION_CANARY_REPLICAS not in world.annotations(CANARY)
    assert NotificationKind.ESCALATION in world.pager.kinds


async def test_a_stable_that_is_not_ready_escalates_with_nothing_scaled(world: World) -> None:
    await world.release_canary(stable_template=NEVER_READY)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "canary_stable_not_ready")
    assert "the stable Deployment checkout of canary checkout-canary is not Ready" in result.reason
    assert world.replicas(CANARY) == 1


async def test_a_canary_changed_between_read_and_patch_is_not_overwritten(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.release_canary()
    patch = world.kube.patch_deployment
    edited = False

    async def a_human_scales_first(target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal edited
        if target == CANARY and not edited:
            edited = True  # a human scales the canary up after rollbackd's read
            await world.apps.patch_namespaced_deployment(
                CANARY.name,
                NS,
                [{"op": "replace", "path": "/spec/replicas", "value": 2}],
                _content_type="application/json-patch+json",
            )
        return await patch(target, ops)

    monkeypatch.setattr(world.kube, "patch_deployment", a_human_scales_first)

    result = await world.executor().run(*rollback_canary())

    # The precondition failed, the re-plan recorded what is there now: 2, never the stale 1.
    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.replicas(CANARY) == 0
    assert world.annotations(CANARY)[ANNOTATION_CANARY_REPLICAS] == "2"


# --- by HTTPRoute ---------------------------------------------------------------------


async def test_sets_the_canary_weight_to_zero_and_the_stable_to_the_total(world: World) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)

    result = await world.executor().run(*rollback_canary())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.weights() == {"checkout-stable": 100, "checkout-canary": 0}
    assert world.replicas(CANARY) == 1  # weighted: the canary's pods stay for inspection
    record = json.loads(world.annotations(CANARY)[ANNOTATION_CANARY])
    assert record["before"] == [[0, 1, 10], [0, 0, 90]]
    plan = next(data for kind, _, data in world.recorder.events if kind == "plan")
    assert plan is not None and plan["changes"]["weights_after"] == [[0, 1, 0], [0, 0, 100]]


async def killed_at_the_route_write(world: World, monkeypatch: pytest.MonkeyPatch) -> RollbackState:
    """Run the rollback and kill it as it is about to write the route; the state it left."""
    reached = asyncio.Event()

    async def killed_here(namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        reached.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(world.kube, "patch_httproute", killed_here)
    task = asyncio.create_task(world.executor().run(*rollback_canary()))
    async with asyncio.timeout(20):
        await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    return decode_state(world.annotations(CANARY)[ANNOTATION_ROLLBACK])


async def test_a_kill_between_the_record_and_the_route_write_resumes_and_writes_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)
    state = await killed_at_the_route_write(world, monkeypatch)
    assert state.phase is Phase.ROLLING_BACK
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}
    mark = world.sim.requests.mark()

    result = await world.executor().resume(CANARY, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.weights() == {"checkout-stable": 100, "checkout-canary": 0}
    writes = [r for r in world.sim.requests.since(mark) if r.is_write and "/httproutes/" in r.path]
    assert len(writes) == 1


async def test_weights_a_human_changed_meanwhile_are_a_conflict_and_stay_theirs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)
    read = world.kube.read_httproute
    reads = 0

    async def read_then_a_human_edits(namespace: str, name: str) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        found = await read(namespace, name)
        if (
            reads == 2
        ):  # after the plan's read, rollbackd's re-read; the human lands before its patch
            await world.set_weights(50, 50)
        return found

    monkeypatch.setattr(world.kube, "read_httproute", read_then_a_human_edits)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "target_changed")
    assert "HTTPRoute checkout was changed by someone else" in result.reason
    assert world.weights() == {"checkout-stable": 50, "checkout-canary": 50}


async def test_a_missing_route_escalates_with_nothing_written(world: World) -> None:
    await world.release_canary(canary_route="checkout-typo", with_route=True)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "canary_route_invalid")
    assert "HTTPRoute checkout-typo does not exist" in result.reason
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}
    assert ANNOTATION_CANARY not in world.annotations(CANARY)
    assert world.replicas(CANARY) == 1


async def test_a_route_without_the_canarys_service_escalates_with_nothing_written(
    world: World,
) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)
    await world.core.delete_namespaced_service("checkout-canary", NS)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "canary_route_invalid")
    assert "has no backend for the canary's Service" in result.reason
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}


async def test_a_route_write_the_api_server_fails_once_is_retried_and_made_once(
    world: World,
) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)
    world.sim.faults.fail("patch", r"/httproutes/checkout$", 503, count=1)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_canary())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    patches = [
        r.status
        for r in world.sim.requests.since(mark)
        if r.method == "PATCH" and r.path.endswith("/httproutes/checkout")
    ]
    assert patches == [503, 200]
    assert world.weights() == {"checkout-stable": 100, "checkout-canary": 0}


async def test_a_route_rollbackd_may_not_patch_escalates_with_nothing_re_weighted(
    world: World,
) -> None:
    await world.release_canary(canary_route="checkout", with_route=True)
    # RBAC without patch on httproutes: the API server answers 403 every time.
    world.sim.faults.fail("patch", r"/httproutes/checkout$", 403, count=100)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "kube_forbidden")
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}
    assert world.replicas(CANARY) == 1


async def test_facts_from_the_watch_cache_tell_the_decision_about_the_canary(
    world: World,
) -> None:
    await world.release_canary()

    async with asyncio.timeout(10):
        while (facts := world.kube.facts(CANARY, now=datetime.now(UTC))).canary is None:  # noqa: ASYNC110  (the watch cache has no change event)
            await asyncio.sleep(0.01)

    assert facts.canary is not None
    assert (facts.canary.stable, facts.canary.replicas, facts.canary.problem) == (
        "checkout",
        1,
        None,
    )
    assert world.kube.facts(STABLE, now=datetime.now(UTC)).canary is None
