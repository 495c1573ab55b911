"""Pod health of an Argo Rollout's canary while the API server refuses the pod watch and lists.

The world is the pod-health Rollout test's: Rollout default/web paused at
setWeight 25 with a crash-looping 2.0 canary. While the pod watch fails the
canary's pods are listed by the Rollouts' hash label. Missing data is not
health and not a breach: a pod list answered 503 or 429 is no data for that look (log
event ``pod_health_list_failed`` naming the Rollout), never a FIRING signal,
so the decision never aborts the canary on it; a firing anomaly says NO_DATA
once, whose decision is ``no_data``; a throttle shorter than the retry budget
is waited out (Retry-After) inside the look; and once the API answers again
detection resumes, under the same key, and decides the abort.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from rollbackd.decide import decide
from rollbackd.kube import Kube
from rollbackd.kube.retry import RetryBudget, budget_scope
from rollbackd.model import Action, History, Policy, Signal, SignalStatus, utcnow
from rollbackd.reasons import ReasonCode
from rollbackd.sources.kubernetes import PodHealthPoller
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.stack import wait_for
from tests.integration.test_executor_argo import WEB
from tests.integration.test_pod_health_rollout import first, kube
from tests.integration.test_pod_health_source import POD_LISTS, pods_unwatched, poller

pytestmark = pytest.mark.integration

__all__ = ["kube"]  # the fixture, shared with the pod-health Rollout test

# A look during an outage gives up at once instead of after the fixture's 5 s budget.
SHORT = 0.2


@contextlib.contextmanager
def short_budget() -> Iterator[None]:
    """The pod lists made inside draw on a retry budget of ``SHORT`` seconds."""
    with budget_scope(RetryBudget(SHORT)):
        yield


def decided(kube: Kube, signal: Signal) -> Any:
    now = utcnow()
    return decide(signal, kube.facts(WEB, now=now), History(), Policy(), now)


def canary_lists(kubesim: KubeSim, mark: int) -> list[int]:
    """Statuses of the pod lists by the Rollouts' hash label since ``mark``."""
    return [
        r.status
        for r in kubesim.requests.since(mark)
        if r.path.endswith("/pods") and "rollouts-pod-template-hash" in r.query
    ]


async def one_bad_look(subject: PodHealthPoller, emitted: list[Signal]) -> None:
    """Look until the canary's first bad look: its streak pending, nothing emitted yet."""

    async def pending() -> bool:
        await subject.evaluate_once()
        return subject.tracked == 1

    await wait_for(pending, 20, "a first bad look at the canary", interval=0.1)
    assert emitted == []


@pytest.mark.parametrize("status", [503, 429])
async def test_an_outage_during_a_pending_streak_never_fires_then_detection_resumes(
    kube: Kube, kubesim: KubeSim, status: int
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))  # for_count 2
    await one_bad_look(subject, emitted)
    await pods_unwatched(kubesim, kube, lists=status)
    mark = kubesim.requests.mark()

    with capture_logs() as logs, short_budget():
        for _ in range(3):
            assert await subject.evaluate_once() == []

    assert emitted == [], "a failed list is neither a breach nor worth a NO_DATA while pending"
    assert subject.tracked == 0, "for_count means consecutive observed breaches: start over"
    assert canary_lists(kubesim, mark) and set(canary_lists(kubesim, mark)) == {status}
    failed = [e for e in logs if e["event"] == "pod_health_list_failed"]
    assert len(failed) == 3 and all(e["target"] == str(WEB) for e in failed), logs
    assert str(status) in failed[0]["error"]

    kubesim.faults.clear()
    fired = await first(subject, emitted, SignalStatus.FIRING)
    assert decided(kube, fired).action is Action.ROLLBACK  # the canary's abort


@pytest.mark.parametrize("status", [503, 429])
async def test_an_outage_while_firing_is_no_data_once_and_never_a_second_trigger(
    kube: Kube, kubesim: KubeSim, status: int
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))
    fired = await first(subject, emitted, SignalStatus.FIRING)
    await pods_unwatched(kubesim, kube, lists=status)
    emitted.clear()

    with short_budget():
        for _ in range(3):
            await subject.evaluate_once()

    assert [s.status for s in emitted] == [SignalStatus.NO_DATA], emitted
    no_data = emitted[0]
    assert no_data.key.startswith(f"kube:{WEB}:pod_health:")
    assert "listing pods failed" in no_data.summary and str(status) in no_data.summary
    decision = decided(kube, no_data)
    assert (decision.action, decision.reason_code) == (Action.SKIP, ReasonCode.NO_DATA)

    kubesim.faults.clear()
    emitted.clear()
    again = await first(subject, emitted, SignalStatus.FIRING)
    assert again.key == fired.key, "the same anomaly goes on: the intake joins it"
    assert again.started_at == fired.started_at
    assert decided(kube, again).action is Action.ROLLBACK


async def test_a_throttle_shorter_than_the_budget_is_waited_out_inside_the_look(
    kube: Kube, kubesim: KubeSim
) -> None:
    emitted: list[Signal] = []
    subject = poller(kube, emitted, timedelta(minutes=30))
    await first(subject, emitted, SignalStatus.FIRING)
    await pods_unwatched(kubesim, kube)  # the watch refused; the lists answer
    kubesim.faults.fail("list", POD_LISTS, 429, count=1)  # Retry-After: 1, budget 5 s
    emitted.clear()
    mark = kubesim.requests.mark()

    signals = await subject.evaluate_once()

    assert [s.status for s in signals] == [SignalStatus.FIRING], signals
    lists = [
        r for r in kubesim.requests.since(mark) if r.verb == "list" and r.path.endswith("/pods")
    ]
    assert [r.status for r in lists] == [429, 200]
    assert lists[1].at - lists[0].at >= 0.9, "the retry did not honour Retry-After"
