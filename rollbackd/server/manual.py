"""POST /api/v1/rollbacks: a rollback an operator asks for, under the same rules."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from rollbackd.errors import NotLeaderError
from rollbackd.model import Target
from rollbackd.reasons import ReasonCode
from rollbackd.server.auth import OPERATOR_TOKEN_KEYS, ROLE_KEY, AuthSettings, Role
from rollbackd.server.contracts import ManualRollback
from rollbackd.server.responses import BodyRefused, error, read_body

log = structlog.get_logger("rollbackd.server")

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
    return error(409, str(exc), **extra)


def _manual_request(body: bytes) -> tuple[Target, bool, bool, str] | web.Response:
    """(target, dry_run, force, reason) from a manual rollback's body, or the 400 answer."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        # Not UTF-8, not JSON, a number past Python's digit limit, or nested too deep.
        return error(400, "body must be JSON")
    if not isinstance(payload, dict) or set(payload) - _MANUAL_KEYS:
        return error(400, f"expected {_MANUAL_SHAPE}")
    for flag in ("dry_run", "force"):
        if not isinstance(payload.get(flag, False), bool):
            return error(400, f"{flag} must be true or false")
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        return error(400, f"reason must be text of at most {MAX_REASON_CHARS} characters")
    try:
        target = Target.parse(str(payload.get("target", "")))
    except ValueError as exc:
        return error(400, f"target: {exc}")
    return target, payload.get("dry_run", False), payload.get("force", False), reason


def operator_only(
    auth: AuthSettings, request: web.Request, what: str, action: str
) -> web.Response | None:
    """403 unless the caller showed the operator token (and one is configured)."""
    if auth.operator_token is None:
        return error(
            403,
            f"{what} over HTTP are disabled: no operator credential is "
            f"configured; set {OPERATOR_TOKEN_KEYS}",
        )
    if request.get(ROLE_KEY) is not Role.OPERATOR:
        log.warning("operator_action_forbidden", action=action, remote=request.remote)
        return error(
            403,
            f"{action} needs the operator token; Alertmanager's credential "
            "may only post alerts and read",
        )
    return None


class ManualApi:
    """The manual rollback handler; only the operator token may use it."""

    def __init__(
        self, auth: AuthSettings, manual_rollback: ManualRollback, body_timeout: float
    ) -> None:
        self.auth = auth
        self.manual_rollback = manual_rollback
        self.body_timeout = body_timeout

    def _manual_forbidden(self, request: web.Request) -> web.Response | None:
        return operator_only(self.auth, request, "manual rollbacks", "starting a rollback")

    async def start_rollback(self, request: web.Request) -> web.Response:
        denied = self._manual_forbidden(request)
        if denied is not None:
            return denied
        assert self.manual_rollback is not None  # the route exists only with it
        try:
            body = await read_body(request, self.body_timeout)
        except BodyRefused as refused:
            return refused.response
        parsed = _manual_request(body)
        if isinstance(parsed, web.Response):
            return parsed
        target, dry_run, force, reason = parsed
        try:
            rollback_id = await self.manual_rollback(target, dry_run, force=force, reason=reason)
        except NotLeaderError as exc:
            return error(503, str(exc))
        except LookupError as exc:
            return error(404, str(exc))
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
