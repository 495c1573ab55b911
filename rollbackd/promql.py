"""PromQL adapter: instant queries and target metadata from a real Prometheus.

A thin layer over prometheus-api-client's ``PrometheusConnect``. That client
is synchronous (requests), so every call runs in a worker thread via
``asyncio.to_thread`` and never blocks the event loop. Retries live here, not
in the client: tenacity with bounded attempts and exponential backoff with
jitter, and only for failures that a retry can fix (connection errors,
timeouts, 5xx, 429). A bad query (4xx) fails at once. When attempts are
exhausted, ``PromQLError`` is raised; callers treat that as "no data", never
as health (safety rule 8).

The HTTP session is ours (passed to the client) and its response hook does
two things, so nothing reads the client's private attributes or parses its
exception text: an error answer becomes a ``PromQLError`` carrying its
status, and a successful query answer reaches the client undecoded
(``UndecodedQueryResponse`` below). Large answers are then folded into
``{(namespace, deployment): value}`` on the event loop in slices of a couple
of milliseconds (``query_vector``): a poll of 10 000 Deployments builds no
object per sample and never holds the loop, or the GIL, for long.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import yaml
from prometheus_api_client.prometheus_connect import PrometheusConnect
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from urllib3.util.retry import Retry

from rollbackd.durations import format_range, parse_prometheus_duration
from rollbackd.errors import PromQLError
from rollbackd.promvector import (
    AnswerText,
    Combine,
    NotAVectorError,
    Sample,
    TargetKey,
    decoded_result,
    each_item,
    fold_answer,
    is_scalar,
    reduce_vector,
)

__all__ = [
    "Combine",
    "PromQL",
    "PromQLError",
    "Sample",
    "TargetKey",
    "format_duration",
    "parse_duration",
    "reduce_vector",
]

T = TypeVar("T")

# Prometheus durations, under the names this module always exported.
parse_duration = parse_prometheus_duration
format_duration = format_range


class UndecodedQueryResponse(requests.Response):
    """A successful query answer whose ``json()`` hands the body over undecoded.

    prometheus-api-client reads ``response.json()["data"]["result"]``; with
    this class (set by the adapter's session hook) that is an ``AnswerText``,
    so the client never runs one long ``json.loads``.
    """

    def json(self, **kwargs: Any) -> Any:
        # JSON is UTF-8 (RFC 8259); Prometheus says so in its Content-Type too.
        return {"data": {"result": AnswerText(self.content.decode("utf-8"))}}


def _to_float(raw: Any) -> float:
    # Prometheus encodes sample values as strings: "1.5", "NaN", "+Inf".
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def _not_a_vector() -> PromQLError:
    return PromQLError(
        "expected an instant vector (a range vector or string came back)",
        retryable=False,
        bad_query=True,
    )


def _parse_result(result: Any) -> list[Sample]:
    """Turn the API's ``data.result`` into samples (a scalar is one sample without labels)."""
    if is_scalar(result):
        return [Sample(labels={}, value=_to_float(result[1]), timestamp=float(result[0]))]
    if not isinstance(result, list):
        raise PromQLError(
            f"unexpected query result: {result!r:.200}", retryable=False, bad_query=True
        )
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise _not_a_vector()
        timestamp, raw = item["value"]
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        samples.append(Sample(labels=labels, value=_to_float(raw), timestamp=float(timestamp)))
    return samples


_QUERY_PATH = "/api/v1/query"


def _retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _raise_for_status(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """Session response hook: an error answer becomes a PromQLError with its status.

    It runs inside the client's request call, before the client would wrap
    the status into the text of its own exception. Redirects pass (the hook
    sees every hop; ``/`` redirects to the UI).
    """
    if response.status_code < 400:
        if response.status_code == 200 and urlsplit(response.url).path.endswith(_QUERY_PATH):
            # The client calls .json() next; see UndecodedQueryResponse.
            response.__class__ = UndecodedQueryResponse
        return
    status = response.status_code
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            detail = f"{body.get('errorType', '')}: {body.get('error', '')}".strip(": ")
    except ValueError:
        detail = response.text[:200].strip()
    message = f"Prometheus answered HTTP {status}" + (f" ({detail})" if detail else "")
    # 400 bad_data (does not parse), 422 execution (cannot be evaluated as written).
    bad_query = status in (400, 422)
    raise PromQLError(message[:500], retryable=_retryable_status(status), bad_query=bad_query)


def _classify(exc: Exception) -> PromQLError:
    if isinstance(exc, PromQLError):
        return exc
    if isinstance(exc, NotAVectorError):
        return PromQLError(str(exc)[:500], retryable=False, bad_query=True)
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
        self._headers = dict(headers or {})
        # One fold at a time: concurrent folds would each take a slice per loop turn.
        self._fold_turn = asyncio.Lock()
        self._session = requests.Session()
        self._session.hooks["response"].append(_raise_for_status)
        self._client = PrometheusConnect(
            url=self.url,
            headers=self._headers,
            # The client's own urllib3 retries would multiply ours and sleep
            # inside a thread we cannot cancel; tenacity owns retrying.
            retry=Retry(total=0, raise_on_status=False),
            session=self._session,
            timeout=timeout,  # type: ignore[arg-type]  # the client annotates int; float works
        )

    async def close(self) -> None:
        """Release the HTTP connection pool."""
        await asyncio.to_thread(self._session.close)

    def _params(self, at: datetime | None) -> dict[str, Any]:
        return {} if at is None else {"time": f"{at.timestamp():.3f}"}

    def _result(self, expr: str, params: dict[str, Any]) -> Any:
        # Runs in a worker thread: the request and the JSON decoding.
        return self._client.custom_query(
            query=expr,
            params=params,
            timeout=self._timeout,  # type: ignore[arg-type]  # annotated int; requests takes float
        )

    async def query(self, expr: str, at: datetime | None = None) -> list[Sample]:
        """Instant query; ``at`` evaluates at that time (else Prometheus's now)."""
        params = self._params(at)
        return await self._call(lambda: _parse_result(decoded_result(self._result(expr, params))))

    async def query_vector(
        self,
        expr: str,
        *,
        at: datetime | None = None,
        combine: Combine = "max",
        namespace_label: str = "namespace",
        deployment_label: str = "deployment",
    ) -> dict[TargetKey, float]:
        """Instant query folded into ``{(namespace, deployment): value}``.

        The request runs in a worker thread; the answer is folded on the
        loop in short slices (``promvector.fold_answer``).
        """
        params = self._params(at)
        answer = await self._call(lambda: self._result(expr, params))
        try:
            async with self._fold_turn:
                return await fold_answer(
                    answer,
                    combine=combine,
                    namespace_label=namespace_label,
                    deployment_label=deployment_label,
                )
        except NotAVectorError as exc:
            raise _classify(exc) from exc

    async def scrape_landings(self) -> list[float]:
        """When each active target's scrapes become queryable (epoch seconds, latest scrape).

        A sample carries its scrape's start time; it can be read once the
        scrape finished. Prometheus keeps both for every target, so the
        latest start plus the longest duration of the last five minutes is
        when fresh data can be counted on: a busy target that scrapes slowly
        now and then is not read too early.
        """
        expr = "timestamp(scrape_duration_seconds) + max_over_time(scrape_duration_seconds[5m])"
        answer = await self._call(lambda: self._result(expr, {}))
        landings: list[float] = []

        def visit(item: Any) -> None:
            value = _to_float(item["value"][1]) if isinstance(item, dict) else math.nan
            if math.isfinite(value) and value > 0:
                landings.append(value)

        try:
            await each_item(answer, visit)
        except (NotAVectorError, KeyError, IndexError, TypeError) as exc:
            raise PromQLError(f"unexpected scrape_duration_seconds answer: {exc}") from exc
        return landings

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
        # PrometheusConnect has no call for /api/v1/status/config; the session is ours.
        response = self._session.get(
            f"{self.url}/api/v1/status/config", headers=self._headers, timeout=self._timeout
        )
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
