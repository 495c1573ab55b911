"""The other GitOps owners a rollback pauses, when the API server fails the pause.

A blue-green Service in its own Argo CD Application (or Flux Kustomization),
a previous colour the rollback scales up, a canary's HTTPRoute: each owner is
paused before the object is written (``Restore.gitops_objects``). Incidents
are when API servers throttle and fail, so a 5xx or a 429 (with Retry-After)
on that pause is waited out within the rollback's retry budget and the
rollback proceeds; a refusal (403) or a failure that outlasts the budget
escalates ``gitops_pause_failed`` with nothing written to the target's
template, the Service, the previous colour or the route, and the page names
the owner already paused, which stays paused for a human to resume. The
worlds are the blue-green and canary executor tests'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from rollbackd.model import Phase
from rollbackd.notify.base import NotificationKind
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_bluegreen import (
    BLUE,
    GREEN,
    NS,
    ROUTING_APP,
    SHOP_APP,
    application_patches,
    argocd,
    auto_sync,
    connected,
    rollback_green,
)
from tests.integration.test_executor_bluegreen import World as BlueGreenWorld
from tests.integration.test_executor_canary import CANARY, rollback_canary
from tests.integration.test_executor_canary import World as CanaryWorld
from tests.integration.test_executor_gitops_others import BLUE_APP, blue_at_zero_in, routed_canary
from tests.integration.test_gitops import KUSTOMIZATIONS, flux_object, namespace

pytestmark = pytest.mark.integration

SHOP_ROUTING = r"/applications/shop-routing$"
SHOP_BLUE = r"/applications/shop-blue$"
# A retry budget the persistent faults below outlast quickly.
SHORT_BUDGET = 1.5


@pytest_asyncio.fixture
async def bg_world(kubesim: KubeSim) -> AsyncIterator[BlueGreenWorld]:
    async with connected(kubesim, BlueGreenWorld) as started:
        yield started


@pytest_asyncio.fixture
async def canary_world(kubesim: KubeSim) -> AsyncIterator[CanaryWorld]:
    async with connected(kubesim, CanaryWorld) as started:
        yield started


def requests_to(world: BlueGreenWorld, mark: int, method: str, pattern: str) -> list[float]:
    """Arrival times of the requests since ``mark`` whose path ends with ``pattern``."""
    return [
        r.at
        for r in world.sim.requests.since(mark)
        if r.method == method and r.path.endswith(pattern)
    ]


def writes_since(world: BlueGreenWorld, mark: int) -> set[str]:
    """Names of the objects written since ``mark`` (Events and refused writes aside)."""
    return {
        r.path.rsplit("/", 1)[1]
        for r in world.sim.requests.since(mark)
        if r.is_write and "/events" not in r.path and 200 <= r.status < 300
    }


def assert_escalation_names_the_kept_pause(world: BlueGreenWorld, failed_owner: str) -> None:
    """The last page escalates the failed pause and tells the human what to resume."""
    kind, summary, details = world.pager.pages[-1]
    assert kind is NotificationKind.ESCALATION
    assert details["reason_code"] == "gitops_pause_failed"
    assert details["gitops"]["owner"] == failed_owner
    assert "argocd:shop stays paused" in summary, summary
    assert "nothing was rolled back" in summary, summary


# --- a blue-green Service in its own Application -------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_a_service_owner_pause_failing_with_5xx_is_retried_and_the_switch_follows(
    bg_world: BlueGreenWorld, status: int
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-routing")
    await world.release(green_labels=SHOP_APP, service_labels=ROUTING_APP)
    world.sim.faults.fail("patch", SHOP_ROUTING, status, count=2)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert len(requests_to(world, mark, "PATCH", "/shop-routing")) == 3  # two failed, one took
    assert not auto_sync(world, "shop") and not auto_sync(world, "shop-routing")
    assert world.service()["spec"]["selector"]["version"] == "blue"
    _, summary, _ = world.pager.pages[0]
    assert "argocd:shop-routing (Service default/checkout): auto-sync paused" in summary, summary


async def test_a_throttled_service_owner_pause_waits_for_retry_after_then_proceeds(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-routing")
    await world.release(green_labels=SHOP_APP, service_labels=ROUTING_APP)
    world.sim.faults.fail("get", SHOP_ROUTING, 429, count=1)  # Retry-After: 1
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    throttled, retried = requests_to(world, mark, "GET", "/shop-routing")[:2]
    assert retried - throttled >= 0.9, "the retry did not honour Retry-After"
    assert not auto_sync(world, "shop-routing")
    assert world.service()["spec"]["selector"]["version"] == "blue"


async def test_a_service_owner_failing_past_the_budget_escalates_with_nothing_switched(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    world.rollout_timeout = SHORT_BUDGET  # the retry budget defaults to it
    argocd(world, "shop", "shop-routing")
    await world.release(blue_after_switch=0, green_labels=SHOP_APP, service_labels=ROUTING_APP)
    world.sim.faults.fail_for("patch", SHOP_ROUTING, 503, duration=60)
    green_template = world.sim.store.get("apps/v1/deployments", NS, GREEN.name)["spec"]["template"]
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "pausing Application argocd/shop-routing failed: 503" in (result.reason or "")
    assert len(requests_to(world, mark, "PATCH", "/shop-routing")) > 1  # retried, then gave up
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(BLUE) == 0
    assert world.sim.store.get("apps/v1/deployments", NS, GREEN.name)["spec"]["template"] == (
        green_template
    )
    assert writes_since(world, mark) == {"checkout-green", "shop"}  # state annotation, one pause
    assert not auto_sync(world, "shop") and auto_sync(world, "shop-routing")
    assert_escalation_names_the_kept_pause(world, "argocd:shop-routing")


async def test_a_service_owner_refusing_the_pause_escalates_without_retrying(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-routing")
    await world.release(blue_after_switch=0, green_labels=SHOP_APP, service_labels=ROUTING_APP)
    world.sim.faults.fail("patch", SHOP_ROUTING, 403, count=100)  # RBAC: retrying cannot help
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "403" in (result.reason or "")
    assert len(requests_to(world, mark, "PATCH", "/shop-routing")) == 1
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert world.replicas(BLUE) == 0
    assert writes_since(world, mark) == {"checkout-green", "shop"}
    assert_escalation_names_the_kept_pause(world, "argocd:shop-routing")


async def test_a_service_in_a_throttled_flux_kustomization_is_suspended_before_the_switch(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop")
    namespace(world.sim, "flux-system")
    world.sim.store.create(KUSTOMIZATIONS, flux_object("Kustomization", "routing", "flux-system"))
    flux_labels = {
        "kustomize.toolkit.fluxcd.io/name": "routing",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
    await world.release(green_labels=SHOP_APP, service_labels=flux_labels)
    world.sim.faults.fail("patch", r"/kustomizations/routing$", 429, count=1)
    world.sim.faults.fail("patch", r"/kustomizations/routing$", 502, count=1)

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    kustomization = world.sim.store.get(KUSTOMIZATIONS, "flux-system", "routing")
    assert kustomization["spec"]["suspend"] is True
    assert world.service()["spec"]["selector"]["version"] == "blue"
    _, summary, _ = world.pager.pages[0]
    assert "flux:kustomization/routing (Service default/checkout)" in summary, summary


# --- a blue-green previous colour scaled up ---------------------------------------------------


async def test_a_previous_colour_owner_pause_failing_with_503_is_retried_then_scaled(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-blue")
    await blue_at_zero_in(world, BLUE_APP)
    world.sim.faults.fail("get", SHOP_BLUE, 503, count=1)
    world.sim.faults.fail("patch", SHOP_BLUE, 503, count=1)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert sorted(application_patches(world, mark)) == ["shop", "shop-blue", "shop-blue"]
    assert not auto_sync(world, "shop-blue")
    assert world.replicas(BLUE) == 3


@pytest.mark.parametrize("status", [403, 503])
async def test_a_previous_colour_owner_that_stays_unpausable_escalates_nothing_scaled(
    bg_world: BlueGreenWorld, status: int
) -> None:
    world = bg_world
    world.rollout_timeout = SHORT_BUDGET
    argocd(world, "shop", "shop-blue")
    await blue_at_zero_in(world, BLUE_APP)
    world.sim.faults.fail_for("patch", SHOP_BLUE, status, duration=60)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert f"pausing Application argocd/shop-blue failed: {status}" in (result.reason or "")
    assert world.replicas(BLUE) == 0
    assert world.service()["spec"]["selector"]["version"] == "green"
    assert writes_since(world, mark) == {"checkout-green", "shop"}
    assert auto_sync(world, "shop-blue")
    assert_escalation_names_the_kept_pause(world, "argocd:shop-blue")


# --- a canary's HTTPRoute ---------------------------------------------------------------------


async def test_a_route_owner_throttled_then_failing_once_is_paused_and_the_weight_set(
    canary_world: CanaryWorld,
) -> None:
    world = canary_world
    argocd(world, "shop", "shop-routing")
    await routed_canary(world, ROUTING_APP)
    world.sim.faults.fail("get", SHOP_ROUTING, 429, count=1)
    world.sim.faults.fail("patch", SHOP_ROUTING, 504, count=1)

    result = await world.executor().run(*rollback_canary())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert not auto_sync(world, "shop-routing")
    assert world.weights() == {"checkout-stable": 100, "checkout-canary": 0}


async def test_a_route_owner_failing_past_the_budget_escalates_with_the_weight_untouched(
    canary_world: CanaryWorld,
) -> None:
    world = canary_world
    world.rollout_timeout = SHORT_BUDGET
    argocd(world, "shop", "shop-routing")
    await routed_canary(world, ROUTING_APP)
    world.sim.faults.fail_for("get", SHOP_ROUTING, 429, duration=60)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "reading Application argocd/shop-routing failed: 429" in (result.reason or "")
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}
    assert world.replicas(CANARY) == 1
    assert writes_since(world, mark) == {"checkout-canary", "shop"}
    assert auto_sync(world, "shop-routing")
    assert_escalation_names_the_kept_pause(world, "argocd:shop-routing")
