"""The HTTP half of the Kubernetes adapter: one call, typed errors, retries, fresh reads.

Every failure leaves as a typed :class:`~rollbackd.kube.errors.KubeError`
built from the Status body, connection errors and timeouts included;
transient ones (429, 5xx, connection errors, timeouts) are retried first,
within the retry budget in scope (:mod:`rollbackd.kube.retry`: a rollback
brings its own). Every write this client sends asks the fence first
(:mod:`rollbackd.kube.fencing`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.kube.environ import skip_unused_environment
from rollbackd.kube.errors import KubeError, error_from_exception, error_from_response
from rollbackd.kube.fencing import Fence
from rollbackd.kube.fencing import install as install_fence
from rollbackd.kube.retry import RetryBudget, current_budget, with_retries
from rollbackd.model import Target
from rollbackd.revisions import controller_uid

# Watch keywords (as the typed listers name them) -> query parameters.
_WATCH_QUERY = {
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "label_selector": "labelSelector",
}


def watch_timeout(timeout_seconds: object) -> aiohttp.ClientTimeout | None:
    """How long a watch may go without a byte before it counts as hung.

    The client sets no timeout of its own, so a connection that dies
    without a reset (a partition, a proxy that drops state) kept a watch,
    and the cache's view, "current" for ever. The server ends a watch after
    ``timeoutSeconds`` (bookmarks come sooner), so a stream silent for that
    long plus a grace is hung: the read fails and the cache reconnects.
    """
    if not isinstance(timeout_seconds, int | float) or timeout_seconds <= 0:
        return None
    grace = max(5.0, timeout_seconds / 10)
    return aiohttp.ClientTimeout(sock_connect=30, sock_read=timeout_seconds + grace)


def namespace_prefix(namespace: str | None) -> str:
    """``/namespaces/<ns>`` for a namespaced path, empty for all namespaces."""
    return f"/namespaces/{quote(namespace)}" if namespace else ""


def deployment_path(target: Target) -> str:
    """The API path of ``target``'s Deployment."""
    return f"/apis/apps/v1/namespaces/{quote(target.namespace)}/deployments/{quote(target.name)}"


def httproute_path(namespace: str) -> str:
    """The API path of a namespace's Gateway API HTTPRoutes."""
    return f"/apis/gateway.networking.k8s.io/v1/namespaces/{quote(namespace)}/httproutes"


def selector_query(deployment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A ``labelSelector`` query from the Deployment's ``matchLabels``."""
    match = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    if not match:
        return []
    return [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(match.items())))]


