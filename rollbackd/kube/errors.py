"""Typed Kubernetes API errors, built from the ``metav1.Status`` the server sends.

The adapter converts every failure into one of these, so nothing
aiohttp- or kubernetes-asyncio-specific leaks out of it: callers decide on
the class (``ConflictError``: re-read; ``NotFoundError``: gone) and on
``transient`` (worth trying again: 429, 5xx, connection errors, timeouts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from rollbackd.retryafter import retry_after_seconds

__all__ = [
    "ConflictError",
    "ConnectionFailedError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeError",
    "NotFoundError",
    "ServerError",
    "TooManyRequestsError",
    "error_from_exception",
    "error_from_response",
    "parse_retry_after",
]


class KubeError(Exception):
    """The API server refused or failed a request.

    ``status`` is the HTTP code (0 when no answer came), ``reason`` the
    Status reason (``Conflict``, ``TooManyRequests``, ...), ``retry_after``
    the seconds the server asked us to wait, when it did.
    """

    transient = False

    def __init__(
        self,
        message: str,
        status: int = 0,
        *,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class ForbiddenError(KubeError):
    """403: RBAC does not allow the request; retrying cannot help."""


class NotFoundError(KubeError):
    """404: the object does not exist."""


class ConflictError(KubeError):
    """409: the object changed since it was read (resourceVersion precondition failed)."""


class GoneError(KubeError):
    """410: the resourceVersion is too old (a watch must re-list)."""


class InvalidError(KubeError):
    """422: the request is invalid (or a JSON patch ``test`` failed)."""


class TooManyRequestsError(KubeError):
    """429: the API server (or priority and fairness) throttles us; honour Retry-After."""

    transient = True


class ServerError(KubeError):
    """5xx: the API server or a proxy in front of it failed; usually passes."""

    transient = True


class ConnectionFailedError(KubeError):
    """No answer: connection refused or reset, server disconnected, or a timeout."""

    transient = True


_BY_STATUS: Mapping[int, type[KubeError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def parse_retry_after(header: str | None, status_body: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait, from the Retry-After header or Status ``details.retryAfterSeconds``."""
    details = (status_body or {}).get("details")
    seconds = details.get("retryAfterSeconds") if isinstance(details, Mapping) else None
    return retry_after_seconds(header, seconds)


def error_from_response(
    method: str,
    path: str,
    status: int,
    raw: bytes,
    headers: Mapping[str, str] | None = None,
) -> KubeError:
    """The typed error for a non-2xx answer, read from its Status body when there is one."""
    try:
        body = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {"message": raw[:200].decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {}
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) else status
    reason = str(body.get("reason") or "")
    text = str(body.get("message") or "").strip()
    message = (
        f"{method} {path}: {status}{f' {reason}' if reason else ''}{f': {text}' if text else ''}"
    )
    retry_after = parse_retry_after((headers or {}).get("Retry-After"), body)
    cls = (
        _BY_STATUS.get(status)
        or _BY_STATUS.get(code)
        or (ServerError if status >= 500 else KubeError)
    )
    return cls(message, status, reason=reason, retry_after=retry_after)


def error_from_exception(method: str, path: str, exc: BaseException) -> KubeError:
    """A request that got no HTTP answer: connection errors and timeouts are transient."""
    if isinstance(exc, KubeError):
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    message = f"{method} {path}: {detail}"
    # aiohttp.ClientConnectionError covers ServerDisconnectedError, ClientOSError
    # (connection reset) and ServerTimeoutError; TimeoutError is the request timeout.
    if isinstance(exc, aiohttp.ClientConnectionError | TimeoutError | ConnectionError):
        return ConnectionFailedError(message, reason="ConnectionFailed")
    if isinstance(exc, aiohttp.ClientPayloadError):
        # The answer was cut off mid-body: the connection broke.
        return ConnectionFailedError(message, reason="ConnectionFailed")
    return KubeError(message)
