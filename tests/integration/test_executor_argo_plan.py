"""An abort journals its plan with the canary's and the stable's pod templates (the postmortem's change).

Rollout default/web is paused at setWeight 25 with a canary on
example/app:2.0 over the stable example/app:1.0 (the helpers of
test_executor_argo.py). The journal is a recorder keeping each event's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.kube import Kube
from rollbackd.model import Rollback
from rollbackd.testing.kubesim import KubeSim
from tests.integration.test_executor_argo import aborts
from tests.integration.test_executor_argo_events import aborted
from tests.integration.test_executor_argo_run import Journal

pytestmark = pytest.mark.integration

REPLICASETS = r"^/apis/apps/v1/namespaces/default/replicasets$"


@dataclass
class DataJournal(Journal):
    """The executor's recorder, keeping each event's data too."""

    data: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    async def event(
        self, rollback: Rollback, kind: str, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        await super().event(rollback, kind, message, data)
        self.data[kind] = data or {}


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig), retry_budget=5.0) as k:
        yield k


async def run_abort(kube: Kube) -> DataJournal:
    journal = DataJournal()
    await aborted(kube, journal)
    return journal


async def test_the_plan_event_holds_the_canarys_and_the_stables_templates(kube: Kube) -> None:
    journal = await run_abort(kube)

    plan = journal.data["plan"]
    assert plan["images_from"] == ["example/app:2.0"] and plan["images_to"] == ["example/app:1.0"]
    assert (plan["from_revision"], plan["to_revision"]) == (2, 1)
    assert plan["diff"] == ["spec.containers[app].image"]
    bad, restored = plan["templates"]["bad"], plan["templates"]["restored"]
    assert bad["containers"][0]["image"] == "example/app:2.0"
    assert restored["containers"][0]["image"] == "example/app:1.0"
    assert journal.events.index("plan") < journal.events.index("verify_interval")


async def test_replicasets_unreadable_for_the_plan_event_never_stop_the_abort(
    kube: Kube, kubesim: KubeSim
) -> None:
    # The first list is the plan's own; the second, the plan event's, is refused.
    kubesim.faults.fail("list", REPLICASETS, 403, count=1, after=1)

    journal = await run_abort(kube)

    plan = journal.data["plan"]
    assert "templates" not in plan and plan["changes"]["strategy"] == "argo-rollouts"
    assert aborts(kubesim) == [200]
