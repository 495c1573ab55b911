"""The HTTP face of rollbackd: Alertmanager webhook, health, metrics, rollback API.

The webhook answers fast and never decides anything: it authenticates, bounds
the body, and hands the bytes to an ``AlertSink`` (the daemon's intake), which
validates, dedupes, journals and enqueues. The status codes are chosen for
Alertmanager's retry behaviour: whatever the body contains that will never
work is the sender's fault and gets a 4xx (not retried): 400 not JSON, 415 not
``application/json``, 422 not a usable v4 payload or every alert rejected,
408 a body slower than ``body_timeout``. Only what may succeed later gets 503
(retried), so an alert is only dropped when retrying could not help. One bad
alert costs only itself: the answer lists it under ``rejected``.

Who may do what (secure by default). Health, readiness, metrics and the
OpenAPI document are open: probes and the Prometheus scrape carry no
credentials. Every other path, known or not, needs a credential before
anything else is looked at, so an unauthenticated caller learns nothing and
changes nothing (401). Alertmanager's credential (``Role.ALERTS``) may post
alerts and read; only the separate operator token (``Role.OPERATOR``) may
start a rollback (403 otherwise), and without an operator token configured
manual rollbacks over HTTP are off. ``allow_unauthenticated`` opens the alert
and read routes on purpose, never manual rollbacks, and is logged as a
warning and exported as ``rollbackd_auth_disabled 1`` at every start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog
import yaml
from aiohttp import web
from multidict import CIMultiDict

from rollbackd.decide import ReasonCode
from rollbackd.errors import AcceptError, NotLeaderError
from rollbackd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rollbackd.metrics import Metrics
from rollbackd.model import RecordKind, Rollback, Target
from rollbackd.redact import redact_text, redact_value
from rollbackd.sources.alertmanager import PayloadError

if TYPE_CHECKING:
    from rollbackd.config import WebhookSettings

__all__ = [
    "MAX_BODY_BYTES",
    "AcceptError",
    "AcceptResult",
    "AlertSink",
    "AuthSettings",
    "JournalReader",
    "ManualRollback",
    "Role",
    "create_app",
    "openapi_document",
]

log = structlog.get_logger("rollbackd.server")

MAX_BODY_BYTES = 1 << 20
MAX_LIST_LIMIT = 1000
WEBHOOK_CONTENT_TYPE = "application/json"  # exactly what Alertmanager sends
# A body of a million broken alerts must not become a multi-megabyte answer.
MAX_REJECTED_SHOWN = 100
_REALM = "rollbackd"


@dataclass(frozen=True)
class AcceptResult:
    """How many alerts of one webhook body were accepted, repeated, or unmapped."""

    accepted: int
    duplicates: int
    unresolved: int
    # Alerts of the body that were invalid: {"index", "path", "reason"} each.
    rejected: list[dict[str, Any]] = field(default_factory=list)


class AlertSink(Protocol):
    async def accept_alerts(self, body: bytes) -> AcceptResult:
        """Validate, dedupe, journal and enqueue; raise PayloadError or AcceptError."""
        ...


class TimelineEntryLike(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any] | None: ...


class JournalReader(Protocol):
    """The journal's read side, as much of it as the API needs."""

    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None, kind: RecordKind | None = None
    ) -> list[Rollback]: ...
    async def get_rollback(self, rollback_id: str) -> Rollback | None: ...
    async def timeline(self, rollback_id: str) -> Sequence[TimelineEntryLike]: ...
    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None: ...


class ManualRollback(Protocol):
    def __call__(
        self, target: Target, dry_run: bool, *, force: bool, reason: str
    ) -> Awaitable[str]:
        """Start a manual rollback; return its id, raise LookupError or ValueError.

        ``force`` lifts the change window and the cooldown, nothing else: the
        guards (template diff, mutable image, GitOps, paused) always apply.
        """
        ...


# The only decisions an explicit force overrides; the guards are never among them.
FORCE_OVERRIDES = frozenset({ReasonCode.COOLDOWN.value, ReasonCode.NO_RECENT_ROLLOUT.value})
MAX_REASON_CHARS = 1000
_MANUAL_KEYS = frozenset({"target", "dry_run", "force", "reason"})
_MANUAL_SHAPE = '{"target": "NAMESPACE/NAME", "dry_run": false, "force": false, "reason": ""}'


