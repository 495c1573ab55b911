"""Running the signals' queries against Prometheus and judging what comes back.

``judge_spec`` is the poller's: one spec's value query (and, when a verdict
needs it, its traffic query) for every target, folded per target.
``evaluate_specs`` is verification's and the CLI's: every spec at once,
optionally narrowed server side to one target, with an ``Evaluation`` per
target. The specs and the pure judging are in :mod:`rollbackd.signals`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from rollbackd.errors import PromQLError
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL
from rollbackd.model import Target
from rollbackd.promvector import Combine, TargetKey
from rollbackd.signals import (
    Evaluation,
    Judgement,
    SignalSpec,
    Verdict,
    render_query,
    worst_of,
)

if TYPE_CHECKING:
    # Only annotated here: the adapter loads the HTTP client, which the
    # configuration and the CLI, importing the specs, do not need.
    from rollbackd.promql import PromQL

__all__ = ["evaluate_specs", "judge_spec"]


def _promql_string(value: str) -> str:
    # JSON string escaping is valid PromQL (Go-style) string escaping.
    return json.dumps(value)


def _restrict_to(query: str, target: Target, namespace_label: str, deployment_label: str) -> str:
    """Keep only ``target``'s series, server side.

    Wrapping (``and on(...)`` a one-element vector carrying the target's
    labels) works for any valid grouped query, where rewriting selectors
    inside a user's PromQL could break it.
    """
    marker = (
        f"label_replace(label_replace(vector(1), {_promql_string(namespace_label)}, "
        f'{_promql_string(target.namespace)}, "", ""), {_promql_string(deployment_label)}, '
        f'{_promql_string(target.name)}, "", "")'
    )
    return f"({query}) and on ({namespace_label}, {deployment_label}) {marker}"


async def judge_spec(
    promql: PromQL,
    spec: SignalSpec,
    *,
    window: str | None = None,
    at: datetime | None = None,
    target: Target | None = None,
    namespace_label: str = "namespace",
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
    tracked: Collection[TargetKey] | None = None,
) -> Judgement:
    """Run one spec's value and traffic queries (at once) and fold them per target.

    With ``tracked`` (the poller's targets with a streak for this spec), the
    traffic query runs after the value query, and only when a value breaches
    or something is tracked: the traffic gates a verdict, and without a
    candidate there is nothing to gate. A fleet of healthy Deployments then
    costs Prometheus and rollbackd one query per signal, not two.

    Raises ``PromQLError`` when either query fails: half an answer is no data.
    """
    spec_window = window or spec.window

    async def ask(template: str, combine: Combine) -> dict[TargetKey, float]:
        expr = render_query(template, spec_window, deployment_label)
        if target is not None:
            expr = _restrict_to(expr, target, namespace_label, deployment_label)
        return await promql.query_vector(
            expr,
            at=at,
            combine=combine,
            namespace_label=namespace_label,
            deployment_label=deployment_label,
        )

    if tracked is not None and spec.traffic_query:
        worst = await ask(spec.query, worst_of(spec))
        if not tracked and not any(spec.breaches(value) for value in worst.values()):
            return Judgement(spec, worst, {}, spec_window)
        return Judgement(spec, worst, await ask(spec.traffic_query, "sum"), spec_window)
    asks = [ask(spec.query, worst_of(spec))]
    if spec.traffic_query:
        asks.append(ask(spec.traffic_query, "sum"))
    # return_exceptions: neither query is left running unawaited when the other fails.
    answers = await asyncio.gather(*asks, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    values = answers[0]
    rates = answers[1] if spec.traffic_query else None
    assert not isinstance(values, BaseException) and not isinstance(rates, BaseException)
    return Judgement(spec, values, rates, spec_window)


async def evaluate_specs(
    promql: PromQL,
    specs: Sequence[SignalSpec],
    *,
    window: str | None = None,
    at: datetime | None = None,
    target: Target | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    namespace_label: str = "namespace",
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
) -> dict[tuple[Target, str], Evaluation]:
    """Run every spec once (plus its traffic query) and judge all targets.

    With ``target`` (verification) only that target is asked for, and it is
    always present in the result: NO_DATA when its query failed or returned
    nothing. Without it, a failed spec contributes no entries.
    ``on_error(spec_name, exc)`` is called for each failed query. The poller
    uses ``judge_spec`` instead, which builds no Evaluation for healthy targets.
    """

    async def run_one(spec: SignalSpec) -> Judgement | PromQLError:
        try:
            return await judge_spec(
                promql,
                spec,
                window=window,
                at=at,
                target=target,
                namespace_label=namespace_label,
                deployment_label=deployment_label,
            )
        except PromQLError as exc:
            if on_error is not None:
                on_error(spec.name, exc)
            return exc

    # return_exceptions: an unexpected error in one spec must not leave the
    # other queries running unawaited; it is re-raised once all have finished.
    outcomes = await asyncio.gather(*(run_one(spec) for spec in specs), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, PromQLError):
            raise outcome
    results: dict[tuple[Target, str], Evaluation] = {}
    for spec, outcome in zip(specs, outcomes, strict=True):
        if isinstance(outcome, BaseException):  # a PromQLError, given the check above
            if target is not None:
                results[(target, spec.name)] = Evaluation(
                    target,
                    spec.name,
                    Verdict.NO_DATA,
                    None,
                    spec.threshold,
                    f"{spec.name} query failed: {outcome}",
                )
            continue
        if target is not None:
            key = (target.namespace, target.name)
            results[(target, spec.name)] = outcome.evaluation(key)
            continue
        for key in sorted(outcome.targets()):
            results[(Target(*key), spec.name)] = outcome.evaluation(key)
    return results
