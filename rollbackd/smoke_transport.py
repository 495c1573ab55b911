"""How smoke checks reach a Service: the API server's service proxy, or cluster DNS.

``service-proxy`` sends the request to
``/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/<path>`` with the
kube client's credentials, so it works from outside the cluster (and on
kubesim); the API server forwards it to one ready endpoint and answers 503
when there is none. ``cluster-dns`` calls
``http://{service}.{namespace}.svc:{port}/<path>`` directly, as anything
else in the cluster would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rollbackd.config.policy import VerifySettings
from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS, checks_named
from rollbackd.model import Target
from rollbackd.readiness import service_selects
from rollbackd.smoke import (
    ServicePort,
    ServiceRef,
    SmokeAnswer,
    SmokeChecker,
    SmokeContext,
    SmokeRequest,
    Transport,
)

CLUSTER_DNS_BASE = "http://{service}.{namespace}.svc:{port}"


class ProxyRefused(Exception):
    """The API server would not proxy the request (RBAC, throttling): the check could not run."""


# The API server's own refusals (a Status body, not the Service's): RBAC, and
# API Priority and Fairness throttling rollbackd.
_REFUSALS = (401, 403, 429)


def _is_status(raw: bytes) -> bool:
    try:
        document = json.loads(raw)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("kind") == "Status"


class ServiceProxyTransport:
    """Requests through the API server's service proxy, authenticated as rollbackd."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def send(self, request: SmokeRequest) -> SmokeAnswer:
        r = request
        proxy = (
            f"/api/v1/namespaces/{quote(r.namespace)}/services/"
            f"{quote(r.service)}:{quote(r.port.ref)}/proxy{r.path}"
        )
        header_params = {"Accept": "*/*", **r.headers}
        content_type = _content_type(r.headers)
        payload: Any = None
        if r.body is not None:
            # The client JSON-encodes bodies it is told are JSON; others go as bytes.
            payload = json.loads(r.body) if "json" in content_type.lower() else r.body.encode()
            header_params.setdefault("Content-Type", content_type or "text/plain")
        response = await self._api.call_api(
            proxy,
            r.method,
            header_params=header_params,
            body=payload,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=r.timeout,
        )
        try:
            status, raw = int(response.status), await response.read()
            retry_after = response.headers.get("Retry-After")
        finally:
            response.release()
        if status in _REFUSALS and _is_status(raw):
            # The API server refused rollbackd, the Service said nothing: no evidence.
            raise ProxyRefused(f"the service proxy refused rollbackd ({status}): {raw[:200]!r}")
        return SmokeAnswer(status, raw, retry_after)


class ClusterDnsTransport:
    """Requests straight to the Service's cluster DNS name (rollbackd runs in the cluster)."""

    def __init__(self, base: str = CLUSTER_DNS_BASE) -> None:
        # ``base`` is a template of {service}, {namespace} and {port}; tests point it at loopback.
        self._base = base

    async def send(self, request: SmokeRequest) -> SmokeAnswer:
        r = request
        url = self._base.format(service=r.service, namespace=r.namespace, port=r.port.port) + r.path
        client_timeout = aiohttp.ClientTimeout(total=r.timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.request(
                r.method,
                url,
                headers=dict(r.headers),
                data=r.body.encode() if r.body is not None else None,
                allow_redirects=False,
            ) as response,
        ):
            body = await response.read()
            return SmokeAnswer(response.status, body, response.headers.get("Retry-After"))


def _content_type(headers: Mapping[str, str]) -> str:
    return next((v for k, v in headers.items() if k.lower() == "content-type"), "")


class KubeSmokeContext:
    """The Deployment's annotations and the Services selecting its pods.

    The Deployment comes from the watch cache when it is there (a fresh read
    otherwise); Services are listed only for a Deployment that names checks,
    so Deployments without checks cost no API call.
    """

    def __init__(self, kube: Any) -> None:
        # The Kube adapter: ``deployment(target)`` and ``request(method, path)``.
        self._kube = kube

    async def __call__(self, target: Target) -> SmokeContext:
        deployment = await self._kube.deployment(target)
        annotations = (deployment.get("metadata") or {}).get("annotations") or {}
        if not checks_named(annotations.get(ANNOTATION_SMOKE_CHECKS)):
            return SmokeContext(dict(annotations), ())
        path = f"/api/v1/namespaces/{quote(target.namespace)}/services"
        listing = await self._kube.request("GET", path)
        return smoke_context(deployment, listing.get("items") or [])


def smoke_checker(verify: VerifySettings, kube: Any) -> SmokeChecker:
    """The checker of ``verify.smoke_checks``, reaching Services as ``verify.smoke_via`` says."""
    transport: Transport
    if verify.smoke_via == "cluster-dns":
        transport = ClusterDnsTransport()
    else:
        transport = ServiceProxyTransport(kube.api_client)
    return SmokeChecker(verify.smoke_checks, transport, KubeSmokeContext(kube))


def smoke_context(deployment: Mapping[str, Any], services: list[Mapping[str, Any]]) -> SmokeContext:
    """The annotations and selecting Services (with their ports) from Kubernetes JSON."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    refs = []
    for service in services:
        if not service_selects(deployment, service):
            continue
        ports = tuple(
            ServicePort(str(p.get("name") or ""), int(p.get("port") or 0))
            for p in (service.get("spec") or {}).get("ports") or []
        )
        refs.append(ServiceRef(str((service.get("metadata") or {}).get("name", "")), ports))
    return SmokeContext(dict(annotations), tuple(refs))
