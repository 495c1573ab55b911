"""POST /api/v1/rollbacks/{id}/approve and /reject: a human's verdict on a proposed rollback.

Operator token only (403 otherwise, 401 without a credential, as for manual
rollbacks). Answers: 202 the verdict was acted on (the approval is on the
Deployment, or the rejection recorded), 200 the same verdict was already
given by the same person, 404 unknown id, 409 finished or changed (the body
names the phase and why), 503 this replica is a standby: nothing was
recorded, retry against the leader (the Service selects it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from rollbackd.approval import Outcome, Verdict
from rollbackd.errors import NotLeaderError
from rollbackd.model import utcnow
from rollbackd.server.auth import AuthSettings
from rollbackd.server.manual import MAX_REASON_CHARS, operator_only
from rollbackd.server.responses import BodyRefused, error, read_body

log = structlog.get_logger("rollbackd.server")

MAX_BY_CHARS = 200
GiveVerdict = Callable[[str, Verdict], Awaitable[Outcome]]


def _verdict_from(payload: dict[str, Any], *, approve: bool) -> Verdict | web.Response:
    """The verdict a body gives (who, why, now), or the 400 answer."""
    by, reason = payload.get("by") or "operator", payload.get("reason") or ""
    if not isinstance(by, str) or len(by) > MAX_BY_CHARS:
        return error(400, f"by must be text of at most {MAX_BY_CHARS} characters")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        return error(400, f"reason must be text of at most {MAX_REASON_CHARS} characters")
    if not approve and not reason.strip():
        return error(400, 'a rejection needs a reason: {"reason": "why not"}')
    return Verdict(approve, by.strip() or "operator", utcnow(), reason.strip())


class ApprovalApi:
    """The approve and reject handlers."""

    def __init__(self, auth: AuthSettings, give: GiveVerdict, body_timeout: float) -> None:
        self.auth = auth
        self.give = give
        self.body_timeout = body_timeout

    async def approve(self, request: web.Request) -> web.Response:
        return await self._verdict(request, approve=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._verdict(request, approve=False)

    async def _verdict(self, request: web.Request, *, approve: bool) -> web.Response:
        word = "approving" if approve else "rejecting"
        denied = operator_only(self.auth, request, "approvals", f"{word} a rollback")
        if denied is not None:
            return denied
        try:
            payload = await self._payload(request)
        except BodyRefused as refused:
            return refused.response
        except ValueError as exc:
            return error(400, str(exc))
        verdict = _verdict_from(payload, approve=approve)
        if isinstance(verdict, web.Response):
            return verdict
        rollback_id = request.match_info["id"]
        try:
            outcome = await self.give(rollback_id, verdict)
        except NotLeaderError as exc:
            return error(503, str(exc), hint="retry: the rollbackd Service routes to the leader")
        except LookupError as exc:
            return error(404, str(exc))
        log.info(
            "approval_verdict",
            rollback_id=rollback_id,
            verdict=verdict.word,
            by=verdict.by,
            status=outcome.status,
            phase=outcome.phase,
        )
        body = {"rollback_id": rollback_id, "phase": outcome.phase, "message": outcome.message}
        if outcome.status >= 400:
            return error(
                outcome.status, outcome.message, rollback_id=rollback_id, phase=outcome.phase
            )
        return web.json_response(body, status=outcome.status)

    async def _payload(self, request: web.Request) -> dict[str, Any]:
        body = await read_body(request, self.body_timeout)
        if not body.strip():
            return {}
        try:
            payload = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ValueError("body must be JSON") from None
        if not isinstance(payload, dict) or set(payload) - {"by", "reason"}:
            raise ValueError('expected {"by": "NAME", "reason": "TEXT"}')
        return payload
