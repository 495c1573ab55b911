"""Answers and bodies: JSON errors, bounded body reads, the JSON shape of a rollback."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import structlog
import yaml
from aiohttp import web
from multidict import CIMultiDict

from rollbackd.model import Rollback
from rollbackd.redact import redact_text

if TYPE_CHECKING:  # the report module loads only when a report is asked for
    from rollbackd.report import TimelineEntryLike

log = structlog.get_logger("rollbackd.server")

MAX_BODY_BYTES = 1 << 20
MAX_LIST_LIMIT = 1000
WEBHOOK_CONTENT_TYPE = "application/json"  # exactly what Alertmanager sends
# A body of a million broken alerts must not become a multi-megabyte answer.
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)


@cache
def openapi_document() -> tuple[str, dict[str, Any]]:
    """The packaged OpenAPI document, as YAML text and as parsed data."""
    text = resources.files("rollbackd").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return text, yaml.safe_load(text)


def error(
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


class BodyRefused(Exception):
    """The request body was not read; ``response`` says why."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body, or ``BodyRefused``: 413 too large, 408 too slow, 400 undecodable.

    The deadline covers the whole read, so a client that trickles a byte at a
    time cannot hold a handler (and its connection) open indefinitely.
    """
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        max_bytes = request.app[MAX_BODY_KEY]
        raise BodyRefused(error(413, f"body larger than {max_bytes} bytes")) from None
    except web.RequestPayloadError as exc:
        # The transfer itself is broken (say gzip declared, not sent): the sender's fault.
        raise BodyRefused(error(400, f"body could not be read: {exc}")) from None
    except TimeoutError:
        log.warning("request_body_timeout", path=request.path, timeout_s=timeout)
        response = error(408, f"request body not received within {timeout:g} s")
        response.force_close()  # the rest of the body may never come: drop the connection
        raise BodyRefused(response) from None


def unsupported_media_type(request: web.Request) -> web.Response | None:
    """A 415 unless the body is declared as UTF-8 JSON (a charset parameter is allowed)."""
    charset = (request.charset or "utf-8").lower()
    if request.content_type == WEBHOOK_CONTENT_TYPE and charset in ("utf-8", "utf8"):
        return None
    given = request.headers.get("Content-Type", "(none)")
    return error(
        415,
        f"Content-Type must be {WEBHOOK_CONTENT_TYPE} (UTF-8), got {given[:100]}",
        expected=WEBHOOK_CONTENT_TYPE,
    )


def iso(value: datetime | None) -> str | None:
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
        "started_at": iso(rollback.started_at),
        "updated_at": iso(rollback.updated_at),
        "finished_at": iso(rollback.finished_at),
    }


def timeline_json(entry: TimelineEntryLike) -> dict[str, Any]:
    return {
        "at": iso(entry.at),
        "kind": entry.kind,
        "message": entry.message,
        "data": dict(entry.data) if entry.data else {},
    }


def dumps_json(value: Any) -> str:
    # Timeline data is free-form; anything JSON does not know is shown as text.
    return json.dumps(value, default=str)
