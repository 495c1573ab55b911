"""PromQL adapter: instant queries and target metadata from a real Prometheus.

A thin layer over prometheus-api-client's ``PrometheusConnect``. That client
is synchronous (requests), so every call runs in a worker thread via
``asyncio.to_thread`` and never blocks the event loop. Retries live here, not
in the client: tenacity with bounded attempts and exponential backoff with
jitter, and only for failures that a retry can fix (connection errors,
timeouts, 5xx, 429). A bad query (4xx) fails at once. When attempts are
exhausted, ``PromQLError`` is raised; callers treat that as "no data", never
as health (safety rule 8).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
import yaml
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from urllib3.util.retry import Retry

__all__ = [
    "PromQL",
    "PromQLError",
    "Sample",
    "format_duration",
    "parse_duration",
]

T = TypeVar("T")

_STATUS_RE = re.compile(r"HTTP Status Code (\d{3})")
_DURATION_RE = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or a scalar, with empty labels)."""

    labels: Mapping[str, str]
    value: float  # NaN stays NaN: callers treat it as no data
    timestamp: float


class PromQLError(Exception):
    """A query could not be answered (after retries, or at once for a bad query)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def parse_duration(text: str) -> timedelta:
    """Parse a Prometheus duration ("15s", "1m30s", "500ms"); raises ValueError."""
    text = text.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """A range-selector duration in whole seconds, at least 1s ("37s")."""
    return f"{max(1, round(delta.total_seconds()))}s"


def _to_float(raw: Any) -> float:
    # Prometheus encodes sample values as strings: "1.5", "NaN", "+Inf".
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _parse_result(result: Any) -> list[Sample]:
    """Turn the API's ``data.result`` into samples.

    ``custom_query`` drops ``resultType``, so the shape tells: a scalar is
    ``[ts, "v"]``, a vector is a list of ``{"metric", "value"}`` objects.
    """
    if (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and not isinstance(result[0], bool)
    ):
        return [Sample(labels={}, value=_to_float(result[1]), timestamp=float(result[0]))]
    if not isinstance(result, list):
        raise PromQLError(f"unexpected query result: {result!r:.200}", retryable=False)
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise PromQLError(
                "expected an instant vector (a range vector or string came back)",
                retryable=False,
            )
        timestamp, raw = item["value"]
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        samples.append(Sample(labels=labels, value=_to_float(raw), timestamp=float(timestamp)))
    return samples


def _classify(exc: Exception) -> PromQLError:
    if isinstance(exc, PromQLError):
        return exc
    if isinstance(exc, PrometheusApiClientException):
        match = _STATUS_RE.search(str(exc))
        status = int(match.group(1)) if match else 0
        retryable = status == 0 or status >= 500 or status in (408, 429)
        return PromQLError(f"Prometheus answered {exc}"[:500], retryable=retryable)
    if isinstance(exc, requests.RequestException | ValueError):
        # Connection refused, timeouts, a proxy's HTML error page: transient.
        return PromQLError(f"Prometheus unreachable: {exc}"[:500], retryable=True)
    return PromQLError(f"query failed: {exc!r}"[:500], retryable=False)


class PromQL:
    """Async instant queries against one Prometheus, with bounded retries."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        headers: Mapping[str, str] | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers or {}),
            # The client's own urllib3 retries would multiply ours and sleep
            # inside a thread we cannot cancel; tenacity owns retrying.
            retry=Retry(total=0, raise_on_status=False),
            timeout=timeout,  # type: ignore[arg-type]  # the client annotates int; float works
        )

    async def close(self) -> None:
        """Release the HTTP connection pool."""
        await asyncio.to_thread(self._client.close)

    async def query(self, expr: str, at: datetime | None = None) -> list[Sample]:
        """Instant query; ``at`` evaluates at that time (else Prometheus's now)."""
        params: dict[str, Any] = {}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        result = await self._call(
            lambda: self._client.custom_query(
                query=expr,
                params=params,
                timeout=self._timeout,  # type: ignore[arg-type]  # annotated int; requests takes float
            )
        )
        return _parse_result(result)

    async def scrape_interval(self) -> timedelta | None:
        """The most common ``scrapeInterval`` of active targets; None when unknown.

        Prometheus lists targets only a few seconds after it starts, so with
        none listed yet the global ``scrape_interval`` of its loaded config is
        used. None when Prometheus cannot be asked: the caller falls back to
        its configured interval rather than failing to start.
        """
        try:
            data = await self._call(lambda: self._client.get_targets(state="active"))
        except PromQLError:
            return None
        counts: Counter[timedelta] = Counter()
        for target in (data or {}).get("activeTargets") or []:
            raw = target.get("scrapeInterval") if isinstance(target, dict) else None
            if isinstance(raw, str):
                try:
                    counts[parse_duration(raw)] += 1
                except ValueError:
                    continue
        if counts:
            return counts.most_common(1)[0][0]
        return await self._global_scrape_interval()

    async def _global_scrape_interval(self) -> timedelta | None:
        try:
            data = await self._call(self._fetch_config)
            loaded = yaml.safe_load(data["data"]["yaml"]) or {}
            raw = (loaded.get("global") or {}).get("scrape_interval")
            return parse_duration(raw) if isinstance(raw, str) else None
        except (PromQLError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError):
            return None

    def _fetch_config(self) -> Any:
        # PrometheusConnect has no call for /api/v1/status/config; use its session.
        response = self._client._session.get(
            f"{self.url}/api/v1/status/config",
            headers=self._client.headers,
            timeout=self._timeout,
        )
        if response.status_code != 200:
            raise PrometheusApiClientException(f"HTTP Status Code {response.status_code}")
        return response.json()

    async def healthy(self) -> bool:
        """One attempt, no retries: is Prometheus answering right now?"""
        try:
            return bool(await asyncio.to_thread(self._client.check_prometheus_connection))
        except Exception:
            return False

    async def _call(self, fn: Callable[[], T]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            # Composed rather than wait_exponential_jitter, whose signature changed in tenacity 9.
            wait=wait_exponential(multiplier=0.2, max=self._max_backoff) + wait_random(0, 0.2),
            retry=retry_if_exception(lambda e: isinstance(e, PromQLError) and e.retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await asyncio.to_thread(fn)
                except Exception as exc:
                    raise _classify(exc) from exc
        raise AssertionError("unreachable: tenacity reraises the last error")
