"""Smoke checks of a restored version: its Service answers the core path as expected.

Metrics say how the traffic that arrived went; a smoke check asks the
Service a question of its own (config ``verify.smoke_checks``, picked per
Deployment by the annotation ``rollbackd.io/smoke-checks``). Verification
runs the Deployment's checks at each interval whose metrics and readiness are
healthy. A check fails on another status than the expected one, on a JSON
field that is missing or different, and when the Service answers nothing
(refused, reset, timed out): silence from a restored version is evidence
against it, not a lack of data. An unknown check name or a Deployment that
no Service selects fails too, with the reason said, never a crash.

A 429 (unless it is the expected status) is neither: the Service answered,
on purpose, that it sheds load, as a restored version may while clients
retry the requests the bad one failed. It says nothing about whether the
version works, so the outcome is *inconclusive* (Retry-After quoted) and
verification asks again at its next interval, like an interval without data.

How the Service is reached (:mod:`rollbackd.smoke_transport`) is separate,
so the judging here is tested against a plain local HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import aiohttp
import structlog

from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS, SmokeCheck, checks_named
from rollbackd.model import Target
from rollbackd.redact import redact_text

__all__ = [
    "EXCERPT_CHARS",
    "ServicePort",
    "ServiceRef",
    "SmokeAnswer",
    "SmokeChecker",
    "SmokeContext",
    "SmokeOutcome",
    "SmokeRequest",
    "Transport",
]

log = structlog.get_logger(__name__)

# Enough of a body to recognise an error page; bounded, because it goes into pages.
EXCERPT_CHARS = 200
TOO_MANY_REQUESTS = 429
# A Retry-After is a number or an HTTP date; anything longer is cut.
RETRY_AFTER_CHARS = 40
_MISSING = object()


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int

    @property
    def ref(self) -> str:
        """How the service proxy names the port: by name when it has one."""
        return self.name or str(self.port)


@dataclass(frozen=True)
class ServiceRef:
    """A Service that selects the Deployment's pods, with its ports."""

    name: str
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class SmokeContext:
    """What the checks need from the cluster: the annotations and the selecting Services."""

    annotations: Mapping[str, str]
    services: tuple[ServiceRef, ...]


@dataclass(frozen=True)
class SmokeOutcome:
    """A check's verdict; ``inconclusive`` (never with ``ok``): answered, but no verdict."""

    name: str
    ok: bool
    detail: str
    status: int | None = None
    inconclusive: bool = False


class SmokeAnswer(NamedTuple):
    """What the Service answered: status, body, and its Retry-After header if any."""

    status: int
    body: bytes
    retry_after: str | None = None


@dataclass(frozen=True)
class SmokeRequest:
    """One check's request, addressed to a Service's port (``path`` filled in)."""

    namespace: str
    service: str
    port: ServicePort
    method: str
    path: str
    headers: Mapping[str, str]
    body: str | None
    timeout: float


class Transport(Protocol):
    """Sends one request to a Service's port; returns what it answered."""

    async def send(self, request: SmokeRequest) -> SmokeAnswer: ...


ContextFn = Callable[[Target], Awaitable[SmokeContext]]