class KubeClient:
    """Typed, retried API calls on one kubernetes-asyncio ApiClient."""

    def __init__(
        self,
        api: ApiClient,
        *,
        request_timeout: float = 30.0,
        identity: str | None = None,
        retry_budget: float = 0.0,
    ) -> None:
        self._api = api
        # Seconds a call outside any budget_scope may spend on transient
        # faults; a rollback brings its own budget (see kube.retry).
        self._retry_budget = retry_budget
        self._request_timeout = request_timeout
        self._identity = identity or socket.gethostname()
        # Only the Lease holder writes: every write asks the fence first
        # (open until leader election turns it on).
        self.fence = Fence()
        install_fence(api, self.fence)
        skip_unused_environment(api)  # no thread hops for proxy and netrc look-ups per request

    @classmethod
    async def connect(
        cls,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        retry_budget: float = 0.0,
    ) -> Self:
        """Connect with a kubeconfig file, or the in-cluster service account when None.

        ``retry_budget``: seconds a call made outside a rollback's
        :func:`~rollbackd.kube.retry.budget_scope` may spend retrying
        transient faults (0: fail on the first one).
        """
        if kubeconfig is None:
            configuration = Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = ApiClient(configuration=configuration)
        else:
            api = await config.new_client_from_config(config_file=kubeconfig, context=context)
        return cls(api, retry_budget=retry_budget)

    @property
    def api_client(self) -> ApiClient:
        """The shared ApiClient (its session carries the fence)."""
        return self._api

    @property
    def request_timeout(self) -> float:
        return self._request_timeout

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """One API call returning the decoded JSON body; transient faults are retried.

        Retries draw on the budget in scope (a rollback's), else on a fresh
        budget of the adapter's default. Every failure surfaces as a typed
        :class:`KubeError`. ``accept`` may ask for a conversion (a
        ``PartialObjectMetadataList``, a Table).
        """
        budget = current_budget() or RetryBudget(self._retry_budget)
        return await with_retries(
            lambda: self._request_once(method, path, query, body, content_type, accept),
            budget=budget,
            describe=f"{method} {path}",
        )

    async def _request_once(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Any,
        content_type: str,
        accept: str,
    ) -> dict[str, Any]:
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": accept, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
        except ApiException as exc:
            # Raised before sending (a request the client cannot encode).
            raise KubeError(f"{method} {path}: {exc.reason}", exc.status or 0) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_from_exception(method, path, exc) from exc
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_from_exception(method, path, exc) from exc
        finally:
            response.release()
        status = response.status
        if not 200 <= status < 300:
            raise error_from_response(method, path, status, raw, response.headers)
        try:
            data = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KubeError(f"{method} {path}: {status} with a body that is not JSON") from exc
        return data if isinstance(data, dict) else {}

    async def open_watch(
        self, path: str, *, accept: str = "application/json", **params: Any
    ) -> aiohttp.ClientResponse:
        """Open a watch stream on ``path``: the raw response, for kubernetes_asyncio's Watch.

        ``params`` are the keywords a typed lister takes (``resource_version``,
        ``timeout_seconds``, ``allow_watch_bookmarks``; Watch adds ``watch``);
        ``accept`` may ask for a conversion (``PartialObjectMetadata``), which
        the typed listers cannot (they set Accept themselves).
        """
        query = [("watch", "true")]
        for keyword, name in _WATCH_QUERY.items():
            value = params.get(keyword)
            if value is not None:
                query.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
        response: aiohttp.ClientResponse = await self._api.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=watch_timeout(params.get("timeout_seconds")),
        )
        return response

    # ---------------------------------------------------------- fresh reads

    async def read_deployment(self, target: Target) -> dict[str, Any]:
        """A fresh GET: every write path starts here."""
        return await self.request("GET", deployment_path(target))

    async def read_service(self, namespace: str, name: str) -> dict[str, Any]:
        """A fresh GET of a Service (a blue-green switch is based on it)."""
        return await self.request(
            "GET", f"/api/v1/namespaces/{quote(namespace)}/services/{quote(name)}"
        )

    async def read_httproute(self, namespace: str, name: str) -> dict[str, Any]:
        """A fresh GET of a Gateway API HTTPRoute (a canary's weights are based on it)."""
        return await self.request("GET", f"{httproute_path(namespace)}/{quote(name)}")

    async def list_replicasets(self, target: Target) -> list[dict[str, Any]]:
        """ReplicaSets controlled by the Deployment's UID, freshly listed."""
        deployment = await self.read_deployment(target)
        listing = await self.request(
            "GET",
            f"/apis/apps/v1/namespaces/{quote(target.namespace)}/replicasets",
            query=selector_query(deployment),
        )
        uid = deployment.get("metadata", {}).get("uid")
        return [rs for rs in listing.get("items") or [] if controller_uid(rs) == uid]

    async def target_pods(self, target: Target) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Deployment, freshly read, and the pods its selector matches."""
        deployment = await self.read_deployment(target)
        listing = await self.request(
            "GET",
            f"/api/v1/namespaces/{quote(target.namespace)}/pods",
            query=selector_query(deployment),
        )
        return deployment, list(listing.get("items") or [])

    async def list_items(self, path: str) -> list[dict[str, Any]]:
        """The ``items`` of a list call."""
        return list((await self.request("GET", path)).get("items") or [])