def _refused(exc: ValueError, *, force: bool) -> web.Response:
    """409 for a manual request the rules refused; says when force would have helped."""
    decision = getattr(exc, "decision", None)
    code = str(getattr(decision, "reason_code", "") or "")
    extra: dict[str, Any] = {"reason_code": code} if code else {}
    if code in FORCE_OVERRIDES and not force:
        extra["hint"] = (
            '"force": true overrides the change window and the cooldown (the guards always apply)'
        )
    return _error(409, str(exc), **extra)


class Role(enum.Enum):
    """What a caller may do, by the credential it showed."""

    ALERTS = "alerts"  # Alertmanager (or anyone, with allow_unauthenticated): post alerts, read
    OPERATOR = "operator"  # a human with the operator token: also start rollbacks


# Env and file keys an operator sets; named in the 403 that says manual rollbacks are off.
OPERATOR_TOKEN_KEYS = "webhook.operator_token_file (or env ROLLBACKD__WEBHOOK__OPERATOR_TOKEN)"


@dataclass(frozen=True)
class AuthSettings:
    """Credentials the API accepts.

    Alertmanager's credential is a bearer token, basic auth, or either; it
    gets ``Role.ALERTS``. ``operator_token`` is a separate bearer token for
    humans (``Role.OPERATOR``). ``allow_unauthenticated`` gives anyone
    ``Role.ALERTS``; it must be asked for, never the result of a missing key.
    """

    bearer_token: str | None = None
    basic_username: str | None = None
    basic_password: str | None = None
    operator_token: str | None = None
    allow_unauthenticated: bool = False

    def __post_init__(self) -> None:
        if (
            self.bearer_token is None
            and self.basic_username is None
            and not self.allow_unauthenticated
        ):
            raise ValueError(
                "AuthSettings needs a bearer token or basic auth credentials "
                "(or allow_unauthenticated=True, on purpose)"
            )
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both a username and a password")
        if "" in (self.bearer_token, self.basic_password, self.operator_token):
            raise ValueError("credentials must not be empty")
        if self.operator_token is not None and self.operator_token in (
            self.bearer_token,
            self.basic_password,
        ):
            raise ValueError("the operator token must differ from Alertmanager's credential")

    @classmethod
    def from_webhook(cls, webhook: WebhookSettings) -> AuthSettings:
        """The credentials configured in ``webhook`` (validated there: never open by accident)."""
        basic = webhook.basic_auth
        return cls(
            bearer_token=webhook.bearer_token_value(),
            basic_username=basic.username if basic else None,
            basic_password=basic.password_value() if basic else None,
            operator_token=webhook.operator_token_value(),
            allow_unauthenticated=webhook.allow_unauthenticated,
        )

    @property
    def open(self) -> bool:
        """Whether requests without credentials are let in (alerts and reads only)."""
        return self.allow_unauthenticated

    def role(self, header: str | None) -> Role | None:
        """What the Authorization header allows; None: nothing (answer 401)."""
        if header:
            scheme, _, credentials = header.strip().partition(" ")
            scheme = scheme.lower()
            credentials = credentials.strip()
            if scheme == "bearer":
                # Both comparisons always run: timing does not say which token was close.
                operator = self.operator_token is not None and _same(
                    credentials, self.operator_token
                )
                alerts = self.bearer_token is not None and _same(credentials, self.bearer_token)
                if operator:
                    return Role.OPERATOR
                if alerts:
                    return Role.ALERTS
            elif scheme == "basic" and self._basic_matches(credentials):
                return Role.ALERTS
        return Role.ALERTS if self.allow_unauthenticated else None

    def _basic_matches(self, credentials: str) -> bool:
        if self.basic_username is None:
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        # Both comparisons always run: no early exit that leaks which part was wrong.
        user_ok = _same(username, self.basic_username)
        password_ok = _same(password, self.basic_password or "")
        return bool(sep) and user_ok and password_ok

    def allows(self, header: str | None) -> bool:
        """Whether an Authorization header carries valid credentials (any role)."""
        return self.role(header) is not None

    def challenges(self) -> list[str]:
        out = []
        if self.bearer_token is not None or self.operator_token is not None:
            out.append(f'Bearer realm="{_REALM}"')
        if self.basic_username is not None:
            out.append(f'Basic realm="{_REALM}", charset="UTF-8"')
        return out


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@cache
def openapi_document() -> tuple[str, dict[str, Any]]:
    """The packaged OpenAPI document, as YAML text and as parsed data."""
    text = resources.files("rollbackd").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return text, yaml.safe_load(text)


def _error(
    status: int,
    message: str,
    headers: CIMultiDict[str] | None = None,
    *,
    path: str | None = None,
    **extra: Any,
) -> web.Response:
    """A JSON error answer: ``{"error": message}``, plus the JSON ``path`` when known."""
    body: dict[str, Any] = {"error": redact_text(message)}
    if path is not None:
        body["path"] = path
    body.update(extra)
    return web.json_response(body, status=status, headers=headers)


