"""Data assertions of a restored version: named PromQL values that must compare as expected.

Signals say whether traffic looks healthy; an assertion states a fact the
data must show (``verify.assertions``, e.g. no failed orders since the
rollback). Verification evaluates the Deployment's assertions at each
interval, over the same fresh window as the signals (``{window}``, at the
interval's time), through the one PromQL adapter.

Each outcome is one of four, and only one of them passes:

* ``passed``: every series of the answer satisfies ``op value``;
* ``failed``: a series does not (evidence against the version; the detail
  quotes the assertion, the query as sent and the value seen);
* ``no_data``: an empty answer, NaN, or Prometheus unreachable, 5xx or 429
  (no data is not a pass: the interval is inconclusive);
* ``invalid``: the assertion is broken (Prometheus's 400/422, an answer that
  is not an instant vector, a name the annotation lists but the config lacks):
  waiting cannot fix it, so verification ends and a human is paged.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from rollbackd.config.assertions import ANNOTATION_ASSERTIONS, Assertion
from rollbackd.config.smoke import checks_named
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL
from rollbackd.model import StrEnum, Target
from rollbackd.promql import PromQLError, Sample

__all__ = [
    "AssertionChecker",
    "AssertionOutcome",
    "AssertionStatus",
    "judge",
    "kube_annotations",
    "unanswered",
]

log = structlog.get_logger(__name__)

QueryFn = Callable[[str, datetime], Awaitable[Sequence[Sample]]]
AnnotationsFn = Callable[[Target], Awaitable[Mapping[str, str]]]


class AssertionStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NO_DATA = "no_data"
    INVALID = "invalid"


@dataclass(frozen=True)
class AssertionOutcome:
    name: str
    status: AssertionStatus
    detail: str  # leads with 'assertion "NAME"': the page quotes it
    query: str = ""  # as sent to Prometheus
    value: float | None = None  # the value judged (the first failing series' when failed)


class AssertionChecker:
    """Evaluates the assertions that apply to a Deployment: ``applies_to: all`` and its annotation's."""

    def __init__(
        self,
        assertions: Sequence[Assertion],
        query: QueryFn,
        annotations: AnnotationsFn,
        *,
        deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
    ) -> None:
        self._assertions = {assertion.name: assertion for assertion in assertions}
        self._query = query
        self._annotations = annotations
        self._deployment_label = deployment_label  # prometheus.deployment_label

    async def run(self, target: Target, window: str, at: datetime) -> tuple[AssertionOutcome, ...]:
        """Every applicable assertion's outcome (global ones first); () when none applies."""
        if not self._assertions:
            return ()  # nothing configured: not even the annotations are read
        everywhere = [a.name for a in self._assertions.values() if a.applies_to == "all"]
        annotations = await self._annotations(target)
        named = checks_named(annotations.get(ANNOTATION_ASSERTIONS))
        names = tuple(dict.fromkeys([*everywhere, *named]))
        return tuple(await asyncio.gather(*(self._one(name, target, window, at) for name in names)))

    async def _one(self, name: str, target: Target, window: str, at: datetime) -> AssertionOutcome:
        assertion = self._assertions.get(name)
        if assertion is None:
            known = ", ".join(sorted(self._assertions))
            detail = (
                f'assertion "{name}" is not configured ({ANNOTATION_ASSERTIONS} on {target}; '
                f"configured: {known})"
            )
            return AssertionOutcome(name, AssertionStatus.INVALID, detail)
        query = assertion.render(
            namespace=target.namespace,
            deployment=target.name,
            window=window,
            deployment_label=self._deployment_label,
        )
        try:
            samples = await self._query(query, at)
        except PromQLError as exc:
            outcome = unanswered(assertion, query, exc)
        else:
            outcome = judge(assertion, query, samples)
        log.info(
            "assertion_evaluated",
            assertion=name,
            target=str(target),
            status=str(outcome.status),
            value=outcome.value,
        )
        return outcome


def judge(assertion: Assertion, query: str, samples: Sequence[Sample]) -> AssertionOutcome:
    """The outcome of one answer: a failing series is evidence, an empty or NaN one is not."""
    name, expected = f'assertion "{assertion.name}"', assertion.expectation
    failing = [s for s in samples if not math.isnan(s.value) and not assertion.holds(s.value)]
    if failing:
        first = failing[0]
        detail = f"{name} failed: {query} = {_seen(first)}, expected {expected}"
        if len(failing) > 1:
            detail += f" ({len(failing)} of {len(samples)} series fail)"
        return AssertionOutcome(assertion.name, AssertionStatus.FAILED, detail, query, first.value)
    if not samples or any(math.isnan(s.value) for s in samples):
        what = "answered NaN" if samples else "answered nothing"
        detail = f"{name} had no data: {query} {what} (expected {expected})"
        return AssertionOutcome(assertion.name, AssertionStatus.NO_DATA, detail, query)
    detail = f"{name} holds: {query} = {_seen(samples[0])} ({expected})"
    return AssertionOutcome(assertion.name, AssertionStatus.PASSED, detail, query, samples[0].value)


def unanswered(assertion: Assertion, query: str, error: PromQLError) -> AssertionOutcome:
    """A query Prometheus did not answer: the assertion is broken, or there is no data."""
    name = f'assertion "{assertion.name}"'
    if error.bad_query:
        detail = f"{name} is broken: Prometheus refused {query}: {error}"
        return AssertionOutcome(assertion.name, AssertionStatus.INVALID, detail, query)
    detail = f"{name} had no data: {query} was not answered ({error})"
    return AssertionOutcome(assertion.name, AssertionStatus.NO_DATA, detail, query)


def _seen(sample: Sample) -> str:
    return f"{sample.value:g}{_labels(sample.labels)}"


def _labels(labels: Mapping[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    if not shown:
        return ""
    return " {" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"


def kube_annotations(kube: Any) -> AnnotationsFn:
    """A Deployment's annotations: from the watch cache, or a fresh read when not there."""

    async def annotations(target: Target) -> Mapping[str, str]:
        deployment = await kube.deployment(target)
        return dict((deployment.get("metadata") or {}).get("annotations") or {})

    return annotations
