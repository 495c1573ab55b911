"""The service proxy subresource: upstream's resolution, answered by the pods' knobs.

``/api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/<path>`` finds the
Service, its port and a ready endpoint as the real API server does (404 for
no Service, 503 for no such port or no ready endpoint), and the pod behind
the endpoint answers from ``kubesim.rollbackd.io/*`` annotations.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import aiohttp
import pytest

from rollbackd.kube import Kube
from rollbackd.smoke import ServicePort, SmokeRequest
from rollbackd.smoke_transport import ProxyRefused, ServiceProxyTransport
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.proxy import KNOB_FAILING_PATHS, KNOB_FAILING_STATUS
from rollbackd.testing.kubesim.workload import KNOB_ERROR_RATE, KNOB_LATENCY_MS
from rollbackd.testing.stack import wait_for

NS = "default"


def service(name: str = "web") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }


def deployment(replicas: int, knobs: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": knobs},
                "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            },
        },
    }


async def serving(sim: KubeSim, replicas: int = 1, **knobs: str) -> None:
    """A Service ``web`` and a Deployment whose ``replicas`` pods are its ready endpoints."""
    sim.store.create("v1/services", service())
    sim.store.create("apps/v1/deployments", deployment(replicas, knobs))

    async def ready() -> bool:
        endpoints = sim.store.peek("v1/endpoints", NS, "web") or {}
        subsets = endpoints.get("subsets") or []
        return sum(len(s.get("addresses") or []) for s in subsets) == replicas

    await wait_for(ready, 10, f"{replicas} ready endpoints of service web")


async def get(sim: KubeSim, tail: str, service_id: str = "web:http") -> tuple[int, Any]:
    url = f"{sim.url}/api/v1/namespaces/{NS}/services/{service_id}/proxy{tail}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_a_missing_service_is_not_found(kubesim: KubeSim) -> None:
    status, body = await get(kubesim, "/", "nothere")
    assert status == 404
    assert (body["kind"], body["reason"]) == ("Status", "NotFound")


async def test_a_service_without_ready_endpoints_answers_503_as_upstream(kubesim: KubeSim) -> None:
    kubesim.store.create("v1/services", service())
    status, body = await get(kubesim, "/")
    assert status == 503
    assert body["reason"] == "ServiceUnavailable"
    assert body["message"] == 'no endpoints available for service "web"'


async def test_a_port_the_service_lacks_answers_503(kubesim: KubeSim) -> None:
    kubesim.store.create("v1/services", service())
    status, body = await get(kubesim, "/", "web:grpc")
    assert status == 503
    assert body["message"] == 'no service port "grpc" found for service "web"'


async def test_ready_pods_answer_in_turn_by_port_name_number_or_none(kubesim: KubeSim) -> None:
    await serving(kubesim, replicas=2)
    answers = [await get(kubesim, "/orders", sid) for sid in ("web:http", "web:80", "web")]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(body["status"] == "ok" and body["path"] == "/orders" for _, body in answers)
    pods = {p["metadata"]["name"] for p in kubesim.store.list("v1/pods")}
    assert {body["pod"] for _, body in answers} == pods


async def test_the_error_rate_knob_is_the_fraction_of_500s(kubesim: KubeSim) -> None:
    await serving(kubesim, **{KNOB_ERROR_RATE: "0.5"})
    statuses = [(await get(kubesim, "/"))[0] for _ in range(10)]
    assert statuses.count(500) == 5 and statuses.count(200) == 5


async def test_failing_paths_answer_500_whatever_the_error_rate(kubesim: KubeSim) -> None:
    await serving(kubesim, **{KNOB_FAILING_PATHS: "/checkout, /pay"})
    assert (await get(kubesim, "/checkout"))[0] == 500
    assert (await get(kubesim, "/pay"))[1]["status"] == "error"
    assert (await get(kubesim, "/browse"))[0] == 200


async def test_the_latency_knob_delays_the_answer(kubesim: KubeSim) -> None:
    await serving(kubesim, **{KNOB_LATENCY_MS: "400"})
    started = time.monotonic()
    status, _ = await get(kubesim, "/")
    assert status == 200
    assert time.monotonic() - started >= 0.4


async def test_a_degraded_deployment_answers_errors_through_the_proxy(kubesim: KubeSim) -> None:
    await serving(kubesim)
    assert kubesim.workload is not None
    kubesim.workload.degrade(NS, "web", error_rate=1.0)
    assert (await get(kubesim, "/"))[0] == 500


async def test_rollbackd_reaches_it_with_the_kube_clients_credentials(kubesim: KubeSim) -> None:
    await serving(kubesim, **{KNOB_FAILING_PATHS: "/broken"})
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig)) as kube:
        transport = ServiceProxyTransport(kube.api_client)
        get = SmokeRequest(NS, "web", ServicePort("http", 80), "GET", "/a?b=c", {}, None, 5)
        ok = await transport.send(get)
        broken = await transport.send(
            dataclasses.replace(
                get,
                method="POST",
                path="/broken",
                body='{"x": 1}',
                headers={"Content-Type": "application/json"},
            )
        )
    assert ok[0] == 200 and b'"path": "/a"' in ok[1]
    assert broken[0] == 500 and b'"method": "POST"' in broken[1]


async def test_a_proxy_forbidden_to_rollbackd_is_not_the_services_answer(kubesim: KubeSim) -> None:
    await serving(kubesim)
    kubesim.faults.fail("list", "/proxy/", 403)
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig)) as kube:
        transport = ServiceProxyTransport(kube.api_client)
        with pytest.raises(ProxyRefused, match="403"):
            await transport.send(
                SmokeRequest(NS, "web", ServicePort("http", 80), "GET", "/", {}, None, 5)
            )


async def test_a_service_shedding_load_answers_429_with_retry_after(kubesim: KubeSim) -> None:
    await serving(kubesim, **{KNOB_FAILING_PATHS: "/orders", KNOB_FAILING_STATUS: "429"})
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig)) as kube:
        transport = ServiceProxyTransport(kube.api_client)
        answer = await transport.send(
            SmokeRequest(NS, "web", ServicePort("http", 80), "GET", "/orders", {}, None, 5)
        )
    # The Service's own 429 comes back as its answer (not a refusal of rollbackd).
    assert (answer.status, answer.retry_after) == (429, "1")
    assert b'"status": "error"' in answer.body


async def test_the_api_server_throttling_the_proxy_is_not_the_services_answer(
    kubesim: KubeSim,
) -> None:
    await serving(kubesim)
    kubesim.faults.fail("list", "/proxy/", 429)  # API Priority and Fairness: a Status body
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig)) as kube:
        transport = ServiceProxyTransport(kube.api_client)
        with pytest.raises(ProxyRefused, match="429"):
            await transport.send(
                SmokeRequest(NS, "web", ServicePort("http", 80), "GET", "/", {}, None, 5)
            )