class _BodyRefused(Exception):
    """The request body was not read; ``response`` says why."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body, or ``_BodyRefused``: 413 too large, 408 too slow, 400 undecodable.

    The deadline covers the whole read, so a client that trickles a byte at a
    time cannot hold a handler (and its connection) open indefinitely.
    """
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        max_bytes = request.app[_MAX_BODY_KEY]
        raise _BodyRefused(_error(413, f"body larger than {max_bytes} bytes")) from None
    except web.RequestPayloadError as exc:
        # The transfer itself is broken (say gzip declared, not sent): the sender's fault.
        raise _BodyRefused(_error(400, f"body could not be read: {exc}")) from None
    except TimeoutError:
        log.warning("request_body_timeout", path=request.path, timeout_s=timeout)
        response = _error(408, f"request body not received within {timeout:g} s")
        response.force_close()  # the rest of the body may never come: drop the connection
        raise _BodyRefused(response) from None


def _unsupported_media_type(request: web.Request) -> web.Response | None:
    """A 415 unless the body is declared as UTF-8 JSON (a charset parameter is allowed)."""
    charset = (request.charset or "utf-8").lower()
    if request.content_type == WEBHOOK_CONTENT_TYPE and charset in ("utf-8", "utf8"):
        return None
    given = request.headers.get("Content-Type", "(none)")
    return _error(
        415,
        f"Content-Type must be {WEBHOOK_CONTENT_TYPE} (UTF-8), got {given[:100]}",
        expected=WEBHOOK_CONTENT_TYPE,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def rollback_json(rollback: Rollback) -> dict[str, Any]:
    return {
        "id": rollback.id,
        "kind": str(rollback.kind),
        "target": str(rollback.target),
        "namespace": rollback.target.namespace,
        "name": rollback.target.name,
        "phase": str(rollback.phase),
        "from_revision": rollback.from_revision,
        "to_revision": rollback.to_revision,
        "reason_code": rollback.reason_code,
        "reason": rollback.reason,
        "started_at": _iso(rollback.started_at),
        "updated_at": _iso(rollback.updated_at),
        "finished_at": _iso(rollback.finished_at),
    }


def _timeline_json(entry: TimelineEntryLike) -> dict[str, Any]:
    return {
        "at": _iso(entry.at),
        "kind": entry.kind,
        "message": entry.message,
        "data": dict(entry.data) if entry.data else {},
    }


def _dumps(value: Any) -> str:
    # Timeline data is free-form; anything JSON does not know is shown as text.
    return json.dumps(value, default=str)


class _Api:
    """Route handlers, closed over the daemon's collaborators."""

    def __init__(
        self,
        *,
        alert_sink: AlertSink,
        journal: JournalReader,
        metrics: Metrics,
        readiness: Callable[[], tuple[bool, str]],
        auth: AuthSettings,
        manual_rollback: ManualRollback | None,
        body_timeout: float,
    ) -> None:
        self.alert_sink = alert_sink
        self.journal = journal
        self.metrics = metrics
        self.readiness = readiness
        self.auth = auth
        self.manual_rollback = manual_rollback
        self.body_timeout = body_timeout

    def unauthorized(self) -> web.Response:
        """The 401 answer, with a challenge per configured scheme."""
        headers: CIMultiDict[str] = CIMultiDict()
        for challenge in self.auth.challenges():
            headers.add("WWW-Authenticate", challenge)
        return _error(401, "authentication required", headers)

    @web.middleware
    async def authenticate(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Every route but the open ones needs a credential, before anything else happens.

        Unknown paths and wrong methods included: a caller without
        credentials learns nothing about what exists (401, never 404/405).
        """
        route = request.match_info.route
        if route.name in _OPEN_ROUTES:
            return await handler(request)
        role = self.auth.role(request.headers.get("Authorization"))
        if role is None:
            if route.name == _ALERTS_ROUTE:
                self.metrics.webhook_requests_total.labels(code="401").inc()
            return self.unauthorized()
        request[_ROLE_KEY] = role
        return await handler(request)

    async def alerts(self, request: web.Request) -> web.Response:
        response = await self._alerts(request)
        self.metrics.webhook_requests_total.labels(code=str(response.status)).inc()
        return response

    async def _alerts(self, request: web.Request) -> web.Response:
        denied = _unsupported_media_type(request)
        if denied is not None:
            return denied
        try:
            body = await _read_body(request, self.body_timeout)
        except _BodyRefused as refused:
            return refused.response
        try:
            result = await self.alert_sink.accept_alerts(body)
        except PayloadError as exc:
            # The body's own fault, whatever the sink says: never a retried 5xx.
            status = exc.status if 400 <= exc.status < 500 else 400
            log.warning("webhook_payload_rejected", status=status, path=exc.path, error=str(exc))
            return _error(status, str(exc), path=exc.path)
        except AcceptError as exc:
            log.warning("webhook_not_accepted", error=str(exc))
            return _error(503, f"not accepted, retry later: {exc}")
        except Exception as exc:
            # Unknown failures may be transient: 503 makes Alertmanager retry
            # rather than lose the alert.
            log.exception("webhook_failed")
            return _error(503, f"not accepted, retry later: {type(exc).__name__}")
        counts: dict[str, Any] = {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "unresolved": result.unresolved,
            "rejected": result.rejected[:MAX_REJECTED_SHOWN],
            "rejected_total": len(result.rejected),
        }
        if result.rejected and not (result.accepted or result.duplicates or result.unresolved):
            # Every alert was unusable: resending the same body cannot help.
            log.warning(
                "webhook_all_alerts_rejected",
                rejected=len(result.rejected),
                first_path=result.rejected[0].get("path"),
            )
            return _error(422, "every alert in the body was rejected", path="$.alerts", **counts)
        return web.json_response(counts)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def list_rollbacks(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return _error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return _error(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
        namespace, name = query.get("namespace"), query.get("name")
        if (namespace is None) != (name is None):
            return _error(400, "namespace and name filter together: give both or neither")
        target = Target(namespace, name) if namespace and name else None
        if (namespace, name) != (None, None) and target is None:
            return _error(400, "namespace and name must not be empty")
        kind = None
        if "kind" in query:
            try:
                kind = RecordKind(query["kind"])
            except ValueError:
                kinds = ", ".join(k.value for k in RecordKind)
                return _error(400, f"kind must be one of {kinds}")
        rollbacks = await self.journal.list_rollbacks(limit=limit, target=target, kind=kind)
        listed = [redact_value(rollback_json(r)) for r in rollbacks]
        return web.json_response({"rollbacks": listed})

    async def get_rollback(self, request: web.Request) -> web.Response:
        rollback_id = request.match_info["id"]
        rollback = await self.journal.get_rollback(rollback_id)
        if rollback is None:
            return _error(404, f"no rollback with id {rollback_id!r}")
        timeline = await self.journal.timeline(rollback_id)
        details = await self.journal.rollback_details(rollback_id)
        body = rollback_json(rollback)
        body["timeline"] = [_timeline_json(e) for e in timeline]
        body["details"] = details
        # Errors quoted in the timeline may hold a URL with credentials.
        return web.json_response(redact_value(body), dumps=_dumps)

    async def report(self, request: web.Request) -> web.Response:
        rollback_id = request.match_info["id"]
        rollback = await self.journal.get_rollback(rollback_id)
        if rollback is None:
            return _error(404, f"no rollback with id {rollback_id!r}")
        from rollbackd.report import render_report  # imported late: optional at start-up

        timeline = await self.journal.timeline(rollback_id)
        details = await self.journal.rollback_details(rollback_id)
        text = redact_text(render_report(rollback, cast(Any, timeline), details))
        return web.Response(text=text, content_type="text/markdown", charset="utf-8")

    def _manual_forbidden(self, request: web.Request) -> web.Response | None:
        """403 unless the caller showed the operator token (and one is configured)."""
        if self.auth.operator_token is None:
            return _error(
                403,
                "manual rollbacks over HTTP are disabled: no operator credential is "
                f"configured; set {OPERATOR_TOKEN_KEYS}",
            )
        if request.get(_ROLE_KEY) is not Role.OPERATOR:
            log.warning("manual_rollback_forbidden", remote=request.remote)
            return _error(
                403,
                "starting a rollback needs the operator token; Alertmanager's credential "
                "may only post alerts and read",
            )
        return None

    async def start_rollback(self, request: web.Request) -> web.Response:
        denied = self._manual_forbidden(request)
        if denied is not None:
            return denied
        assert self.manual_rollback is not None  # the route exists only with it
        try:
            body = await _read_body(request, self.body_timeout)
        except _BodyRefused as refused:
            return refused.response
        try:
            payload = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            # Not UTF-8, not JSON, a number past Python's digit limit, or nested too deep.
            return _error(400, "body must be JSON")
        if not isinstance(payload, dict) or set(payload) - _MANUAL_KEYS:
            return _error(400, f"expected {_MANUAL_SHAPE}")
        for flag in ("dry_run", "force"):
            if not isinstance(payload.get(flag, False), bool):
                return _error(400, f"{flag} must be true or false")
        dry_run, force = payload.get("dry_run", False), payload.get("force", False)
        reason = payload.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            return _error(400, f"reason must be text of at most {MAX_REASON_CHARS} characters")
        try:
            target = Target.parse(str(payload.get("target", "")))
        except ValueError as exc:
            return _error(400, f"target: {exc}")
        try:
            rollback_id = await self.manual_rollback(target, dry_run, force=force, reason=reason)
        except NotLeaderError as exc:
            return _error(503, str(exc))
        except LookupError as exc:
            return _error(404, str(exc))
        except ValueError as exc:
            return _refused(exc, force=force)
        # A forced rollback overrides safety timing: it stands out in the log.
        (log.warning if force else log.info)(
            "manual_rollback_requested",
            target=str(target),
            rollback_id=rollback_id,
            dry_run=dry_run,
            force=force,
        )
        return web.json_response({"rollback_id": rollback_id}, status=202)

    async def openapi_yaml(self, request: web.Request) -> web.Response:
        text, _ = openapi_document()
        return web.Response(text=text, content_type="application/yaml", charset="utf-8")

    async def openapi_json(self, request: web.Request) -> web.Response:
        _, document = openapi_document()
        return web.json_response(document)


_MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
_ROLE_KEY = web.RequestKey("rollbackd_role", Role)  # the Role the credential gave
_ALERTS_ROUTE = "alerts"
# Probes and the Prometheus scrape carry no credentials; nothing here changes anything.
_OPEN_ROUTES = frozenset({"healthz", "readyz", "metrics", "openapi_yaml", "openapi_json"})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes, wrong methods and handler crashes answer JSON, not HTML."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        )
        return _error(exc.status, exc.reason, kept)
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return _error(500, "internal error")


def create_app(
    *,
    alert_sink: AlertSink,
    journal: JournalReader,
    metrics: Metrics,
    readiness: Callable[[], tuple[bool, str]],
    auth: AuthSettings,
    manual_rollback: ManualRollback | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = 10.0,
) -> web.Application:
    """The aiohttp application; the caller runs it (AppRunner) and owns its lifecycle.

    ``auth`` is required: an open API is ``AuthSettings(allow_unauthenticated=True)``,
    said on purpose, and is warned about (log and ``rollbackd_auth_disabled``)
    every time an app is built. ``body_timeout`` bounds reading a request
    body (webhook and manual rollback) from first to last byte; slower
    clients get 408.
    """
    if body_timeout <= 0:
        raise ValueError("body_timeout must be positive")
    if not isinstance(auth, AuthSettings):
        raise TypeError("auth must be AuthSettings; an open API is allow_unauthenticated=True")
    metrics.auth_disabled.set(1 if auth.open else 0)
    if auth.open:
        log.warning(
            "api_authentication_disabled",
            detail="webhook.allow_unauthenticated is true: anyone who reaches this port "
            "may post alerts and read rollbacks",
            manual_rollbacks="operator token" if auth.operator_token else "disabled",
        )
    api = _Api(
        alert_sink=alert_sink,
        journal=journal,
        metrics=metrics,
        readiness=readiness,
        auth=auth,
        manual_rollback=manual_rollback,
        body_timeout=body_timeout,
    )
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[_json_errors, api.authenticate]
    )
    app[_MAX_BODY_KEY] = max_body_bytes
    # Route names matter: the authenticate middleware lets only _OPEN_ROUTES through.
    app.router.add_post("/api/v1/alerts", api.alerts, name=_ALERTS_ROUTE)
    app.router.add_get("/healthz", api.healthz, allow_head=False, name="healthz")
    app.router.add_get("/readyz", api.readyz, allow_head=False, name="readyz")
    app.router.add_get("/metrics", api.metrics_page, allow_head=False, name="metrics")
    app.router.add_get("/api/v1/rollbacks", api.list_rollbacks, allow_head=False)
    if manual_rollback is not None:
        app.router.add_post("/api/v1/rollbacks", api.start_rollback)
    app.router.add_get("/api/v1/rollbacks/{id}", api.get_rollback, allow_head=False)
    app.router.add_get("/api/v1/rollbacks/{id}/report", api.report, allow_head=False)
    app.router.add_get("/openapi.yaml", api.openapi_yaml, allow_head=False, name="openapi_yaml")
    app.router.add_get("/openapi.json", api.openapi_json, allow_head=False, name="openapi_json")
    return app
