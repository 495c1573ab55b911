"""The aiohttp application that speaks the Kubernetes REST API over a ``Store``.

One catch-all route parses Kubernetes URLs itself (``/api/v1/...``,
``/apis/G/V/...``, namespaced or not, with subresources), because the URL
space is data driven by ``resources.REGISTRY``. Every error is a
``metav1.Status`` body; an unexpected exception becomes a 500 Status and the
server keeps serving. Watches are newline-delimited JSON over a chunked
response (fan-out in ``watches.py``), fed synchronously by the store so no
change is ever missed between "snapshot" and "subscribe".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import functools
import json
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import discovery, media, patch, protobuf, requestlog
from .disruption import evict
from .errors import (
    ApiError,
    bad_request,
    conflict,
    continue_expired,
    internal_error,
    invalid,
    method_not_allowed,
    not_found,
    path_not_found,
    unsupported_media_type,
)
from .faults import FaultInjector, ResetConnection
from .proxy import PROXY_ROUTE, ServiceProxy
from .resources import (
    REGISTRY,
    ResourceType,
    apply_defaults,
    by_gvr,
    validate,
    validate_status,
)
from .selectors import label_selector_string, parse_field_selector, parse_label_selector
from .store import Obj, Store, clone
from .tables import TableEventEncoder, as_table
from .watches import Watcher, WatchHub, event_line

MAX_BODY_BYTES = 3 * 1024 * 1024  # the real server's default request size limit
_IDLE_CHECK_SECONDS = 1.0  # how often an idle watch checks that its client is still there
_TRUE = frozenset({"true", "1", "True"})

# Kinds whose create response starts with this status (the real strategies reset it).
_INITIAL_STATUS: dict[str, Callable[[], dict[str, Any]]] = {
    "apps/v1/deployments": dict,
    "apps/v1/replicasets": lambda: {"replicas": 0},
    "v1/pods": lambda: {"phase": "Pending", "qosClass": "BestEffort"},
    "v1/services": lambda: {"loadBalancer": {}},
    "v1/namespaces": lambda: {"phase": "Active"},
}
# Kinds that the real server lets PUT create when the object is missing.
_CREATE_ON_UPDATE = frozenset({"v1/endpoints", "v1/events", "events.k8s.io/v1/events"})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    response = _json_response(error.status_body(), error.code)
    response.headers.update(error.headers)
    return response


# --------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """A parsed resource URL."""

    rtype: ResourceType
    namespace: str | None  # None: all namespaces (collection) or cluster-scoped
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    """Parse ``/api/v1/...`` or ``/apis/G/V/...``; None when it is not a resource URL."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and by_gvr(group, version, rest[2]) is not None:
        namespace, rest = rest[1], rest[2:]
    rtype = by_gvr(group, version, rest[0])
    if rtype is None or len(rest) > 3:
        return None
    if namespace is not None and not rtype.namespaced:
        return None
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else None
    if subresource is not None and subresource not in rtype.subresources:
        return None
    if rtype.namespaced and name is not None and namespace is None:
        return None  # a namespaced object is only addressable inside its namespace
    return Route(rtype, namespace, name, subresource)


def request_verb(method: str, route: Route | None, query: Any) -> str:
    """The Kubernetes verb of a request, as authorization and fault rules see it."""
    method = method.upper()
    has_name = route is not None and route.name is not None
    if method == "GET":
        if has_name:
            return "get"
        return "watch" if query.get("watch") in _TRUE else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }.get(method, method.lower())


# ----------------------------------------------------------------- pagination


# A continue token is opaque to clients: the snapshot's resourceVersion and the
# last key sent. resourceVersion -1 continues at the latest state, as the token
# the real server offers with "continue parameter is too old" does.
_INCONSISTENT = -1


