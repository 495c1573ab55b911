"""Fault injection: make the next N matching API requests fail, slow down, or lose watches.

Reliability tests of rollbackd need the failures a real cluster produces
(5xx, 409 conflicts, 429 throttling with Retry-After, latency, watch streams
cut by a load balancer) on demand and deterministically: a rule matches by
Kubernetes verb and a regular expression on the URL path, and fires a
bounded number of times.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*"}
)
# HTTP method names are accepted too, for people who think in HTTP.
_HTTP_ALIASES = {"post": "create", "put": "update"}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
RETRY_AFTER_SECONDS = 1


def _normalise_verb(verb: str) -> str:
    verb = _HTTP_ALIASES.get(verb.lower(), verb.lower())
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}; expected one of {sorted(VERBS)}")
    return verb


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid path regex {pattern!r}: {error}") from None


def injected_error(status: int, verb: str, path: str) -> ApiError:
    """The Status a real server (or its front proxy) sends for ``status``."""
    reason = _REASONS.get(status, "Unknown")
    message = f"kubesim injected fault: {status} on {verb} {path}"
    if status == 429:
        return ApiError(
            429,
            reason,
            f"Too many requests: {message}",
            details={"retryAfterSeconds": RETRY_AFTER_SECONDS},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if status == 500:
        message = f"Internal error occurred: {message}"
    return ApiError(status, reason, message)


@dataclass
class _Rule:
    verb: str
    path: re.Pattern[str]
    remaining: int | None  # None: forever
    status: int | None = None
    delay: float = 0.0

    def matches(self, verb: str, path: str) -> bool:
        return (self.verb in ("*", verb)) and self.path.search(path) is not None

    def consume(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class FaultInjector:
    """Rules consulted by the API server before it handles each request."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        # Set by the server: closes open watches whose path matches (None = all).
        self.watch_dropper: Callable[[re.Pattern[str] | None], int] | None = None

    def fail(self, verb: str, path_pattern: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests matching ``verb`` and ``path_pattern`` with ``status``."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, got {status}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self._rules.append(
            _Rule(_normalise_verb(verb), _compile(path_pattern), count, status=status)
        )

    def delay(self, verb: str, path_pattern: str, seconds: float, count: int | None = None) -> None:
        """Hold matching requests for ``seconds`` before handling them (``count`` None: all)."""
        if seconds < 0:
            raise ValueError(f"delay must not be negative, got {seconds}")
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self._rules.append(
            _Rule(_normalise_verb(verb), _compile(path_pattern), count, delay=seconds)
        )

    def drop_watches(self, path_pattern: str | None = None) -> int:
        """Close open watch streams (matching ``path_pattern``); returns how many were closed."""
        pattern = _compile(path_pattern) if path_pattern is not None else None
        if self.watch_dropper is None:
            return 0
        return self.watch_dropper(pattern)

    def clear(self) -> None:
        self._rules.clear()

    def check(self, verb: str, path: str) -> tuple[float, ApiError | None]:
        """Delay to apply and error to answer for this request; consumes matching rules."""
        delay = 0.0
        error: ApiError | None = None
        for rule in list(self._rules):
            if not rule.matches(verb, path):
                continue
            if rule.status is not None and error is not None:
                continue  # one failure per request; later rules keep their count
            if not rule.consume():
                continue
            if rule.status is not None:
                error = injected_error(rule.status, verb, path)
            else:
                delay += rule.delay
            if rule.remaining == 0:
                self._rules.remove(rule)
        return delay, error

    def apply_admin_request(self, body: Any) -> dict[str, Any]:
        """Handle a POST to ``/_kubesim/faults``; bad input is a 400, never a crash."""
        if not isinstance(body, dict):
            raise bad_request("fault must be a JSON object")
        try:
            if body.get("drop_watches"):
                dropped = self.drop_watches(body.get("path"))
                return {"dropped": dropped}
            verb = str(body.get("verb", "*"))
            path = str(body.get("path", ".*"))
            count = body.get("count")
            if "delay" in body:
                self.delay(verb, path, float(body["delay"]), None if count is None else int(count))
            elif "status" in body:
                self.fail(verb, path, int(body["status"]), 1 if count is None else int(count))
            else:
                raise ValueError('expected "status", "delay" or "drop_watches"')
        except (TypeError, ValueError) as error:
            raise bad_request(f"invalid fault: {error}") from None
        return {"rules": len(self._rules)}

    @property
    def active_rules(self) -> int:
        return len(self._rules)
