"""A Rollout a human paused (``kubectl argo rollouts pause``: ``spec.paused``) is left to them.

Rollout default/web waits at its canary's indefinite pause step (the helpers
of test_executor_argo.py): that is the controller's own pause, which is
aborted as usual. A human's ``spec.paused`` escalates ``paused`` instead,
nothing aborted: decided on the watch cache, or found on the fresh read
between the record and the abort (a daemon killed there and restarted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from rollbackd.kube import Kube
from rollbackd.model import Action, Phase
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import ReasonCode
from rollbackd.strategies import PlanError
from rollbackd.strategies.argorollouts import ArgoRolloutsStrategy
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_argo import (
    TIMEOUT,
    WEB,
    aborts,
    paused_canary,
    recorded_plan,
    status,
    until,
)
from tests.integration.test_executor_argo_approval import human_pause
from tests.integration.test_executor_argo_run import Journal, decided, executor
from tests.integration.test_executor_rolling import FakeSignals, RecordingPager

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        yield k


async def human_pauses(kube: Kube) -> None:
    """``kubectl argo rollouts pause``, then the controller's word that it holds."""
    await human_pause(kube)
    await until(lambda: status(kube), lambda s: s.get("message") == "manually paused")


async def test_the_decision_on_the_watch_cache_escalates_a_rollout_a_human_paused(
    kube: Kube,
) -> None:
    await paused_canary(kube)
    await human_pauses(kube)

    _, decision = await decided(kube)  # on the watch cache, which keeps spec.paused

    assert await _cached_paused(kube)
    assert decision.action is Action.ESCALATE and decision.reason_code == ReasonCode.PAUSED
    assert "nothing was aborted" in decision.reason


async def test_paused_between_the_decision_and_the_plan_the_run_escalates_nothing_aborted(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    rollback, decision = await decided(kube)
    assert decision.action is Action.ROLLBACK, decision.reason
    await human_pauses(kube)
    pager = RecordingPager()

    done = await executor(kube, Journal(), pager, FakeSignals()).run(rollback, decision)

    assert done.phase is Phase.ESCALATED and done.reason_code == ReasonCode.PAUSED
    assert "was paused by a human: not aborted" in (done.reason or "")
    assert pager.kinds == [NotificationKind.ESCALATION]
    assert pager.pages[0][1].endswith("Rollout default/web was paused by a human: not aborted")
    assert aborts(kubesim) == [] and "abort" not in await status(kube)


async def _cached_paused(kube: Kube) -> bool:
    facts = kube.facts(WEB, now=datetime.now(UTC)).rollout
    return facts is not None and facts.paused


async def test_paused_between_the_record_and_the_abort_the_resume_refuses_nothing_aborted(
    kubesim: KubeSim, kube: Kube
) -> None:
    await paused_canary(kube)
    await recorded_plan(kube)  # ... and the process dies
    await human_pauses(kube)  # meanwhile a human takes over

    with pytest.raises(PlanError) as refused:
        await ArgoRolloutsStrategy().resume(kube, WEB, "rb-1", timeout=TIMEOUT)

    assert refused.value.reason_code == ReasonCode.PAUSED
    assert "paused by a human since the plan: not aborted" in refused.value.message
    assert aborts(kubesim) == [] and "abort" not in await status(kube)
