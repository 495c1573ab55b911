"""GitOps owners of the other objects a rollback writes are paused before the writes.

A canary's HTTPRoute (its weight set to 0: a sync of the route's Application
would put it back) and a blue-green previous colour the rollback scales up
(a sync of its Application could scale it down again), when their owner is
not the target's. The worlds are the canary and blue-green executor tests'
(kubesim, Argo CD Applications in namespace argocd).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

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
from tests.integration.test_executor_canary import (
    CANARY,
    killed_at_the_route_write,
    rollback_canary,
)
from tests.integration.test_executor_canary import World as CanaryWorld
from tests.integration.test_gitops import APPLICATIONS, StoreLog

pytestmark = pytest.mark.integration

ROUTES = "gateway.networking.k8s.io/v1/httproutes"
BLUE_APP = {"argocd.argoproj.io/instance": "shop-blue"}  # blue's own Application


@pytest_asyncio.fixture
async def canary_world(kubesim: KubeSim) -> AsyncIterator[CanaryWorld]:
    async with connected(kubesim, CanaryWorld) as started:
        yield started


@pytest_asyncio.fixture
async def bg_world(kubesim: KubeSim) -> AsyncIterator[BlueGreenWorld]:
    async with connected(kubesim, BlueGreenWorld) as started:
        yield started


async def label(world: BlueGreenWorld, path: str, labels: Mapping[str, str]) -> None:
    await world.kube.request(
        "PATCH",
        path,
        body={"metadata": {"labels": dict(labels)}},
        content_type="application/merge-patch+json",
    )


async def routed_canary(world: CanaryWorld, route_labels: Mapping[str, str]) -> None:
    """A weighted canary in Application shop; its HTTPRoute labelled ``route_labels``."""
    await world.release_canary(canary_route="checkout", with_route=True)
    await label(world, f"/apis/apps/v1/namespaces/{NS}/deployments/{CANARY.name}", SHOP_APP)
    route = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/checkout"
    await label(world, route, route_labels)


# --- canary by route -------------------------------------------------------------------


async def test_a_route_in_another_application_is_paused_before_its_weight_is_set(
    canary_world: CanaryWorld,
) -> None:
    world = canary_world
    argocd(world, "shop", "shop-routing")
    await routed_canary(world, ROUTING_APP)
    log = StoreLog(world.sim, APPLICATIONS, ROUTES)

    result = await world.executor().run(*rollback_canary())
    log.stop()

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert world.weights() == {"checkout-stable": 100, "checkout-canary": 0}
    assert not auto_sync(world, "shop") and not auto_sync(world, "shop-routing")
    reweighted = log.first(ROUTES, lambda r: r["spec"]["rules"][0]["backendRefs"][1]["weight"] == 0)
    paused = log.first(APPLICATIONS, lambda app: app["metadata"]["name"] == "shop-routing")
    assert -1 < paused < reweighted, (paused, reweighted)
    kind, summary, details = world.pager.pages[0]
    assert kind is NotificationKind.ROLLBACK_STARTED
    assert "argocd:shop-routing (HTTPRoute default/checkout)" in summary, summary
    assert [p["name"] for p in details["gitops"]["also_paused"]] == ["shop-routing"]


async def test_killed_before_the_route_write_a_resume_names_the_paused_route_owner(
    canary_world: CanaryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = canary_world
    argocd(world, "shop", "shop-routing")
    await routed_canary(world, ROUTING_APP)
    state = await killed_at_the_route_write(world, monkeypatch)
    assert state.phase is Phase.ROLLING_BACK and not auto_sync(world, "shop-routing")
    world.pager.pages.clear()
    mark = world.sim.requests.mark()

    result = await world.executor().resume(CANARY, state)

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == []  # paused once, by the first process
    assert "argocd:shop-routing (HTTPRoute default/checkout)" in world.pager.pages[-1][1]


async def test_a_route_in_the_canarys_own_application_pauses_it_once(
    canary_world: CanaryWorld,
) -> None:
    world = canary_world
    argocd(world, "shop")
    await routed_canary(world, SHOP_APP)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_canary())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == ["shop"]


async def test_a_route_whose_owner_cannot_be_paused_escalates_with_the_weight_untouched(
    canary_world: CanaryWorld,
) -> None:
    world = canary_world
    argocd(world, "shop")  # the route's Application shop-routing does not exist
    await routed_canary(world, ROUTING_APP)

    result = await world.executor().run(*rollback_canary())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "Application argocd/shop-routing not found" in (result.reason or "")
    assert "argocd:shop stays paused" in (result.reason or "")
    assert world.weights() == {"checkout-stable": 90, "checkout-canary": 10}


# --- blue-green: the previous colour ---------------------------------------------------


async def blue_at_zero_in(world: BlueGreenWorld, blue_labels: Mapping[str, str]) -> None:
    """green (Application shop) switched live; blue, labelled ``blue_labels``, scaled to 0."""
    await world.release(blue_after_switch=0, green_labels=SHOP_APP, service_labels=SHOP_APP)
    await label(world, f"/apis/apps/v1/namespaces/{NS}/deployments/{BLUE.name}", blue_labels)


async def test_a_previous_colour_in_another_application_is_paused_before_it_is_scaled_up(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-blue")
    await blue_at_zero_in(world, BLUE_APP)
    log = StoreLog(world.sim, APPLICATIONS, "apps/v1/deployments")

    result = await world.executor().run(*rollback_green())
    log.stop()

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert not auto_sync(world, "shop") and not auto_sync(world, "shop-blue")
    scaled = log.first(
        "apps/v1/deployments",
        lambda d: d["metadata"]["name"] == BLUE.name and d["spec"]["replicas"] > 0,
    )
    paused = log.first(APPLICATIONS, lambda app: app["metadata"]["name"] == "shop-blue")
    assert -1 < paused < scaled, (paused, scaled)
    _, summary, _ = world.pager.pages[0]
    assert "argocd:shop-blue (Deployment default/checkout-blue)" in summary, summary
    assert "argocd:shop-blue" in world.pager.pages[-1][1]  # the resolve page too


async def test_a_previous_colour_that_is_not_scaled_keeps_its_owner_syncing(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop", "shop-blue")
    await world.release(green_labels=SHOP_APP, service_labels=SHOP_APP)  # blue keeps 3
    await label(world, f"/apis/apps/v1/namespaces/{NS}/deployments/{BLUE.name}", BLUE_APP)
    mark = world.sim.requests.mark()

    result = await world.executor().run(*rollback_green())

    assert result.phase is Phase.ROLLBACK_COMPLETED, result.reason
    assert application_patches(world, mark) == ["shop"]
    assert auto_sync(world, "shop-blue")


async def test_a_previous_colour_whose_owner_cannot_be_paused_escalates_nothing_scaled(
    bg_world: BlueGreenWorld,
) -> None:
    world = bg_world
    argocd(world, "shop")  # blue's Application shop-blue does not exist
    await blue_at_zero_in(world, BLUE_APP)

    result = await world.executor().run(*rollback_green())

    assert (result.phase, result.reason_code) == (Phase.ESCALATED, "gitops_pause_failed")
    assert "Application argocd/shop-blue not found" in (result.reason or "")
    assert world.replicas(BLUE) == 0
    assert world.service()["spec"]["selector"]["version"] == GREEN.name.rsplit("-", 1)[1]
