"""HTTPRoute weights and Rollout aborts as the workload metrics show them to Prometheus.

A fake clock drives the controllers and the metrics, so the counts are exact:
requests = rps x seconds, with the route's requests split by weight.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.testing.kubesim.controller import Controller
from rollbackd.testing.kubesim.resources import REGISTRY, apply_defaults
from rollbackd.testing.kubesim.store import Store
from rollbackd.testing.kubesim.workload import WorkloadMetrics

from .crd_helpers import HTTPROUTES, ROLLOUTS, rollout_manifest, route_manifest, service_manifest

DEPLOYMENTS = "apps/v1/deployments"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Harness:
    def __init__(self, store: Store, controller: Controller) -> None:
        self.store = store
        self.controller = controller
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
        self.metrics = WorkloadMetrics(store, clock=lambda: self.now.timestamp())

    async def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        await self.controller.settle()

    async def ready(self) -> None:
        """Let the controllers create what they will, then every pod become Ready."""
        await self.advance(0.0)
        await self.advance(1.0)
        await self.advance(0.0)

    def create(self, key: str, manifest: dict[str, Any]) -> None:
        obj = {**manifest, "metadata": {**manifest["metadata"], "namespace": "shop"}}
        apply_defaults(REGISTRY[key], obj)  # as the API server does
        self.store.create(key, obj)

    def samples(self) -> Samples:
        return scraped(self.metrics.render())


def scraped(text: str) -> Samples:
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def requests(samples: Samples, deployment: str, code: str | None = None) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "http_requests_total"
        and dict(labels)["deployment"] == deployment
        and (code is None or dict(labels)["code"] == code)
    )


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    store = Store()
    store.create("v1/namespaces", {"metadata": {"name": "shop"}})
    clock_holder: list[Harness] = []
    controller = Controller(
        store, pod_ready_delay=1.0, resync=0.05, clock=lambda: clock_holder[0].now
    )
    store.clock = lambda: clock_holder[0].now
    clock_holder.append(Harness(store, controller))
    await controller.start()
    try:
        yield clock_holder[0]
    finally:
        await controller.stop()


def deployment(name: str, replicas: int, knobs: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": knobs},
                "spec": {"containers": [{"name": "app", "image": f"{name}:1"}]},
            },
        },
    }


async def two_versions(harness: Harness, backends: list[tuple[str, Any]]) -> None:
    """web-stable (3 pods, healthy) and web-canary (1 pod, half its requests fail), 10 rps each."""
    harness.create(DEPLOYMENTS, deployment("web-stable", 3, {"kubesim.rollbackd.io/rps": "10"}))
    harness.create(
        DEPLOYMENTS,
        deployment(
            "web-canary",
            1,
            {"kubesim.rollbackd.io/rps": "10", "kubesim.rollbackd.io/error-rate": "0.5"},
        ),
    )
    for name in ("web-stable", "web-canary"):
        harness.create("v1/services", service_manifest(name, name))
    harness.create(HTTPROUTES, route_manifest("web", backends))
    await harness.ready()
    assert requests(harness.samples(), "web-stable") == 0


async def test_weights_split_the_route_and_a_zero_weight_stops_the_canary_counters(
    harness: Harness,
) -> None:
    await two_versions(harness, [("web-stable", 90), ("web-canary", 10)])
    await harness.advance(10.0)
    # The route carries its pods' own 40 rps: 36 to the three stable pods, 4 to the canary.
    split = harness.samples()
    assert requests(split, "web-stable") == 360
    assert requests(split, "web-canary") == 40
    assert requests(split, "web-canary", "500") == 20

    route = harness.store.get(HTTPROUTES, "shop", "web")
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 100
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = 0
    harness.store.update(HTTPROUTES, route)
    await harness.advance(10.0)

    url = await harness.metrics.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            shifted = scraped(await response.text())
    finally:
        await harness.metrics.stop()
    assert requests(shifted, "web-canary") == 40, "a canary at weight 0 receives nothing"
    assert requests(shifted, "web-canary", "500") == 20
    # Stable takes all 40 rps: 133.3 more requests per pod, each counter a floor.
    assert requests(shifted, "web-stable") == 3 * math.floor(120 + 400 / 3)
    for key, value in split.items():
        assert shifted[key] >= value, key  # counters never go back


async def test_a_missing_backend_loses_its_share_and_all_zero_weights_reach_no_pod(
    harness: Harness,
) -> None:
    await two_versions(harness, [("web-stable", 1), ("ghost", 1)])
    await harness.advance(10.0)
    half = harness.samples()
    # 30 rps from the stable pods (the canary is behind no backend of this route: its own 10).
    assert requests(half, "web-stable") == 150, "the ghost's half would be a gateway 500"
    assert requests(half, "web-canary") == 100

    route = harness.store.get(HTTPROUTES, "shop", "web")
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = 0
    harness.store.update(HTTPROUTES, route)
    await harness.advance(10.0)
    zero = harness.samples()
    assert requests(zero, "web-stable") == 150
    assert harness.controller.errors == 0


async def test_a_route_rps_annotation_sets_the_route_total(harness: Harness) -> None:
    await two_versions(harness, [("web-stable", 3), ("web-canary", 1)])
    route = harness.store.get(HTTPROUTES, "shop", "web")
    route["metadata"]["annotations"] = {"kubesim.rollbackd.io/rps": "100"}
    harness.store.update(HTTPROUTES, route)
    await harness.advance(10.0)
    samples = harness.samples()
    assert requests(samples, "web-stable") == 750
    assert requests(samples, "web-canary") == 250


async def test_rollout_pods_count_under_the_rollout_and_an_abort_stops_the_canary(
    harness: Harness,
) -> None:
    healthy = {"kubesim.rollbackd.io/rps": "10"}
    harness.create(
        ROLLOUTS,
        rollout_manifest(steps=[{"setWeight": 50}, {"pause": {}}], template_annotations=healthy),
    )
    await harness.ready()
    ro = harness.store.get(ROLLOUTS, "shop", "web")
    assert ro["status"]["phase"] == "Healthy"
    bad = {**healthy, "kubesim.rollbackd.io/error-rate": "0.5"}
    ro["spec"]["template"]["metadata"]["annotations"] = bad
    harness.store.update(ROLLOUTS, ro)
    await harness.ready()  # two canary pods Ready beside two stable ones
    assert harness.store.get(ROLLOUTS, "shop", "web")["status"]["phase"] == "Paused"
    before = harness.samples()
    await harness.advance(10.0)
    during = harness.samples()
    assert requests(during, "web", "500") - requests(before, "web", "500") == 100

    ro = harness.store.get(ROLLOUTS, "shop", "web")
    ro["status"]["abort"] = True
    harness.store.update(ROLLOUTS, ro, subresource="status")
    await harness.ready()  # the replacement stable pods become Ready
    aborted = harness.samples()
    await harness.advance(10.0)
    after = harness.samples()
    assert requests(after, "web", "500") == requests(aborted, "web", "500"), "no canary left"
    assert requests(after, "web", "200") - requests(aborted, "web", "200") == 400
    assert harness.controller.errors == 0


async def test_an_abort_written_while_the_controller_is_down_is_applied_by_a_fresh_one(
    harness: Harness,
) -> None:
    """The controller keeps nothing the store does not: a new one resumes from status."""
    harness.create(ROLLOUTS, rollout_manifest(steps=[{"setWeight": 25}, {"pause": {}}]))
    await harness.ready()
    ro = harness.store.get(ROLLOUTS, "shop", "web")
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = "example/app:2.0"
    harness.store.update(ROLLOUTS, ro)
    await harness.ready()
    paused = harness.store.get(ROLLOUTS, "shop", "web")["status"]
    assert (paused["phase"], paused["currentStepIndex"]) == ("Paused", 1)

    await harness.controller.stop()
    ro = harness.store.get(ROLLOUTS, "shop", "web")
    ro["status"]["abort"] = True
    harness.store.update(ROLLOUTS, ro, subresource="status")
    fresh = Controller(harness.store, pod_ready_delay=1.0, resync=0.05, clock=lambda: harness.now)
    await fresh.start()
    harness.controller = fresh
    try:
        await harness.ready()
        status = harness.store.get(ROLLOUTS, "shop", "web")["status"]
        assert status["phase"] == "Degraded" and status["currentStepIndex"] == 0
        replicas = {
            rs["metadata"]["labels"]["rollouts-pod-template-hash"]: rs["spec"]["replicas"]
            for rs in harness.store.list("apps/v1/replicasets", "shop")
        }
        assert replicas == {status["stableRS"]: 4, status["currentPodHash"]: 0}
        assert fresh.errors == 0
    finally:
        await fresh.stop()