def _encode_continue(resource_version: int, namespace: str, name: str) -> str:
    raw = _dumps({"rv": resource_version, "start": [namespace, name]})
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, name = data["start"]
        return int(data["rv"]), (str(namespace), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_request("invalid continue token") from None


def _position(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


# ----------------------------------------------------------------------- helpers


def _dry_run(query: Any) -> bool:
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f'Invalid dry run value: "{value}" (supported values: "All")')
    return bool(values)


def _check_query(query: Any) -> None:
    validation = query.get("fieldValidation")
    if validation is not None and validation not in ("Strict", "Warn", "Ignore"):
        raise bad_request(
            f'Invalid value: "{validation}": fieldValidation must be one of "Ignore", "Warn", or "Strict"'
        )


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise bad_request("the request body is empty")
    content_type = request.content_type or "application/json"
    if content_type == protobuf.CONTENT_TYPE:
        return protobuf.decode_object(raw)
    if "json" not in content_type and "yaml" not in content_type:
        raise unsupported_media_type(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json, application/yaml (got {content_type})"
        )
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as error:
        raise bad_request(f"the body of the request could not be decoded: {error}") from None


def scale_of(obj: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a Deployment or ReplicaSet."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": label_selector_string(spec.get("selector")),
        },
    }


def _allocate_cluster_ip(service: Obj, store: Store) -> None:
    """Give a ClusterIP Service an address from 10.96.0.0/16, as the real allocator does."""
    spec = service.get("spec")
    if not isinstance(spec, dict) or spec.get("type") == "ExternalName" or spec.get("clusterIP"):
        return
    taken = {
        (svc.get("spec") or {}).get("clusterIP") for svc in store.list("v1/services", copy=False)
    }
    for index in range(1, 65535):
        address = f"10.96.{index // 256}.{index % 256}"
        if index % 256 not in (0, 255) and address not in taken:
            spec["clusterIP"] = address
            spec["clusterIPs"] = [address]
            return
    raise ApiError(500, "InternalError", "Internal error occurred: no ClusterIPs left")


def _success_status(rtype: ResourceType, obj: Obj) -> Obj:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details["uid"] = obj["metadata"].get("uid", "")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _verb_of(request: web.Request) -> str:
    return request_verb(request.method, parse_route(request.path), request.query)


