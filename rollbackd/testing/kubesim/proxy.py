"""The API server's service proxy, answered by the emulated workload.

``/api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/<path>`` resolves as
upstream does: the Service (404 when missing), its port by name or number
(the first one when none is given; 503 "no service port" when none matches),
then one ready endpoint address of that port (503 "no endpoints available
for service" when there is none). Instead of forwarding to a pod, the pod
behind the address answers from its behaviour knobs (``workload.py``):

* latency: the answer waits the pod's median latency;
* ``kubesim.rollbackd.io/error-rate``: that fraction of answers are 500, spread
  evenly over the pod's requests (deterministic, so tests can count them);
* ``kubesim.rollbackd.io/failing-paths``: comma-separated paths this version
  answers 500 on whatever its error rate; the metrics do not see these, as
  a rarely used endpoint barely moves a service's error ratio;
* ``kubesim.rollbackd.io/failing-status``: the status those paths answer
  (500 by default); a 429 comes with ``Retry-After: 1``, as a service
  shedding load answers.

A 200 body is JSON ``{"status": "ok", "pod", "path", "method"}``; a 500 body
``{"status": "error", ...}``. Ready endpoints take turns (round robin).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .errors import ApiError, not_found
from .store import Store
from .workload import Knobs

KNOB_FAILING_PATHS = "kubesim.rollbackd.io/failing-paths"
KNOB_FAILING_STATUS = "kubesim.rollbackd.io/failing-status"
PROXY_ROUTE = "/api/v1/namespaces/{namespace}/services/{service}/proxy{tail:.*}"


class ServiceProxy:
    """Handles the service proxy subresource over a ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # The pod's effective knobs; KubeSim points this at the workload's (degrade included).
        self.knobs_of: Callable[[Mapping[str, Any]], Knobs] = lambda pod: Knobs.from_annotations(
            pod["metadata"].get("annotations") or {}
        )
        self._turn: dict[tuple[str, str], int] = {}
        self._served: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name, _, port = request.match_info["service"].partition(":")
        path = request.match_info["tail"] or "/"
        pod = self._pick(namespace, name, port)
        knobs = self.knobs_of(pod)
        await asyncio.sleep(knobs.latency_seconds)
        pod_name = pod["metadata"]["name"]
        annotations = pod["metadata"].get("annotations") or {}
        failing = _paths(annotations.get(KNOB_FAILING_PATHS, ""))
        served = self._served.get(pod_name, 0)
        self._served[pod_name] = served + 1
        # Request n fails when floor((n + 1) * rate) passes an integer: exactly that fraction.
        erring = math.floor((served + 1) * knobs.error_rate) > math.floor(served * knobs.error_rate)
        ok = not erring and path not in failing
        status = 200 if ok else 500
        if not erring and path in failing:
            status = _status(annotations.get(KNOB_FAILING_STATUS, ""))
        body = {
            "status": "ok" if ok else "error",
            "pod": pod_name,
            "path": path,
            "method": request.method,
        }
        return web.Response(
            body=json.dumps(body).encode(),
            status=status,
            content_type="application/json",
            headers={"Retry-After": "1"} if status == 429 else None,
        )

    def _pick(self, namespace: str, name: str, port_ref: str) -> Mapping[str, Any]:
        """The pod behind one ready endpoint of the Service's port, or the upstream error."""
        service = self._store.peek("v1/services", namespace, name)
        if service is None:
            raise not_found("services", name)
        ports = (service.get("spec") or {}).get("ports") or []
        port = next(
            (p for p in ports if port_ref in ("", p.get("name") or "", str(p.get("port")))), None
        )
        if port is None:
            raise _unavailable(f'no service port "{port_ref}" found for service "{name}"')
        pods = []
        endpoints = self._store.peek("v1/endpoints", namespace, name) or {}
        for subset in endpoints.get("subsets") or []:
            names = {p.get("name") or "" for p in subset.get("ports") or []}
            if (port.get("name") or "") not in names:
                continue
            for address in subset.get("addresses") or []:
                ref = address.get("targetRef") or {}
                pod = self._store.peek("v1/pods", namespace, ref.get("name", ""))
                if pod is not None:
                    pods.append(pod)
        if not pods:
            raise _unavailable(f'no endpoints available for service "{name}"')
        turn = self._turn.get((namespace, name), 0)
        self._turn[(namespace, name)] = turn + 1
        return pods[turn % len(pods)]


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def _status(text: str) -> int:
    """The failing-status knob: an HTTP error status, 500 when unset or not one."""
    return int(text) if text.strip().isdigit() and 400 <= int(text) <= 599 else 500


def _paths(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


__all__ = ["KNOB_FAILING_PATHS", "KNOB_FAILING_STATUS", "PROXY_ROUTE", "ServiceProxy"]
