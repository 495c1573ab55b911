"""Health signals: PromQL specs and their pure evaluation per Deployment.

The same code judges a target for the poller (is it breaching?) and for
post-rollback verification (is it healthy over fresh data?), so both agree on
what "healthy" means. Each spec is one PromQL query grouped
``by (namespace, deployment)``: the cost per cycle does not grow with the
number of Deployments. The workload's label is configurable
(``prometheus.deployment_label``, see ``metriclabel.py``): the built-in
queries say ``{deployment_label}``, filled in with the queries' window.

No data is not health (safety rule 8): an empty result, NaN, a failed query,
or traffic below ``min_traffic`` gives ``Verdict.NO_DATA``, which neither
triggers a rollback nor passes a verification interval.

Thin evidence is not a breach (safety rule 11): a ratio is judged only when
the window holds at least ``min_requests`` requests (rate x window). A rate
gate alone is not enough: ``rate()`` extrapolates, so one failed request in
a short window can read as a rate above any small ``min_traffic``.

The built-in queries count only series that still exist (``_live_rate``):
right after a rollout, the pods it replaced would otherwise keep their old,
healthy rate in every window that still holds their samples, and dilute the
new pods' errors for a whole window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rollbackd.durations import parse_prometheus_duration as parse_duration
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL, LABEL_PLACEHOLDER
from rollbackd.model import StrEnum, Target
from rollbackd.promvector import Combine, Sample, TargetKey, reduce_vector
from rollbackd.querytemplate import fill

__all__ = [
    "DEFAULT_SIGNALS",
    "Evaluation",
    "Judgement",
    "SignalSpec",
    "Verdict",
    "evaluate",
    "render_query",
    "worst_of",
]


@dataclass(frozen=True)
class SignalSpec:
    """One health signal: a grouped PromQL query and the threshold that makes it a breach."""

    name: str
    query: str  # contains "{window}"; grouped by (namespace, the workload label)
    threshold: float
    comparison: Literal[">", "<"] = ">"
    traffic_query: str | None = None  # requests/s per target, "{window}" placeholder
    min_traffic: float = 0.0  # below this rate a target is not judged
    min_requests: float = 0.0  # below this many requests in the window, not judged either
    window: str = "1m"
    for_count: int = 2  # consecutive breaching evaluations before FIRING

    def __post_init__(self) -> None:
        if self.comparison not in (">", "<"):
            raise ValueError(f"signal {self.name}: comparison must be '>' or '<'")
        if self.for_count < 1:
            raise ValueError(f"signal {self.name}: for_count must be >= 1")
        if self.min_traffic < 0:
            raise ValueError(f"signal {self.name}: min_traffic must be >= 0")
        if self.min_requests < 0:
            raise ValueError(f"signal {self.name}: min_requests must be >= 0")

    def breaches(self, value: float) -> bool:
        return value > self.threshold if self.comparison == ">" else value < self.threshold


class Verdict(StrEnum):
    HEALTHY = "healthy"
    BREACH = "breach"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Evaluation:
    """The verdict of one signal for one target, with the number behind it."""

    target: Target
    signal: str
    verdict: Verdict
    value: float | None
    threshold: float
    detail: str


def render_query(
    template: str, window: str, deployment_label: str = DEFAULT_DEPLOYMENT_LABEL
) -> str:
    """The query as sent: ``{window}`` and ``{deployment_label}`` filled in."""
    return fill(template, {"window": window, LABEL_PLACEHOLDER: deployment_label})


def _fold_samples(
    samples: Sequence[Sample], combine: Combine, namespace_label: str, deployment_label: str
) -> dict[TargetKey, float]:
    # The same folding as the adapter's, for callers holding samples.
    as_vector = [{"metric": s.labels, "value": [s.timestamp, s.value]} for s in samples]
    return reduce_vector(
        as_vector,
        combine=combine,
        namespace_label=namespace_label,
        deployment_label=deployment_label,
    )


def worst_of(spec: SignalSpec) -> Combine:
    """One value per target; a query that is not fully aggregated is judged by its worst series."""
    return "max" if spec.comparison == ">" else "min"


@dataclass(frozen=True)
class Judgement:
    """One signal's answer for every target, folded per (namespace, deployment).

    Verdicts are computed on demand: a poll of 10 000 healthy Deployments
    asks only for ``breaching()`` (one comparison per target) and builds an
    ``Evaluation`` for the few targets it tracks.
    """

    spec: SignalSpec
    values: Mapping[TargetKey, float]
    rates: Mapping[TargetKey, float] | None  # None: the spec has no traffic query
    window: str

    @property
    def window_seconds(self) -> float:
        return parse_duration(self.window).total_seconds()

    def targets(self) -> set[TargetKey]:
        """Every target that has a value or a traffic rate."""
        return set(self.values) | set(self.rates or ())

    def _judged(self, rate: float | None, window_seconds: float) -> bool:
        spec = self.spec
        return (
            rate is not None
            and rate >= spec.min_traffic
            and (rate * window_seconds >= spec.min_requests)
        )

    def breaching(self) -> list[TargetKey]:
        """Targets whose verdict is BREACH, without building an Evaluation for anyone."""
        spec = self.spec
        threshold = spec.threshold
        if spec.comparison == ">":
            candidates = [key for key, value in self.values.items() if value > threshold]
        else:
            candidates = [key for key, value in self.values.items() if value < threshold]
        if self.rates is None:
            return candidates
        window_seconds = self.window_seconds
        rates = self.rates
        return [key for key in candidates if self._judged(rates.get(key), window_seconds)]

    def evaluation(self, key: TargetKey) -> Evaluation:
        """The verdict for one target (NO_DATA when it is absent or its evidence is thin)."""
        spec = self.spec
        target = Target(*key)
        raw = self.values.get(key)
        value = math.nan if raw is None else raw
        shown = None if math.isnan(value) else value

        def result(verdict: Verdict, detail: str) -> Evaluation:
            return Evaluation(target, spec.name, verdict, shown, spec.threshold, detail)

        if self.rates is not None:
            rate = self.rates.get(key)
            # "not >=" so a NaN rate is no traffic, as in ``breaching()``.
            if rate is None or not rate >= spec.min_traffic:
                rate_text = "no" if rate is None else f"{rate:.3g} req/s"
                return result(
                    Verdict.NO_DATA,
                    f"{spec.name} not judged: {rate_text} traffic "
                    f"(minimum {spec.min_traffic:g} req/s)",
                )
            requests = rate * self.window_seconds
            if not requests >= spec.min_requests:
                return result(
                    Verdict.NO_DATA,
                    f"{spec.name} not judged: about {requests:.3g} requests in "
                    f"{self.window}, fewer than the {spec.min_requests:g} needed as evidence",
                )
        if raw is None:
            return result(Verdict.NO_DATA, f"{spec.name}: no series for {target}")
        if math.isnan(value):
            return result(Verdict.NO_DATA, f"{spec.name} is NaN for {target}")
        if spec.breaches(value):
            return result(
                Verdict.BREACH,
                f"{spec.name} {value:.4g} {spec.comparison} threshold {spec.threshold:g}",
            )
        return result(
            Verdict.HEALTHY,
            f"{spec.name} {value:.4g} within threshold "
            f"({spec.comparison} {spec.threshold:g} breaches)",
        )


def evaluate(
    spec: SignalSpec,
    samples: list[Sample],
    traffic: list[Sample] | None,
    *,
    namespace_label: str = "namespace",
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
    window: str | None = None,
) -> dict[Target, Evaluation]:
    """Judge every target present in ``samples`` (or in ``traffic``).

    ``traffic`` is None when the spec has no traffic query (every target is
    judged); otherwise a target whose request rate is missing, NaN or below
    ``min_traffic`` is NO_DATA: a handful of requests proves nothing.
    """
    judgement = Judgement(
        spec,
        _fold_samples(samples, worst_of(spec), namespace_label, deployment_label),
        None
        if traffic is None
        else _fold_samples(traffic, "sum", namespace_label, deployment_label),
        window or spec.window,
    )
    return {Target(*key): judgement.evaluation(key) for key in sorted(judgement.targets())}


_BY = "by (namespace, {deployment_label})"


def _live_rate(metric: str, matchers: str = "") -> str:
    """``rate()`` over the window of ``metric``'s series that have a current sample.

    A replaced pod's series ends, but ``rate()`` keeps its last rate until
    its samples leave the window. At a 10 s window and a 1 s scrape, two new
    pods failing 30 % of requests read 4 % one scrape in (under a 5 %
    threshold) and 30 % with the replaced pods left out. Prometheus marks a
    vanished series stale at the next scrape, and an instant selector skips
    stale series, so ``and metric`` keeps the live ones. A series kept
    without staleness markers (remote read) stays in for the lookback, as
    before.
    """
    return f"(rate({metric}{matchers}[{{window}}]) and {metric})"


_REQUESTS = _live_rate("http_requests_total")
_SERVER_ERRORS = _live_rate("http_requests_total", '{code=~"5.."}')

DEFAULT_SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec(
        name="error_ratio",
        # "or ... * 0" makes a target with traffic but no 5xx series read 0, not empty.
        query=(
            f"(sum {_BY} {_SERVER_ERRORS} or sum {_BY} {_REQUESTS} * 0) / sum {_BY} {_REQUESTS}"
        ),
        threshold=0.05,
        traffic_query=f"sum {_BY} {_REQUESTS}",
        min_traffic=0.1,
        min_requests=10,
    ),
    SignalSpec(
        name="latency_p99",
        query=(
            "histogram_quantile(0.99, sum by (namespace, {deployment_label}, le)"
            f" {_live_rate('http_request_duration_seconds_bucket')})"
        ),
        threshold=0.5,
        traffic_query=f"sum {_BY} {_live_rate('http_request_duration_seconds_count')}",
        min_traffic=0.1,
        min_requests=10,
    ),
)
