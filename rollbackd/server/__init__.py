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
start, approve or reject a rollback (403 otherwise), and without an operator token configured
manual rollbacks over HTTP are off. ``allow_unauthenticated`` opens the alert
and read routes on purpose, never manual rollbacks, and is logged as a
warning and exported as ``rollbackd_auth_disabled 1`` at every start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from multidict import CIMultiDict

from rollbackd.errors import AcceptError
from rollbackd.metrics import Metrics
from rollbackd.server.approval import ApprovalApi, GiveVerdict
from rollbackd.server.auth import ALERTS_ROUTE, Authenticator, AuthSettings, Role
from rollbackd.server.contracts import AcceptResult, AlertSink, JournalReader, ManualRollback
from rollbackd.server.manual import FORCE_OVERRIDES, MAX_REASON_CHARS, ManualApi
from rollbackd.server.reads import ReadApi
from rollbackd.server.responses import MAX_BODY_BYTES, MAX_BODY_KEY, error, openapi_document
from rollbackd.server.webhook import WebhookApi

if TYPE_CHECKING:  # the draft's modules load only when a report is asked for
    from rollbackd.postmortem.source import ImpactSource

__all__ = [
    "FORCE_OVERRIDES",
    "MAX_BODY_BYTES",
    "MAX_REASON_CHARS",
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
        return error(exc.status, exc.reason, kept)
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return error(500, "internal error")


def create_app(
    *,
    alert_sink: AlertSink,
    journal: JournalReader,
    metrics: Metrics,
    readiness: Callable[[], tuple[bool, str]],
    auth: AuthSettings,
    manual_rollback: ManualRollback | None = None,
    impact_source: ImpactSource | None = None,
    give_verdict: GiveVerdict | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout: float = 10.0,
) -> web.Application:
    """The aiohttp application; the caller runs it (AppRunner) and owns its lifecycle.

    ``auth`` is required: an open API is ``AuthSettings(allow_unauthenticated=True)``,
    said on purpose, and is warned about (log and ``rollbackd_auth_disabled``)
    every time an app is built. ``body_timeout`` bounds reading a request
    body (webhook and manual rollback) from first to last byte; slower
    clients get 408. ``impact_source`` is the Prometheus the postmortem draft
    asks for the impact (None: the draft says it is unavailable).
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
    authenticator = Authenticator(auth, metrics)
    webhook = WebhookApi(alert_sink, metrics, body_timeout)
    reads = ReadApi(journal, metrics, readiness, impact_source)
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[_json_errors, authenticator.authenticate]
    )
    app[MAX_BODY_KEY] = max_body_bytes
    # Route names matter: the authenticate middleware lets only OPEN_ROUTES through.
    app.router.add_post("/api/v1/alerts", webhook.alerts, name=ALERTS_ROUTE)
    app.router.add_get("/healthz", reads.healthz, allow_head=False, name="healthz")
    app.router.add_get("/readyz", reads.readyz, allow_head=False, name="readyz")
    app.router.add_get("/metrics", reads.metrics_page, allow_head=False, name="metrics")
    app.router.add_get("/api/v1/rollbacks", reads.list_rollbacks, allow_head=False)
    if manual_rollback is not None:
        manual = ManualApi(auth, manual_rollback, body_timeout)
        app.router.add_post("/api/v1/rollbacks", manual.start_rollback)
    if give_verdict is not None:
        approval = ApprovalApi(auth, give_verdict, body_timeout)
        app.router.add_post("/api/v1/rollbacks/{id}/approve", approval.approve)
        app.router.add_post("/api/v1/rollbacks/{id}/reject", approval.reject)
    app.router.add_get("/api/v1/rollbacks/{id}", reads.get_rollback, allow_head=False)
    app.router.add_get("/api/v1/rollbacks/{id}/report", reads.report, allow_head=False)
    app.router.add_get("/openapi.yaml", reads.openapi_yaml, allow_head=False, name="openapi_yaml")
    app.router.add_get("/openapi.json", reads.openapi_json, allow_head=False, name="openapi_json")
    return app
