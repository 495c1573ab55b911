"""A real Prometheus scraping kubesim's workload sees an HTTPRoute weight shift."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.resources import REGISTRY, apply_defaults
from rollbackd.testing.promstack import instant_query, poll_until

from .crd_helpers import HTTPROUTES, route_manifest, service_manifest
from .kubectl_helpers import deployment_manifest

pytestmark = pytest.mark.integration


def create(sim: KubeSim, key: str, manifest: dict[str, Any]) -> None:
    obj = {**manifest, "metadata": {**manifest["metadata"], "namespace": "default"}}
    apply_defaults(REGISTRY[key], obj)
    sim.store.create(key, obj)


async def value(url: str, expr: str) -> float | None:
    result = await instant_query(url, expr)
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_sees_the_canary_stop_serving_at_weight_zero(
    kubesim: KubeSim, prometheus_factory: Any
) -> None:
    knobs = {"kubesim.rollbackd.io/rps": "10"}
    create(
        kubesim,
        "apps/v1/deployments",
        deployment_manifest("web-stable", replicas=3, template_annotations=knobs),
    )
    bad = {**knobs, "kubesim.rollbackd.io/error-rate": "0.5"}
    create(
        kubesim,
        "apps/v1/deployments",
        deployment_manifest("web-canary", replicas=1, template_annotations=bad),
    )
    for name in ("web-stable", "web-canary"):
        create(kubesim, "v1/services", service_manifest(name, name))
    create(kubesim, HTTPROUTES, route_manifest("web", [("web-stable", 50), ("web-canary", 50)]))
    prometheus = await prometheus_factory(targets=[urlsplit(kubesim.metrics_url).netloc])

    canary_errors = 'sum(rate(http_requests_total{deployment="web-canary",code="500"}[3s]))'
    # Half of the route's 40 rps to the canary pod, half of those failing: about 10 errors/s
    # (its own 10 rps alone would make 5).
    errors = await poll_until(
        lambda: _above(value(prometheus.url, canary_errors), 7.5),
        within=20,
        message="canary errors in Prometheus",
    )
    assert errors < 15

    route = kubesim.store.get(HTTPROUTES, "default", "web")
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = 0
    kubesim.store.update(HTTPROUTES, route)

    canary_requests = 'sum(increase(http_requests_total{deployment="web-canary"}[3s]))'
    await poll_until(
        lambda: _equal(value(prometheus.url, canary_requests), 0.0),
        within=20,
        message="no canary requests in the last 3 s",
    )
    stable = await value(
        prometheus.url, 'sum(rate(http_requests_total{deployment="web-stable"}[3s]))'
    )
    assert stable is not None and 35 <= stable <= 45, "stable serves the route's 40 rps"
    assert kubesim.controller is not None and kubesim.controller.errors == 0


async def _above(pending: Any, floor: float) -> float | None:
    result = await pending
    return result if result is not None and result > floor else None


async def _equal(pending: Any, expected: float) -> bool | None:
    return True if (await pending) == expected else None
