"""Fault injection: make matching API requests fail, slow down, lose their connection or watches.

Reliability tests of rollbackd need the failures a real cluster produces
(5xx, 409 conflicts, 429 throttling with Retry-After, latency, connections
reset by a load balancer, watch streams cut) on demand and
deterministically: a rule matches by Kubernetes verb and a regular
expression on the URL path, may let the first ``after`` matches through,
and fires a bounded number of times, or (``fail_for``) at most once per
period for a duration.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


def _check_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"status must be a 4xx or 5xx code, got {status}")


def _check_count(count: int, after: int) -> None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if after < 0:
        raise ValueError(f"after must not be negative, got {after}")


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


class ResetConnection(Exception):
    """Not an API answer: the server drops the TCP connection (RST) without replying."""

    def __init__(self, verb: str, path: str) -> None:
        super().__init__(f"kubesim injected fault: connection reset on {verb} {path}")


@dataclass
class _Rule:
    verb: str
    path: re.Pattern[str]
    remaining: int | None  # None: forever (or until ``until``)
    status: int | None = None
    delay: float = 0.0
    reset: bool = False
    skip: int = 0  # matching requests let through before the rule starts firing
    every: float = 0.0  # fire at most once per this many seconds
    until: float | None = None  # time.monotonic() after which the rule is spent
    last_fired: float | None = field(default=None)

    def matches(self, verb: str, path: str) -> bool:
        return (self.verb in ("*", verb)) and self.path.search(path) is not None

    @property
    def expired(self) -> bool:
        return self.until is not None and time.monotonic() >= self.until

    def consume(self) -> bool:
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.expired:
            return False
        now = time.monotonic()
        if self.every and self.last_fired is not None and now - self.last_fired < self.every:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        self.last_fired = now
        return True

    @property
    def spent(self) -> bool:
        return self.remaining == 0 or self.expired


class FaultInjector:
    """Rules consulted by the API server before it handles each request."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        # Set by the server: closes open watches whose path matches (None = all).
        self.watch_dropper: Callable[[re.Pattern[str] | None], int] | None = None

    def fail(
        self, verb: str, path_pattern: str, status: int, count: int = 1, *, after: int = 0
    ) -> None:
        """Answer ``count`` requests matching ``verb`` and ``path_pattern`` with ``status``.

        ``after`` matching requests are let through first, so a test can hit
        exactly the n-th call of a sequence.
        """
        _check_status(status)
        _check_count(count, after)
        self._rules.append(
            _Rule(_normalise_verb(verb), _compile(path_pattern), count, status=status, skip=after)
        )

    def fail_for(
        self, verb: str, path_pattern: str, status: int, *, duration: float, every: float = 0.0
    ) -> None:
        """For ``duration`` seconds from now, answer matching requests with ``status``.

        With ``every`` > 0 at most one request per ``every`` seconds fails (a
        conflict "every 150 ms"); with 0 every matching request fails.
        """
        _check_status(status)
        if duration <= 0 or every < 0:
            raise ValueError(
                f"duration must be positive and every not negative: {duration}, {every}"
            )
        self._rules.append(
            _Rule(
                _normalise_verb(verb),
                _compile(path_pattern),
                None,
                status=status,
                every=every,
                until=time.monotonic() + duration,
            )
        )

    def reset(self, verb: str, path_pattern: str, count: int = 1, *, after: int = 0) -> None:
        """Drop the connection (TCP reset, no answer) of ``count`` matching requests.

        The request is not handled: nothing changes on the server, as when a
        proxy in front of the API server dies.
        """
        _check_count(count, after)
        self._rules.append(
            _Rule(_normalise_verb(verb), _compile(path_pattern), count, reset=True, skip=after)
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

    def check(self, verb: str, path: str) -> tuple[float, ApiError | ResetConnection | None]:
        """Delay to apply and failure for this request; consumes matching rules.

        The failure is an ``ApiError`` to answer, or ``ResetConnection``: drop
        the connection without an answer.
        """
        delay = 0.0
        error: ApiError | ResetConnection | None = None
        for rule in list(self._rules):
            if rule.expired:
                self._rules.remove(rule)
                continue
            if not rule.matches(verb, path):
                continue
            failing = rule.status is not None or rule.reset
            if failing and error is not None:
                continue  # one failure per request; later rules keep their count
            if not rule.consume():
                continue
            if rule.reset:
                error = ResetConnection(verb, path)
            elif rule.status is not None:
                error = injected_error(rule.status, verb, path)
            else:
                delay += rule.delay
            if rule.spent:
                self._rules.remove(rule)
        return delay, error

    def pending(self) -> int:
        """Rules that can still fire (count not used up, duration not over)."""
        return sum(1 for rule in self._rules if not rule.spent)

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
            after = int(body.get("after", 0))
            if "delay" in body:
                self.delay(verb, path, float(body["delay"]), None if count is None else int(count))
            elif body.get("reset"):
                self.reset(verb, path, 1 if count is None else int(count), after=after)
            elif "status" in body and "duration" in body:
                self.fail_for(
                    verb,
                    path,
                    int(body["status"]),
                    duration=float(body["duration"]),
                    every=float(body.get("every", 0.0)),
                )
            elif "status" in body:
                self.fail(
                    verb, path, int(body["status"]), 1 if count is None else int(count), after=after
                )
            else:
                raise ValueError('expected "status", "delay", "reset" or "drop_watches"')
        except (TypeError, ValueError) as error:
            raise bad_request(f"invalid fault: {error}") from None
        return {"rules": len(self._rules)}

    @property
    def active_rules(self) -> int:
        return len(self._rules)
