"""Workload metrics: what Prometheus scrapes from the simulated pods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.testing.kubesim.controller import Controller
from rollbackd.testing.kubesim.store import Store
from rollbackd.testing.kubesim.workload import BUCKETS, Knobs, PodTraffic, WorkloadMetrics

DEPLOYMENTS = "apps/v1/deployments"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


class Harness:
    def __init__(self, store: Store, controller: Controller, clock: Clock) -> None:
        self.store = store
        self.controller = controller
        self.clock = clock
        self.metrics = WorkloadMetrics(store, clock=clock.epoch)

    async def advance(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)
        await self.controller.settle()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        result = {}
        for family in text_string_to_metric_families(self.metrics.render()):
            for sample in family.samples:
                result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return result


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = Clock()
    store = Store(clock=clock)
    store.create("v1/namespaces", {"metadata": {"name": "shop"}})
    controller = Controller(store, pod_ready_delay=1.0, resync=0.05, clock=clock)
    await controller.start()
    try:
        yield Harness(store, controller, clock)
    finally:
        await controller.stop()


def deployment(name: str, knobs: dict[str, str], replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": knobs},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }


def requests_of(samples: dict, deployment_name: str, code: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "http_requests_total"
        and dict(labels)["deployment"] == deployment_name
        and dict(labels)["code"] == code
    )


def p99_of(samples: dict, deployment_name: str) -> float:
    """histogram_quantile(0.99, ...) over the deployment's buckets, as PromQL computes it."""
    cumulative: dict[float, float] = {}
    for (name, labels), value in samples.items():
        label_map = dict(labels)
        if (
            name == "http_request_duration_seconds_bucket"
            and label_map["deployment"] == deployment_name
        ):
            bound = float(label_map["le"])
            cumulative[bound] = cumulative.get(bound, 0) + value
    bounds = sorted(cumulative)
    rank = 0.99 * cumulative[float("inf")]
    lower, below = 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative[bound] - below)
        lower, below = bound, cumulative[bound]
    raise AssertionError("no bucket reached the rank")


async def test_only_ready_pods_emit_and_counters_follow_rps_and_error_rate(
    harness: Harness,
) -> None:
    harness.store.create(
        DEPLOYMENTS,
        deployment(
            "checkout",
            {"kubesim.rollbackd.io/rps": "20", "kubesim.rollbackd.io/error-rate": "0.25"},
            replicas=2,
        ),
    )
    await harness.controller.settle()
    assert harness.samples() == {}, "pods that are not Ready must not emit traffic"

    await harness.advance(1.0)  # pods become Ready now
    await harness.advance(10.0)
    samples = harness.samples()
    pods = {dict(labels)["pod"] for (_, labels) in samples}
    assert len(pods) == 2
    assert requests_of(samples, "checkout", "200") == 2 * 150
    assert requests_of(samples, "checkout", "500") == 2 * 50
    labels = {key for (_, label_set) in samples for key, _ in label_set}
    assert {"namespace", "deployment", "pod", "code", "le"} <= labels


async def test_counters_only_grow(harness: Harness) -> None:
    harness.store.create(
        DEPLOYMENTS, deployment("cart", {"kubesim.rollbackd.io/error-rate": "0.6"})
    )
    await harness.controller.settle()
    await harness.advance(1.0)
    previous = harness.samples()
    for _ in range(30):
        await harness.advance(0.37)
        current = harness.samples()
        for key, value in previous.items():
            assert current[key] >= value, key
        previous = current


async def test_p99_sits_above_typical_latency_and_a_10x_regression_is_obvious(
    harness: Harness,
) -> None:
    harness.store.create(DEPLOYMENTS, deployment("fast", {"kubesim.rollbackd.io/latency-ms": "50"}))
    harness.store.create(
        DEPLOYMENTS, deployment("slow", {"kubesim.rollbackd.io/latency-ms": "500"})
    )
    await harness.controller.settle()
    await harness.advance(1.0)
    await harness.advance(60.0)
    samples = harness.samples()
    fast, slow = p99_of(samples, "fast"), p99_of(samples, "slow")
    assert 0.05 < fast < 0.25
    assert slow > 5 * fast


