"""Post-rollback verification: the same signals, over fresh data only.

After the restored version reports its rollout complete (``ready_at``),
rollbackd evaluates every signal at each of the next N scrape intervals
(3 by default). Evaluation ``i`` happens at ``ready_at + (i + 1) * scrape``
plus a little slack, so at least two fresh scrapes exist for ``rate()``; its
window is exactly ``at - ready_at`` (whole seconds, rounded down) so no rate
window reaches back into the bad period. An interval is healthy only if every
signal is HEALTHY (no data is not health: safety rule 8 in docs/architecture.md),
every desired pod is Ready and (``require_endpoints``, config ``verify.require_endpoints``) every
Service selecting the pods has ready endpoints.

A breach ends verification at once: waiting longer cannot undo it. An
interval without data, or with pods or endpoints not yet ready, is
*inconclusive*: it is recorded, never counted as healthy, and the next scrape
interval is judged instead (its window one scrape wider). Up to
``max_inconclusive`` (config ``verify.max_inconclusive``) such intervals are
tolerated, because a late scrape or a lagging endpoints controller on a loaded
cluster is not evidence against the restored version; one more ends
verification unhealthy with the last inconclusive reason. Verification as a
whole is bounded by ``timeout`` (config ``verify.timeout``): a query or a
readiness check that hangs past it ends verification unhealthy
(``verify_timeout``), never healthy.

Smoke checks (:mod:`rollbackd.smoke`) run at each interval whose signals and
readiness are healthy, after them. A failed check fails verification at once,
like a breach (``verify_smoke_failed``), and the detail quotes the check, the
status and an excerpt of the body. Checks that cannot be run at all (the
Deployment or its Services could not be read, the API server refused or
throttled the service proxy) and checks the Service rate limited (429) leave
the interval inconclusive.

Data assertions (:mod:`rollbackd.assertions`) run at the same intervals,
before the smoke checks, over the interval's fresh window. A failed one ends
verification at once (``verify_assertion_failed``), quoting the assertion,
the query as sent and the value seen; a broken one (Prometheus refused the
query) ends it too (``verify_assertion_invalid``: waiting cannot fix it). An
assertion without data leaves the interval inconclusive, never healthy.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollbackd.assertions import AssertionOutcome, AssertionStatus
from rollbackd.model import Target
from rollbackd.readiness import ReadinessReport, ServiceEndpoints
from rollbackd.reasons import RollbackReason
from rollbackd.signals import Evaluation, Verdict
from rollbackd.smoke import SmokeOutcome

__all__ = [
    "IntervalResult",
    "ReadinessReport",
    "ServiceEndpoints",
    "Verifier",
    "VerifyResult",
]


@dataclass(frozen=True)
class IntervalResult:
    index: int  # 1-based
    at: datetime
    evaluations: tuple[Evaluation, ...]
    readiness_ok: bool
    healthy: bool
    detail: str


@dataclass(frozen=True)
class VerifyResult:
    healthy: bool
    intervals: tuple[IntervalResult, ...]
    reason_code: RollbackReason  # VERIFIED or one of the VERIFY_* codes
    reason: str


EvaluateFn = Callable[[Target, str, datetime], Awaitable[list[Evaluation]]]
ReadinessFn = Callable[[Target], Awaitable[ReadinessReport]]
SmokeFn = Callable[[Target], Awaitable[Sequence[SmokeOutcome]]]
AssertionsFn = Callable[[Target, str, datetime], Awaitable[Sequence[AssertionOutcome]]]
# Endings that waiting longer cannot undo: verification stops at the first.
_FINAL = (
    RollbackReason.VERIFY_BREACH,
    RollbackReason.VERIFY_SMOKE_FAILED,
    RollbackReason.VERIFY_ASSERTION_FAILED,
    RollbackReason.VERIFY_ASSERTION_INVALID,
)


_ASSERTION_ORDER = (
    AssertionStatus.FAILED,
    AssertionStatus.INVALID,
    AssertionStatus.NO_DATA,
    AssertionStatus.PASSED,
)
# The first status present decides the interval; PASSED alone verifies.
_ASSERTION_CODES = (
    (AssertionStatus.FAILED, RollbackReason.VERIFY_ASSERTION_FAILED),
    (AssertionStatus.INVALID, RollbackReason.VERIFY_ASSERTION_INVALID),
    (AssertionStatus.NO_DATA, RollbackReason.VERIFY_NO_DATA),
)


class Verifier:
    """Judges a restored version over ``intervals`` scrape intervals after it became ready."""

    def __init__(
        self,
        evaluate: EvaluateFn,
        readiness: ReadinessFn,
        *,
        scrape_interval: timedelta,
        intervals: int = 3,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        slack: timedelta | None = None,
        evaluation_timeout: float = 30.0,
        timeout: float | None = None,
        require_endpoints: bool = True,
        max_inconclusive: int = 0,
        smoke: SmokeFn | None = None,
        assertions: AssertionsFn | None = None,
    ) -> None:
        if intervals < 1:
            raise ValueError("verification needs at least one interval")
        if max_inconclusive < 0:
            raise ValueError("max_inconclusive cannot be negative")
        if scrape_interval <= timedelta(0):
            raise ValueError("scrape_interval must be positive")
        self._evaluate = evaluate
        self._readiness = readiness
        self._smoke = smoke
        self._assertions = assertions
        self._scrape = scrape_interval
        self._intervals = intervals
        self._max_inconclusive = max_inconclusive
        self._clock = clock
        self._sleep = sleep
        # Slack lets Prometheus ingest the scrape that lands on the boundary.
        self._slack = slack if slack is not None else min(scrape_interval / 4, timedelta(seconds=5))
        self._evaluation_timeout = evaluation_timeout
        self._require_endpoints = require_endpoints
        self._timeout = timeout
        if timeout is not None:
            needed = (self.schedule(datetime.min)[-1][0] - datetime.min).total_seconds()
            if timeout < needed:
                # Every verification would time out: a config error, said at start.
                raise ValueError(
                    f"verify.timeout {timeout:g}s is shorter than the {needed:g}s that "
                    f"{intervals} scrape intervals of {scrape_interval.total_seconds():g}s need"
                )

    def schedule(self, ready_at: datetime) -> list[tuple[datetime, str]]:
        """Evaluation times and windows of the planned intervals, e.g. ``[(t, "2s"), ...]``."""
        return [self._slot(ready_at, index) for index in range(1, self._intervals + 1)]

    def _slot(self, ready_at: datetime, index: int) -> tuple[datetime, str]:
        at = ready_at + (index + 1) * self._scrape + self._slack
        seconds = math.floor((at - ready_at).total_seconds())
        if seconds < 1:
            # Sub-second scrape intervals (tests): wait for a whole-second
            # window rather than let the window reach back before ready_at.
            seconds = 1
            at = max(at, ready_at + timedelta(seconds=1))
        return at, f"{seconds}s"

    async def verify(self, target: Target, ready_at: datetime) -> VerifyResult:
        results: list[IntervalResult] = []
        if self._timeout is None:
            return await self._intervals_from(target, ready_at, results)
        try:
            async with asyncio.timeout(self._timeout):
                return await self._intervals_from(target, ready_at, results)
        except TimeoutError:
            return VerifyResult(
                False,
                tuple(results),
                RollbackReason.VERIFY_TIMEOUT,
                f"verification did not finish within {self._timeout:g}s "
                f"({len(results)}/{self._intervals} intervals judged)",
            )

    async def _intervals_from(
        self, target: Target, ready_at: datetime, results: list[IntervalResult]
    ) -> VerifyResult:
        healthy = inconclusive = 0
        index = 0
        while healthy < self._intervals:
            index += 1
            at, window = self._slot(ready_at, index)
            delay = (at - self._clock()).total_seconds()
            if delay > 0:
                await self._sleep(delay)
            result, code = await self._interval(target, index, at, window)
            results.append(result)
            if result.healthy:
                healthy += 1
                continue
            if code not in _FINAL:
                inconclusive += 1
                if inconclusive <= self._max_inconclusive:
                    continue
            return VerifyResult(
                False,
                tuple(results),
                code,
                f"interval {healthy + 1}/{self._intervals} unhealthy"
                f"{self._inconclusive_note(inconclusive)}: {result.detail}",
            )
        return VerifyResult(
            True,
            tuple(results),
            RollbackReason.VERIFIED,
            f"healthy for {self._intervals} scrape intervals after the rollback became ready"
            f"{self._inconclusive_note(inconclusive)}",
        )

    @staticmethod
    def _inconclusive_note(inconclusive: int) -> str:
        if not inconclusive:
            return ""
        plural = "s" if inconclusive > 1 else ""
        return (
            f" ({inconclusive} inconclusive interval{plural} without data, readiness or a verdict)"
        )

    async def _interval(
        self, target: Target, index: int, at: datetime, window: str
    ) -> tuple[IntervalResult, RollbackReason]:
        evaluations, error = await self._signals(target, window, at)
        readiness_ok, readiness_detail = await self._ready(target)
        breaches = [e for e in evaluations if e.verdict == Verdict.BREACH]
        missing = [e for e in evaluations if e.verdict not in (Verdict.HEALTHY, Verdict.BREACH)]
        details = [
            f"{e.signal}={e.value if e.value is not None else 'n/a'} "
            f"({e.verdict}, threshold {e.threshold})"
            for e in evaluations
        ]
        if error:
            details.append(error)
        details.append(readiness_detail)
        if breaches:
            code = RollbackReason.VERIFY_BREACH
        elif error or missing:
            code = RollbackReason.VERIFY_NO_DATA
        elif not readiness_ok:
            code = RollbackReason.VERIFY_NOT_READY
        else:
            # Only a version healthy by every other measure is asked its checks.
            code, check_details = await self._checks(target, window, at)
            # A failed check leads the detail: the page quotes it.
            failed = code in _FINAL
            details = [*check_details, *details] if failed else [*details, *check_details]
        healthy = code is RollbackReason.VERIFIED
        return (
            IntervalResult(index, at, evaluations, readiness_ok, healthy, "; ".join(details)),
            code,
        )

    async def _signals(
        self, target: Target, window: str, at: datetime
    ) -> tuple[tuple[Evaluation, ...], str]:
        try:
            async with asyncio.timeout(self._evaluation_timeout):
                evaluations = tuple(await self._evaluate(target, window, at))
        except TimeoutError:
            return (), "signal evaluation timed out"
        except Exception as exc:  # a failed query is no data, never health
            return (), f"signal evaluation failed: {exc}"
        return evaluations, "" if evaluations else "no signal evaluations (no data)"

    async def _ready(self, target: Target) -> tuple[bool, str]:
        try:
            report = await self._readiness(target)
        except Exception as exc:
            return False, f"readiness check failed: {exc}"
        ok = report.pods_ok and (report.endpoints_ok or not self._require_endpoints)
        return ok, report.detail

    async def _checks(
        self, target: Target, window: str, at: datetime
    ) -> tuple[RollbackReason, list[str]]:
        """Data assertions, then smoke checks; a final ending of either wins."""
        code, details = await self._data_assertions(target, window, at)
        if code in _FINAL:
            return code, details
        # Smoke checks run even when an assertion had no data: a failure is evidence now.
        smoke_code, smoke_details = await self._smoke_checks(target)
        if smoke_code in _FINAL:
            return smoke_code, [*smoke_details, *details]
        if code is RollbackReason.VERIFIED:
            code = smoke_code
        return code, [*details, *smoke_details]

    async def _data_assertions(
        self, target: Target, window: str, at: datetime
    ) -> tuple[RollbackReason, list[str]]:
        """VERIFIED, a final VERIFY_ASSERTION_* code, or VERIFY_NO_DATA (inconclusive)."""
        if self._assertions is None:
            return RollbackReason.VERIFIED, []
        try:
            async with asyncio.timeout(self._evaluation_timeout):
                outcomes = tuple(await self._assertions(target, window, at))
        except TimeoutError:
            return RollbackReason.VERIFY_NO_DATA, ["assertions did not finish in time"]
        except Exception as exc:  # e.g. the Deployment could not be read: no evidence
            return RollbackReason.VERIFY_NO_DATA, [f"assertions could not run: {exc}"]
        by_status = {
            status: [o.detail for o in outcomes if o.status is status] for status in AssertionStatus
        }
        # Failed first: evidence against the version says the most.
        details = [detail for status in _ASSERTION_ORDER for detail in by_status[status]]
        for status, code in _ASSERTION_CODES:
            if by_status[status]:
                return code, details
        return RollbackReason.VERIFIED, details

    async def _smoke_checks(self, target: Target) -> tuple[RollbackReason, list[str]]:
        """VERIFIED, VERIFY_SMOKE_FAILED, or VERIFY_NO_DATA when the checks gave no verdict."""
        if self._smoke is None:
            return RollbackReason.VERIFIED, []
        try:
            async with asyncio.timeout(self._evaluation_timeout):
                outcomes = tuple(await self._smoke(target))
        except TimeoutError:
            return RollbackReason.VERIFY_NO_DATA, ["smoke checks did not finish in time"]
        except Exception as exc:  # rollbackd could not ask: no evidence either way
            return RollbackReason.VERIFY_NO_DATA, [f"smoke checks could not run: {exc}"]
        failed = [o.detail for o in outcomes if not o.ok and not o.inconclusive]
        if failed:
            return RollbackReason.VERIFY_SMOKE_FAILED, failed
        details = [o.detail for o in outcomes]
        if any(o.inconclusive for o in outcomes):
            # Rate limited: answered, but no verdict on the version; the next interval asks again.
            return RollbackReason.VERIFY_NO_DATA, details
        return RollbackReason.VERIFIED, details