class SmokeChecker:
    """Runs the checks a Deployment names against the Service that selects its pods."""

    def __init__(
        self,
        checks: Sequence[SmokeCheck],
        transport: Transport,
        context: ContextFn,
    ) -> None:
        self._checks = {check.name: check for check in checks}
        self._transport = transport
        self._context = context

    async def run(self, target: Target) -> tuple[SmokeOutcome, ...]:
        """Every named check's outcome, in the annotation's order; () when none is named."""
        context = await self._context(target)
        names = checks_named(context.annotations.get(ANNOTATION_SMOKE_CHECKS))
        outcomes = []
        for name in names:
            check = self._checks.get(name)
            if check is None:
                known = ", ".join(sorted(self._checks)) or "none"
                detail = (
                    f'smoke check "{name}" is not configured ({ANNOTATION_SMOKE_CHECKS} on '
                    f"{target}; configured: {known})"
                )
                outcomes.append(SmokeOutcome(name, False, detail))
            elif not context.services:
                detail = f'smoke check "{name}": no Service selects the pods of {target}'
                outcomes.append(SmokeOutcome(name, False, detail))
            else:
                # Several selecting Services: the first by name is the one checked.
                service = min(context.services, key=lambda s: s.name)
                outcomes.append(await self.run_check(check, target, service))
        return tuple(outcomes)

    async def run_check(
        self, check: SmokeCheck, target: Target, service: ServiceRef
    ) -> SmokeOutcome:
        """One check against one Service; an answer, or silence, is an outcome.

        Only what says the check could not be asked at all (the API server
        refusing rollbackd the service proxy) is raised: that is no evidence.
        """
        path = check.render_url(
            namespace=target.namespace, service=service.name, deployment=target.name
        )
        port = _port(service, check.port)
        where = f"{check.method} {path} on service {service.name}"
        if port is None:
            wanted = "any port" if check.port is None else f"port {check.port}"
            return SmokeOutcome(check.name, False, _quote(check, f"{where}: no {wanted}"))
        where = f"{check.method} {path} on service {service.name}:{port.ref}"
        timeout = check.timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                answer = await self._transport.send(
                    SmokeRequest(
                        namespace=target.namespace,
                        service=service.name,
                        port=port,
                        method=check.method,
                        path=path,
                        headers=check.headers,
                        body=check.body,
                        timeout=timeout,
                    )
                )
        except TimeoutError:
            log.warning("smoke_check_no_answer", check=check.name, target=str(target))
            return SmokeOutcome(
                check.name, False, _quote(check, f"{where}: no answer in {timeout:g}s")
            )
        except (aiohttp.ClientError, OSError) as exc:
            reason = redact_text(str(exc) or type(exc).__name__)
            log.warning("smoke_check_no_answer", check=check.name, target=str(target), error=reason)
            return SmokeOutcome(check.name, False, _quote(check, f"{where}: no answer: {reason}"))
        status, body = answer.status, answer.body
        if status == TOO_MANY_REQUESTS and check.expect_status != TOO_MANY_REQUESTS:
            return _rate_limited(check, target, where, answer)
        problem = judge(check, status, body)
        log.info("smoke_check", check=check.name, target=str(target), status=status, ok=not problem)
        if problem:
            text = f"{where}: {problem}; body: {excerpt(body)!r}"
            return SmokeOutcome(check.name, False, _quote(check, text), status)
        return SmokeOutcome(check.name, True, _quote(check, f"{where}: {status}"), status)


def _rate_limited(
    check: SmokeCheck, target: Target, where: str, answer: SmokeAnswer
) -> SmokeOutcome:
    """The Service shed the check's request: inconclusive, with its Retry-After quoted."""
    wait = answer.retry_after
    said = f", Retry-After {excerpt(wait.encode(), RETRY_AFTER_CHARS)}" if wait else ""
    log.warning("smoke_check_rate_limited", check=check.name, target=str(target), retry_after=wait)
    text = (
        f"{where}: rate limited (status 429{said}), no verdict on the version; "
        f"body: {excerpt(answer.body)!r}"
    )
    return SmokeOutcome(check.name, False, _quote(check, text), answer.status, inconclusive=True)


def _quote(check: SmokeCheck, text: str) -> str:
    return f'smoke check "{check.name}" {text}'


def _port(service: ServiceRef, wanted: str | int | None) -> ServicePort | None:
    """The Service port a check names (by name or number), or its first port."""
    if wanted is None:
        return service.ports[0] if service.ports else None
    for port in service.ports:
        if str(wanted) in (port.name, str(port.port)):
            return port
    return None


def judge(check: SmokeCheck, status: int, body: bytes) -> str:
    """What is wrong with an answer; "" when it passes."""
    if status != check.expect_status:
        return f"status {status}, expected {check.expect_status}"
    if not check.expect_json:
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return "body is not JSON"
    for assertion in check.expect_json:
        value = field(document, assertion.path)
        if value is _MISSING:
            return f"status {status} but JSON field {assertion.path} is missing"
        if not same_json(value, assertion.equals):
            return (
                f"status {status} but JSON field {assertion.path} is {json.dumps(value)}, "
                f"expected {json.dumps(assertion.equals)}"
            )
    return ""


def same_json(value: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python's ``True == 1`` is)."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return bool(value == expected)


def field(document: Any, path: str) -> Any:
    """The value at a dotted path (list items by index), or ``_MISSING``."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of a body as one line of text, bounded and with credentials masked."""
    text = re.sub(r"\s+", " ", body[: limit * 4].decode("utf-8", errors="replace")).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return redact_text(text)
