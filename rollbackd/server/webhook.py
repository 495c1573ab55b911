"""POST /api/v1/alerts: Alertmanager's webhook, handed to the intake."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from rollbackd.errors import AcceptError
from rollbackd.metrics import Metrics
from rollbackd.server.contracts import AlertSink
from rollbackd.server.responses import BodyRefused, error, read_body, unsupported_media_type
from rollbackd.sources.alertmanager import PayloadError

log = structlog.get_logger("rollbackd.server")

# A body of a million broken alerts must not become a multi-megabyte answer.
MAX_REJECTED_SHOWN = 100


class WebhookApi:
    """The webhook handler, closed over the intake and the metrics."""

    def __init__(self, alert_sink: AlertSink, metrics: Metrics, body_timeout: float) -> None:
        self.alert_sink = alert_sink
        self.metrics = metrics
        self.body_timeout = body_timeout

    async def alerts(self, request: web.Request) -> web.Response:
        response = await self._alerts(request)
        self.metrics.webhook_requests_total.labels(code=str(response.status)).inc()
        return response

    async def _alerts(self, request: web.Request) -> web.Response:
        denied = unsupported_media_type(request)
        if denied is not None:
            return denied
        try:
            body = await read_body(request, self.body_timeout)
        except BodyRefused as refused:
            return refused.response
        try:
            result = await self.alert_sink.accept_alerts(body)
        except PayloadError as exc:
            # The body's own fault, whatever the sink says: never a retried 5xx.
            status = exc.status if 400 <= exc.status < 500 else 400
            log.warning("webhook_payload_rejected", status=status, path=exc.path, error=str(exc))
            return error(status, str(exc), path=exc.path)
        except AcceptError as exc:
            log.warning("webhook_not_accepted", error=str(exc))
            return error(503, f"not accepted, retry later: {exc}")
        except Exception as exc:
            # Unknown failures may be transient: 503 makes Alertmanager retry
            # rather than lose the alert.
            log.exception("webhook_failed")
            return error(503, f"not accepted, retry later: {type(exc).__name__}")
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
            return error(422, "every alert in the body was rejected", path="$.alerts", **counts)
        return web.json_response(counts)