def test_traffic_is_a_pure_function_of_knobs_and_elapsed_time() -> None:
    knobs = Knobs(rps=10, error_rate=0.1, latency_seconds=0.05)
    traffic = PodTraffic.after(knobs, 100)
    assert (traffic.ok, traffic.errors) == (900, 100)
    assert traffic.buckets[-1] <= traffic.count
    assert list(traffic.buckets) == sorted(traffic.buckets)
    assert len(traffic.buckets) == len(BUCKETS)
    assert PodTraffic.after(knobs, 100) == traffic


def test_malformed_knobs_fall_back_to_defaults() -> None:
    knobs = Knobs.from_annotations(
        {
            "kubesim.rollbackd.io/rps": "lots",
            "kubesim.rollbackd.io/error-rate": "1.5",
            "kubesim.rollbackd.io/latency-ms": "-3",
        }
    )
    assert knobs == Knobs()


async def test_metrics_are_served_over_http(harness: Harness) -> None:
    harness.store.create(DEPLOYMENTS, deployment("api", {}))
    await harness.controller.settle()
    await harness.advance(1.0)
    await harness.advance(5.0)
    url = await harness.metrics.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = await response.text()
    finally:
        await harness.metrics.stop()
    families = {family.name for family in text_string_to_metric_families(body)}
    assert families == {"http_requests", "http_request_duration_seconds"}
    assert 'deployment="api"' in body


async def test_degrade_overrides_every_version_and_counters_never_go_back(
    harness: Harness,
) -> None:
    harness.store.create(DEPLOYMENTS, deployment("api", {"kubesim.rollbackd.io/rps": "10"}))
    await harness.advance(1.0)  # Ready
    await harness.advance(10.0)
    healthy = harness.samples()
    assert requests_of(healthy, "api", "500") == 0

    harness.metrics.degrade("shop", "api", error_rate=0.5, latency_ms=2000)
    await harness.advance(10.0)
    degraded = harness.samples()
    # 10 s at 10 req/s, half of them failing, on top of what was already counted.
    assert requests_of(degraded, "api", "500") == 50
    assert requests_of(degraded, "api", "200") == requests_of(healthy, "api", "200") + 50
    assert p99_of(degraded, "api") > 1.0

    harness.metrics.degrade("shop", "api")  # lifted
    await harness.advance(10.0)
    recovered = harness.samples()
    assert requests_of(recovered, "api", "500") == 50  # no reset, no further errors
    assert requests_of(recovered, "api", "200") == requests_of(degraded, "api", "200") + 100
    for key, value in degraded.items():
        if key[0].endswith(("_total", "_bucket", "_count", "_sum")) and key in recovered:
            assert recovered[key] >= value, key


async def test_the_workload_label_can_be_named_otherwise_and_degrade_still_applies(
    harness: Harness,
) -> None:
    # As an exporter that names the workload "rollout" (rollbackd's prometheus.deployment_label).
    harness.metrics = WorkloadMetrics(
        harness.store, clock=harness.clock.epoch, workload_label="rollout"
    )
    harness.store.create(DEPLOYMENTS, deployment("checkout", {"kubesim.rollbackd.io/rps": "10"}))
    await harness.controller.settle()
    await harness.advance(1.0)
    harness.metrics.degrade("shop", "checkout", error_rate=0.5)
    await harness.advance(10.0)
    samples = harness.samples()
    assert samples
    for _name, labels in samples:
        assert dict(labels)["rollout"] == "checkout" and "deployment" not in dict(labels)
    errors = sum(
        value
        for (name, labels), value in samples.items()
        if name == "http_requests_total" and dict(labels)["code"] == "500"
    )
    assert errors == 50  # the override keyed by the Deployment's name still applies
