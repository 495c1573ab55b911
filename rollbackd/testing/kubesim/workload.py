"""Emulated HTTP traffic of every Ready pod, as a Prometheus scrape target.

rollbackd judges a rollout by error ratio and p99 latency, so the simulated
cluster must produce those series the way an instrumented service would:
per-pod monotonic counters that start when the pod becomes Ready and follow
the pod template's knobs (annotations, so a rollback restores the healthy
values along with the image):

* ``kubesim.rollbackd.io/rps``        requests per second per pod (default 10)
* ``kubesim.rollbackd.io/error-rate`` fraction answered with 500 (default 0)
* ``kubesim.rollbackd.io/latency-ms`` typical (median) latency (default 50)

Values are a pure function of the store and the clock (requests = rps x
seconds since Ready), so tests can compute what Prometheus should see.
A pod behind a Gateway API HTTPRoute backend serves its share of the route's
requests instead of its own rps (``httproutes.py``); a route write takes
effect at once, a pod joining or leaving a backend at the next scrape. An
Argo Rollout's pods count under the Rollout's name in ``deployment``. That
label's name is ``workload_label`` (e.g. ``rollout``, as some exporters
name it), for rollbackd's ``prometheus.deployment_label``.
Latencies follow a log-normal spread around the median whose p99 is about
2.5x the median: a 10x regression stands out, ordinary jitter does not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from .controllers.objects import parse_time
from .controllers.pods import is_pod_ready
from .httproutes import HTTPROUTES, routed_rps
from .store import Store

log = logging.getLogger(__name__)

KNOB_RPS = "kubesim.rollbackd.io/rps"
KNOB_ERROR_RATE = "kubesim.rollbackd.io/error-rate"
KNOB_LATENCY_MS = "kubesim.rollbackd.io/latency-ms"
DEFAULT_RPS = 10.0
DEFAULT_ERROR_RATE = 0.0
DEFAULT_LATENCY_MS = 50.0

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Log-normal shape: sigma chosen so that p99 = median * exp(2.326 * sigma) ~ 2.5 x median.
LATENCY_SIGMA = math.log(2.5) / 2.326
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Knobs:
    """The traffic shape of one pod, read from its annotations."""

    rps: float = DEFAULT_RPS
    error_rate: float = DEFAULT_ERROR_RATE
    latency_seconds: float = DEFAULT_LATENCY_MS / 1000

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Knobs:
        """Knobs with defaults for absent values; out-of-range or malformed values fall back too."""
        return cls(
            rps=_knob(annotations, KNOB_RPS, DEFAULT_RPS, 0.0, math.inf),
            error_rate=_knob(annotations, KNOB_ERROR_RATE, DEFAULT_ERROR_RATE, 0.0, 1.0),
            latency_seconds=_knob(annotations, KNOB_LATENCY_MS, DEFAULT_LATENCY_MS, 1e-3, 1e7)
            / 1000,
        )


def _knob(
    annotations: Mapping[str, str], key: str, default: float, low: float, high: float
) -> float:
    text = annotations.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):
        log.warning("kubesim workload: ignoring %s=%r (expected %s..%s)", key, text, low, high)
        return default
    return value


def latency_cdf(bound: float, median: float) -> float:
    """Fraction of requests at or below ``bound`` seconds for a given median latency."""
    if bound <= 0:
        return 0.0
    z = math.log(bound / median) / (LATENCY_SIGMA * math.sqrt(2))
    return 0.5 * (1 + math.erf(z))


@dataclass(frozen=True)
class PodTraffic:
    """Cumulative counts of one pod after ``elapsed`` seconds of Ready time."""

    ok: int
    errors: int
    buckets: tuple[int, ...]  # cumulative, one per BUCKETS entry
    sum_seconds: float

    @property
    def count(self) -> int:
        return self.ok + self.errors

    @classmethod
    def after(cls, knobs: Knobs, elapsed: float) -> PodTraffic:
        return _RawTraffic.after(knobs, elapsed).counted()


@dataclass(frozen=True)
class _RawTraffic:
    """Unfloored cumulative traffic; sums of these stay exact across knob changes."""

    ok: float = 0.0
    errors: float = 0.0
    buckets: tuple[float, ...] = (0.0,) * len(BUCKETS)
    sum_seconds: float = 0.0

    @classmethod
    def after(cls, knobs: Knobs, elapsed: float) -> _RawTraffic:
        requests = knobs.rps * max(elapsed, 0.0)
        mean = knobs.latency_seconds * math.exp(LATENCY_SIGMA**2 / 2)
        return cls(
            ok=requests * (1 - knobs.error_rate),
            errors=requests * knobs.error_rate,
            buckets=tuple(requests * latency_cdf(b, knobs.latency_seconds) for b in BUCKETS),
            sum_seconds=requests * mean,
        )

    def plus(self, other: _RawTraffic) -> _RawTraffic:
        return _RawTraffic(
            self.ok + other.ok,
            self.errors + other.errors,
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            self.sum_seconds + other.sum_seconds,
        )

    def counted(self) -> PodTraffic:
        # Each count is a floor of a non-decreasing function of time, so every series
        # is monotonic, as counters must be.
        ok, errors = math.floor(self.ok), math.floor(self.errors)
        count = ok + errors
        buckets = tuple(min(math.floor(b), count) for b in self.buckets)
        return PodTraffic(ok, errors, buckets, count * self._mean())

    def _mean(self) -> float:
        total = self.ok + self.errors
        return self.sum_seconds / total if total > 0 else 0.0


@dataclass
class _PodSeries:
    """A pod's traffic so far: closed segments plus the segment running now.

    A segment ends when the pod's effective knobs change (a ``degrade``
    override set or lifted), so counters keep growing from where they were
    instead of being recomputed, which would make them jump or reset.
    """

    knobs: Knobs
    segment_start: float = 0.0
    closed: _RawTraffic = _RawTraffic()

    def at(self, knobs: Knobs, elapsed: float) -> PodTraffic:
        if knobs != self.knobs:
            self.closed = self.closed.plus(
                _RawTraffic.after(self.knobs, elapsed - self.segment_start)
            )
            self.knobs, self.segment_start = knobs, elapsed
        return self.closed.plus(_RawTraffic.after(knobs, elapsed - self.segment_start)).counted()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class WorkloadMetrics:
    """Renders the traffic of Ready pods and serves it at ``GET /metrics``."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] | None = None,
        workload_label: str = "deployment",
    ) -> None:
        self._store = store
        # The exposed name of the label named "deployment" in the series below.
        self._workload_label = workload_label
        # Epoch seconds, comparable with the pods' Ready lastTransitionTime.
        self._clock = clock or time.time
        self._runner: web.AppRunner | None = None
        self._overrides: dict[tuple[str, str], dict[str, float]] = {}
        self._series: dict[str, _PodSeries] = {}
        # An HTTPRoute write ends every pod's segment there (see _on_change).
        self._unsubscribe = store.subscribe(self._on_change, copy=False)
        self.url = ""

    def degrade(
        self,
        namespace: str,
        deployment: str,
        *,
        error_rate: float | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Override a Deployment's behaviour whatever its template says; no knobs lifts it.

        This stands for trouble outside the pod template (a broken shared
        dependency): every version of the Deployment suffers it, so a
        rollback cannot fix it.
        """
        self.render()  # every running pod's series so far, under the old knobs
        knobs: dict[str, float] = {}
        if error_rate is not None:
            knobs["error_rate"] = error_rate
        if latency_ms is not None:
            knobs["latency_seconds"] = latency_ms / 1000
        if knobs:
            self._overrides[(namespace, deployment)] = knobs
        else:
            self._overrides.pop((namespace, deployment), None)
        self.render()  # the change takes effect now, not at the next scrape

    def _on_change(self, _event_type: str, key: str, obj: Mapping[str, Any]) -> None:
        # Rendering now counts the traffic so far under the weights it had, and starts
        # new segments under the new ones: a weight change takes effect at its write.
        # A status-only write (the gateway controller's) changes no weight.
        if key != HTTPROUTES or not self._series:
            return
        event = self._store.last_event
        before = event.previous if event is not None else None
        if before is not None and _routing_of(before) == _routing_of(obj):
            return
        self.render()

    def _effective(self, labels: Mapping[str, str], knobs: Knobs) -> Knobs:
        override = self._overrides.get((labels["namespace"], labels["deployment"]))
        return replace(knobs, **override) if override else knobs

    def knobs_of(self, pod: Mapping[str, Any]) -> Knobs:
        """A pod's effective knobs: its annotations, under any ``degrade`` override."""
        meta = pod["metadata"]
        labels = {"namespace": meta.get("namespace") or "", "deployment": self._deployment_of(pod)}
        return self._effective(labels, Knobs.from_annotations(meta.get("annotations") or {}))

    def _pods(self) -> list[tuple[dict[str, str], Knobs, float]]:
        """(labels, knobs, seconds Ready) for every Ready pod, sorted by namespace and name."""
        now = self._clock()
        result = []
        pairs: dict[str, list[tuple[Mapping[str, str], str]]] = {}
        for service in self._store.list("v1/services", copy=False):
            pair = _colour_pair(service)
            if pair is not None:
                pairs.setdefault(service["metadata"].get("namespace") or "", []).append(pair)
        for pod in self._store.list("v1/pods", copy=False):
            if not is_pod_ready(pod):
                continue
            if _idle_colour(pod, pairs.get(pod["metadata"].get("namespace") or "", [])):
                continue
            ready = _ready_since(pod)
            if ready is None:
                continue
            meta = pod["metadata"]
            labels = {
                "namespace": meta.get("namespace") or "",
                "deployment": self._deployment_of(pod),
                "pod": meta["name"],
            }
            knobs = Knobs.from_annotations(meta.get("annotations") or {})
            result.append((labels, knobs, now - ready))
        return result

    def _deployment_of(self, pod: Mapping[str, Any]) -> str:
        """The owning Deployment's name via the pod's ReplicaSet; "" for bare pods."""
        namespace = pod["metadata"].get("namespace")
        rs_ref = _controller_ref(pod, "ReplicaSet")
        if rs_ref is None:
            return ""
        rs = self._store.peek("apps/v1/replicasets", namespace, rs_ref["name"])
        if rs is None:
            return ""
        # An Argo Rollout's pods count under its name, as a Deployment's do.
        owner_ref = _controller_ref(rs, "Deployment") or _controller_ref(rs, "Rollout")
        return str(owner_ref["name"]) if owner_ref else ""

    def render(self) -> str:
        """Prometheus text exposition (format 0.0.4) of every Ready pod's traffic."""
        requests = [
            "# HELP http_requests_total HTTP requests served by the emulated workload.",
            "# TYPE http_requests_total counter",
        ]
        durations = [
            "# HELP http_request_duration_seconds Latency of the emulated workload's requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        live: dict[str, _PodSeries] = {}
        routed = routed_rps(self._store, _own_rps)  # HTTPRoute weights (httproutes.py)
        for labels, knobs, elapsed in self._pods():
            rps = routed.get((labels["namespace"], labels["pod"]))
            knobs = self._effective(labels, knobs if rps is None else replace(knobs, rps=rps))
            key = f"{labels['namespace']}/{labels['pod']}"
            series = self._series.get(key) or _PodSeries(knobs)
            live[key] = series
            traffic = series.at(knobs, elapsed)
            base = ",".join(
                f'{self._exposed(key)}="{_escape(value)}"' for key, value in labels.items()
            )
            requests.append(f'http_requests_total{{{base},code="200"}} {traffic.ok}')
            requests.append(f'http_requests_total{{{base},code="500"}} {traffic.errors}')
            for bound, cumulative in zip(BUCKETS, traffic.buckets, strict=True):
                durations.append(
                    f'http_request_duration_seconds_bucket{{{base},le="{bound}"}} {cumulative}'
                )
            durations.append(
                f'http_request_duration_seconds_bucket{{{base},le="+Inf"}} {traffic.count}'
            )
            durations.append(
                f"http_request_duration_seconds_sum{{{base}}} {_number(traffic.sum_seconds)}"
            )
            durations.append(f"http_request_duration_seconds_count{{{base}}} {traffic.count}")
        self._series = live  # pods gone (or no longer Ready) start afresh if they return
        return "\n".join([*requests, *durations]) + "\n"

    def _exposed(self, key: str) -> str:
        return self._workload_label if key == "deployment" else key

    async def _handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``GET /metrics``; returns the base URL ``http://HOST:PORT``."""
        if self._runner is not None:
            raise RuntimeError("workload metrics already started")
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Close the listener and stop following route changes; safe to call when not started."""
        self._unsubscribe()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def _colour_pair(service: Mapping[str, Any]) -> tuple[Mapping[str, str], str] | None:
    """(selector, colour label) of a blue-green Service (``rollbackd.io/strategy``), else None."""
    annotations = service["metadata"].get("annotations") or {}
    selector = (service.get("spec") or {}).get("selector") or {}
    if annotations.get("rollbackd.io/strategy", "").strip() != "blue-green":
        return None
    key = annotations.get("rollbackd.io/color-label", "version").strip()
    return (selector, key) if key in selector else None


def _idle_colour(pod: Mapping[str, Any], pairs: list[tuple[Mapping[str, str], str]]) -> bool:
    """The idle colour of a blue-green Service: its requests go to the selected colour.

    A pod the Service would select but for its colour label's value serves
    no traffic, so a selector switch moves the traffic, and the metrics.
    """
    labels = pod["metadata"].get("labels") or {}
    for selector, key in pairs:
        base = all(labels.get(k) == v for k, v in selector.items() if k != key)
        if base and key in labels and labels[key] != selector[key]:
            return True
    return False


def _controller_ref(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return dict(ref)
    return None


def _routing_of(route: Mapping[str, Any]) -> tuple[Any, Any]:
    """What of an HTTPRoute the traffic split reads: its spec and annotations."""
    return route.get("spec"), (route.get("metadata") or {}).get("annotations")


def _own_rps(pod: Mapping[str, Any]) -> float:
    """The rps knob of a pod's own template: what it brings to a route's total."""
    return Knobs.from_annotations(pod["metadata"].get("annotations") or {}).rps


def _ready_since(pod: Mapping[str, Any]) -> float | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            moment = parse_time(condition.get("lastTransitionTime"))
            return moment.timestamp() if moment else None
    return None


__all__ = ["BUCKETS", "Knobs", "PodTraffic", "WorkloadMetrics", "latency_cdf"]