def _reset_connection(request: web.Request) -> None:
    """Close the client's connection with a TCP RST (linger 0), as a dying proxy does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# ------------------------------------------------------------------------ the API


class KubeApi:
    """Request handlers over a ``Store``; ``app`` is the aiohttp application."""

    def __init__(
        self,
        store: Store,
        faults: FaultInjector,
        *,
        bookmark_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.faults = faults
        self.bookmark_interval = bookmark_interval
        self.hub = WatchHub(store)
        self.server_address = "127.0.0.1:0"
        self._stream_tasks: set[asyncio.Task[Any]] = set()
        faults.watch_dropper = self.hub.drop
        # Every request, its client and its answer (see requestlog).
        self.requests = requestlog.RequestLog()
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[requestlog.middleware(self.requests, _verb_of), self._middleware],
        )
        self.app.router.add_route("*", "/_kubesim/faults", self._faults_admin)
        self.app.router.add_route(
            "*", "/_kubesim/requests", functools.partial(requestlog.admin, self.requests)
        )
        # The service proxy subresource, answered by the emulated workload (proxy.py).
        self.proxy = ServiceProxy(store)
        self.app.router.add_route("*", PROXY_ROUTE, self.proxy.handle)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, _app: web.Application) -> None:
        self.hub.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        # Ends every watch stream so the runner's shutdown does not wait on them.
        self.hub.stop()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            if not request.path.startswith("/_kubesim/"):
                route = parse_route(request.path)
                verb = request_verb(request.method, route, request.query)
                delay, error = self.faults.check(verb, request.path)
                if delay:
                    await asyncio.sleep(delay)
                if isinstance(error, ResetConnection):
                    _reset_connection(request)
                    # Nobody reads this: the connection is gone, and aiohttp
                    # drops a response to a closed transport quietly.
                    return web.Response(status=500)
                if error is not None:
                    raise error
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as error:
            return error_response(error)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                ApiError(413, "RequestEntityTooLarge", "request entity too large")
            )
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:  # the server answers a Status and keeps serving
            return error_response(internal_error(f"{type(error).__name__}: {error}"))

    # ----------------------------------------------------------- admin + meta

    async def _faults_admin(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.faults.clear()
            return _json_response({"rules": 0})
        if request.method == "GET":
            return _json_response({"rules": self.faults.active_rules})
        if request.method != "POST":
            raise method_not_allowed("use POST to add a fault, DELETE to clear them")
        return _json_response(self.faults.apply_admin_request(await _read_body(request)))

    def _meta_document(self, path: str) -> Any:
        """Discovery, version, health and OpenAPI documents; None for other paths."""
        path = path.rstrip("/") or "/"
        if path == "/version":
            return discovery.KUBE_VERSION
        if path == "/api":
            return discovery.core_versions(self.server_address)
        if path == "/api/v1":
            return discovery.resource_list("", "v1")
        if path == "/apis":
            return discovery.group_list()
        if path == "/openapi/v3":
            return discovery.openapi_v3_index()
        if path.startswith("/openapi/v3/"):
            return discovery.openapi_v3_document(path[len("/openapi/v3/") :])
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            return discovery.group(parts[1])
        if parts[0] == "apis" and len(parts) == 3:
            return discovery.resource_list(parts[1], parts[2])
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        route = parse_route(path)
        if route is None:
            if request.method == "GET":
                document = self._meta_document(path)
                if document is not None:
                    return _json_response(document)
            raise path_not_found()
        _check_query(request.query)
        verb = request_verb(request.method, route, request.query)
        handlers: dict[str, Callable[[web.Request, Route], Any]] = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        if route.subresource == "eviction" and route.name is not None and verb == "create":
            assert route.namespace is not None
            body = await _read_body(request)
            return _json_response(evict(self.store, route.namespace, route.name, body), 201)
        handler = handlers.get(verb)
        if handler is None:
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        if route.name is None and verb in ("update", "patch"):
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        if route.name is not None and verb == "create":
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        if route.subresource is not None and verb not in ("get", "update", "patch"):
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        response: web.StreamResponse = await handler(request, route)
        return response

    # ------------------------------------------------------------------ reads

    async def _get(self, request: web.Request, route: Route) -> web.Response:
        assert route.name is not None
        obj = self.store.peek(route.rtype.key, route.namespace, route.name)
        if obj is None:
            raise self._not_found(route)
        if route.subresource == "scale":
            return _json_response(scale_of(obj))
        output = media.negotiate(request.headers.get("Accept", ""))
        if route.subresource is not None:
            return _json_response(obj)
        if output.kind == media.TABLE:
            metadata = {"resourceVersion": obj["metadata"]["resourceVersion"]}
            include = request.query.get("includeObject", "Metadata")
            return _json_response(
                as_table(route.rtype, [obj], metadata, include, self.store.clock())
            )
        media.check_single(output, route.rtype)
        return _json_response(media.partial_object(obj, output) if output.partial else obj)

    def _not_found(self, route: Route) -> ApiError:
        return not_found(route.rtype.plural, route.name or "", route.rtype.group)

    def _snapshot(self, route: Route, query: Any) -> tuple[int, list[Obj]]:
        """The list's resourceVersion and items: now, or a continue token's snapshot."""
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        token = query.get("continue")
        snapshot, start = _decode_continue(token) if token else (_INCONSISTENT, ("", ""))
        if snapshot == _INCONSISTENT:
            resource_version = self.store.resource_version
            items = self.store.list(
                route.rtype.key,
                route.namespace,
                label_selector=labels,
                field_selector=fields,
                copy=False,
            )
        else:
            resource_version = snapshot
            try:
                items = self.store.list_at(
                    route.rtype.key,
                    snapshot,
                    route.namespace,
                    label_selector=labels,
                    field_selector=fields,
                )
            except ApiError as error:
                if error.code != 410:
                    raise
                raise continue_expired(_encode_continue(_INCONSISTENT, *start)) from None
        if token:
            positions = [_position(obj) for obj in items]
            items = items[bisect.bisect_right(positions, start) :]
        return resource_version, items

    async def _list(self, request: web.Request, route: Route) -> web.Response:
        query = request.query
        output = media.negotiate(request.headers.get("Accept", ""))
        media.check_list(output, route.rtype)
        resource_version, items = self._snapshot(route, query)
        metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
        limit_text = query.get("limit")
        if limit_text:
            try:
                limit = int(limit_text)
            except ValueError:
                raise bad_request(f"invalid limit {limit_text!r}") from None
            if limit > 0 and len(items) > limit:
                remaining = len(items) - limit
                items = items[:limit]
                metadata["continue"] = _encode_continue(resource_version, *_position(items[-1]))
                metadata["remainingItemCount"] = remaining
        if output.kind == media.TABLE:
            include = query.get("includeObject", "Metadata")
            return _json_response(
                as_table(route.rtype, items, metadata, include, self.store.clock())
            )
        if output.partial:
            return _json_response(media.partial_list(items, metadata, output))
        body = {
            "kind": route.rtype.list_kind,
            "apiVersion": route.rtype.api_version,
            "metadata": metadata,
            "items": items,
        }
        return _json_response(body)

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        query = request.query
        watcher = self._watcher(request, route)
        timeout = self._timeout_seconds(query.get("timeoutSeconds"))
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        initial_bookmark = query.get("sendInitialEvents") in _TRUE
        start_rv = query.get("resourceVersion") or ""
        try:
            start = int(start_rv) if start_rv else 0
        except ValueError:
            raise bad_request(f"invalid resourceVersion {start_rv!r}") from None
        # Snapshot (or replay) and registration happen with no await in between,
        # so every later change reaches this watcher exactly once.
        gone_error: ApiError | None = None
        if start == 0 or initial_bookmark:
            for obj in self.store.list(route.rtype.key, route.namespace, copy=False):
                if watcher.wants(obj):
                    watcher.lines.append(watcher.encode("ADDED", obj))
            if initial_bookmark:
                watcher.lines.append(self._bookmark_line(watcher, initial_events_end=True))
        else:
            try:
                for event in self.store.events_since(start):
                    if event.key != route.rtype.key:
                        continue
                    if route.namespace is not None and event.namespace != route.namespace:
                        continue
                    seen_as = watcher.event_type(event.type, event.obj, event.previous)
                    if seen_as is not None:
                        watcher.lines.append(watcher.encode(seen_as, event.obj))
            except ApiError as error:
                gone_error = error
        if gone_error is None:
            self.hub.add(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if gone_error is not None:
                await response.write(event_line("ERROR", gone_error.status_body()))
                return response
            await self._stream(request, response, watcher, timeout, bookmarks)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.remove(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _watcher(self, request: web.Request, route: Route) -> Watcher:
        """A watcher for this request: its selectors and the encoding its Accept asks for."""
        query = request.query
        output = media.negotiate(request.headers.get("Accept", ""))
        encoder: Callable[[str, Obj], bytes] | None = None
        if output.kind == media.TABLE:
            encoder = TableEventEncoder(
                route.rtype, query.get("includeObject", "Metadata"), self.store.clock
            ).encode
        elif output.partial:
            # Upstream converts each event's object on its own, which a list
            # target cannot fit; kubesim refuses it up front (406) instead.
            media.check_single(output, route.rtype)
            encoder = functools.partial(_partial_event, output)
        return Watcher(
            route.rtype,
            route.namespace,
            parse_label_selector(query.get("labelSelector")),
            parse_field_selector(query.get("fieldSelector"), route.rtype.key),
            request.path,
            encoder,
            share_key=f"partial/{output.version}" if output.partial else "json",
        )

    def _timeout_seconds(self, text: str | None) -> float | None:
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise bad_request(f"invalid timeoutSeconds {text!r}") from None
        return value if value > 0 else None

    def _bookmark_line(self, watcher: Watcher, *, initial_events_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        rtype = watcher.rtype
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}
        if watcher.share_key is not None and watcher.encoder is not None:
            return watcher.encode("BOOKMARK", obj)  # a bookmark is converted like any object
        return event_line("BOOKMARK", obj)

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watcher: Watcher,
        timeout: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        while True:
            while watcher.lines:
                await response.write(watcher.lines.popleft())
            if watcher.closed:
                return
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                await response.write(self._bookmark_line(watcher))
                next_bookmark = now + self.bookmark_interval
            transport = request.transport
            if transport is None or transport.is_closing():
                return  # the client went away
            wait = _IDLE_CHECK_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - now)
            if bookmarks:
                wait = min(wait, next_bookmark - now)
            watcher.wakeup.clear()
            if watcher.lines or watcher.closed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.wakeup.wait(), timeout=max(wait, 0.0))

    # ----------------------------------------------------------------- writes

    def _prepare_body(self, route: Route, body: Any, *, expect_name: str | None) -> Obj:
        rtype = route.rtype
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        expected_kind = "Scale" if route.subresource == "scale" else rtype.kind
        expected_version = "autoscaling/v1" if route.subresource == "scale" else rtype.api_version
        if kind is not None and kind != expected_kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({expected_kind})"
            )
        if api_version is not None and api_version != expected_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
            )
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rtype.namespaced and route.namespace is not None:
            given = meta.get("namespace")
            if given and given != route.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = route.namespace
        if expect_name is not None:
            given_name = meta.get("name") or ""
            if given_name != expect_name:  # a missing name is a mismatch too, as upstream
                raise bad_request(
                    f"the name of the object ({given_name}) does not match the name on the URL ({expect_name})"
                )
            meta["name"] = expect_name
        return body

    def _validated(self, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        apply_defaults(rtype, obj)
        causes = validate(rtype, obj, old)
        if causes:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise invalid(rtype.kind, name, causes, rtype.group)
        return obj

    async def _create(self, request: web.Request, route: Route) -> web.Response:
        if route.rtype.namespaced and route.namespace is None:
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        dry_run = _dry_run(request.query)
        body = self._prepare_body(route, await _read_body(request), expect_name=None)
        rtype = route.rtype
        obj = self._validated(rtype, body, None)
        if rtype.key == "v1/services":
            _allocate_cluster_ip(obj, self.store)
        initial_status = _INITIAL_STATUS.get(rtype.key)
        if initial_status is not None:
            obj["status"] = initial_status()
        elif rtype.has_status:
            obj.pop("status", None)
        created = self.store.create(rtype.key, obj, dry_run=dry_run, manager=_manager(request))
        return _json_response(created, 201)

    async def _update(self, request: web.Request, route: Route) -> web.Response:
        assert route.name is not None
        dry_run = _dry_run(request.query)
        body = self._prepare_body(route, await _read_body(request), expect_name=route.name)
        rtype = route.rtype
        current = self.store.peek(rtype.key, route.namespace, route.name)
        if current is None:
            if rtype.key in _CREATE_ON_UPDATE and route.subresource is None:
                created = self.store.create(
                    rtype.key,
                    self._validated(rtype, body, None),
                    dry_run=dry_run,
                    manager=_manager(request),
                )
                return _json_response(created, 201)
            raise self._not_found(route)
        return self._write(route, current, body, dry_run, _manager(request))

    def _write_scale(self, route: Route, current: Obj, scale: Obj, dry_run: bool) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                "Scale",
                route.name or "",
                [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                        "field": "spec.replicas",
                    }
                ],
                "autoscaling",
            )
        updated = clone(current)
        updated["spec"]["replicas"] = replicas
        given_rv = (scale.get("metadata") or {}).get("resourceVersion")
        updated["metadata"]["resourceVersion"] = given_rv or current["metadata"]["resourceVersion"]
        result = self.store.update(route.rtype.key, updated, dry_run=dry_run)
        return scale_of(result)

    async def _patch(self, request: web.Request, route: Route) -> web.Response:
        assert route.name is not None
        rtype = route.rtype
        patch_type = patch.check_patch_type(
            request.headers.get("Content-Type", ""), custom=rtype.custom
        )
        dry_run = _dry_run(request.query)
        document = await _read_body(request)
        current = self.store.peek(rtype.key, route.namespace, route.name)
        if current is None:
            if patch_type == patch.APPLY_PATCH and route.subresource is None:
                return await self._apply_create(request, route, document, dry_run)
            raise self._not_found(route)
        if patch_type == patch.APPLY_PATCH and not request.query.get("fieldManager"):
            raise invalid(
                "PatchOptions",
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value: is required for apply patch",
                        "field": "fieldManager",
                    }
                ],
                "meta.k8s.io",
            )
        base = scale_of(current) if route.subresource == "scale" else current
        patched = self._apply_patch(patch_type, base, document)
        body = self._prepare_body(route, patched, expect_name=route.name)
        return self._write(route, current, body, dry_run, _manager(request))

    def _write(
        self, route: Route, current: Obj, body: Obj, dry_run: bool, manager: str | None = None
    ) -> web.Response:
        """Store an update (PUT) or a patched object over ``current``, by subresource."""
        rtype = route.rtype
        if route.subresource == "scale":
            return _json_response(self._write_scale(route, current, body, dry_run))
        if route.subresource == "status":
            causes = validate_status(rtype, body)
            if causes:
                raise invalid(rtype.kind, route.name or "", causes, rtype.group)
            updated = self.store.update(rtype.key, body, subresource="status", dry_run=dry_run)
            return _json_response(updated)
        obj = self._validated(rtype, body, current)
        return _json_response(self.store.update(rtype.key, obj, dry_run=dry_run, manager=manager))

    def _apply_patch(self, patch_type: str, base: Obj, document: Any) -> Obj:
        if patch_type == patch.JSON_PATCH:
            return patch.apply_json_patch(base, document)
        if patch_type == patch.STRATEGIC_MERGE_PATCH:
            return patch.apply_strategic_merge_patch(base, document)
        if not isinstance(document, dict):
            raise bad_request("a merge patch must be a JSON object")
        # Merge patch, and server-side apply approximated as a merge patch.
        result = patch.apply_merge_patch(base, document)
        assert isinstance(result, dict)
        return result

    async def _apply_create(
        self, request: web.Request, route: Route, document: Any, dry_run: bool
    ) -> web.Response:
        """Server-side apply of a missing object creates it."""
        if not request.query.get("fieldManager"):
            raise bad_request("fieldManager is required for apply patch")
        body = self._prepare_body(route, document, expect_name=route.name)
        obj = self._validated(route.rtype, body, None)
        created = self.store.create(route.rtype.key, obj, dry_run=dry_run)
        return _json_response(created, 201)

    async def _delete(self, request: web.Request, route: Route) -> web.Response:
        assert route.name is not None
        rtype = route.rtype
        options: Any = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                options = _decode_json(raw)
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        dry_run = _dry_run(request.query) or "All" in (options.get("dryRun") or [])
        propagation = (
            request.query.get("propagationPolicy")
            or options.get("propagationPolicy")
            or "Background"
        )
        current = self.store.peek(rtype.key, route.namespace, route.name)
        if current is None:
            raise self._not_found(route)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted and wanted != current["metadata"].get(field):
                raise conflict(
                    rtype.plural,
                    route.name,
                    f"Precondition failed: {field}: {wanted}, {field} in object meta: "
                    f"{current['metadata'].get(field)}",
                    group=rtype.group,
                )
        deleted = self.store.delete(
            rtype.key, route.namespace, route.name, propagation=propagation, dry_run=dry_run
        )
        if rtype.key == "v1/pods" or rtype.custom:
            return _json_response(deleted)
        return _json_response(_success_status(rtype, deleted))

    async def _delete_collection(self, request: web.Request, route: Route) -> web.Response:
        dry_run = _dry_run(request.query)
        items = self.store.list(
            route.rtype.key,
            route.namespace,
            label_selector=request.query.get("labelSelector"),
            field_selector=request.query.get("fieldSelector"),
        )
        deleted: list[Obj] = []
        for obj in items:
            meta = obj["metadata"]
            if self.store.peek(route.rtype.key, meta.get("namespace"), meta["name"]) is None:
                continue  # already collected as a dependent of an earlier item
            deleted.append(
                self.store.delete(
                    route.rtype.key, meta.get("namespace"), meta["name"], dry_run=dry_run
                )
            )
        body = {
            "kind": route.rtype.list_kind,
            "apiVersion": route.rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": deleted,
        }
        return _json_response(body)


def _partial_event(output: media.Output, event_type: str, obj: Obj) -> bytes:
    return event_line(event_type, media.partial_object(obj, output))


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as error:
        raise bad_request(f"the body of the request could not be decoded: {error}") from None


def ensure_namespaces(store: Store, names: Iterable[str]) -> None:
    """Create the namespaces every cluster starts with (idempotent)."""
    for name in names:
        if store.peek("v1/namespaces", None, name) is None:
            obj: Obj = {"metadata": {"name": name}, "status": {"phase": "Active"}}
            apply_defaults(REGISTRY["v1/namespaces"], obj)
            store.create("v1/namespaces", obj)


__all__ = ["KubeApi", "Route", "WatchHub", "ensure_namespaces", "parse_route", "scale_of"]


def _manager(request: web.Request) -> str:
    """The field manager of a write: ``fieldManager``, else the User-Agent up to its first /."""
    given = request.query.get("fieldManager")
    if given:
        return given
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0] or "unknown"
