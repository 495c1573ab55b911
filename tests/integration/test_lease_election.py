"""Leader election with fencing, two replicas' adapters against kubesim.

What is pinned: one leader at a time, with its term (the Lease's transition
count) granted to its fence; a leader whose renewal stalls is fenced by its
clock at the renew deadline, before anyone can take over; a shut-down leader
hands the Lease over at once; a follower's writes never leave the process;
a Lease that cannot be used as configured is one clear problem naming the
key to fix, not a traceback per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.kube import Kube, NotFoundError
from rollbackd.kube.fencing import FencedError, StaleTermError
from rollbackd.kube.lease import LeaseProblem
from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, encode_state
from rollbackd.testing.kubesim import KubeSim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LEASES = "coordination.k8s.io/v1/leases"
LEASE_DURATION = 3
RENEW_DEADLINE = 2.0
RETRY_PERIOD = 0.5


@dataclass
class Replica:
    name: str
    kube: Kube
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[str] = field(default_factory=list)
    problems: list[LeaseProblem | None] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def on_started(self) -> None:
        self.events.append("started")
        self.leading.set()
        try:
            await asyncio.Event().wait()  # leads until cancelled
        finally:
            self.events.append("work cancelled")

    async def on_stopped(self) -> None:
        self.events.append("stopped")
        self.leading.clear()

    def campaign(self, namespace: str = "default", **timing: float) -> None:
        self.task = asyncio.create_task(
            self.kube.run_leader_election(
                namespace=namespace,
                lease_name="rollbackd",
                identity=self.name,
                lease_duration=timing.get("lease_duration", LEASE_DURATION),
                renew_deadline=timing.get("renew_deadline", RENEW_DEADLINE),
                retry_period=timing.get("retry_period", RETRY_PERIOD),
                on_started=self.on_started,
                on_stopped=self.on_stopped,
                on_problem=self.problems.append,
            )
        )

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest_asyncio.fixture
async def replicas(kubesim: KubeSim) -> AsyncIterator[dict[str, Replica]]:
    found: dict[str, Replica] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in ("replica-a", "replica-b"):
            kube = await stack.enter_async_context(
                await Kube.connect(kubeconfig=str(kubesim.kubeconfig))
            )
            found[name] = Replica(name, kube)
        try:
            yield found
        finally:
            for replica in found.values():
                await replica.stop()


async def until(
    predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def lease(sim: KubeSim) -> dict[str, Any]:
    return sim.store.get(LEASES, "default", "rollbackd")


async def test_one_leader_its_term_granted_and_a_follower_that_writes_nothing(
    kubesim: KubeSim, replicas: dict[str, Replica]
) -> None:
    a, b = replicas["replica-a"], replicas["replica-b"]
    a.campaign()
    await asyncio.wait_for(a.leading.wait(), 10)
    b.campaign()
    await until(lambda: b.kube.election and b.kube.election.holder == "replica-a", 10, "b sees a")

    spec = lease(kubesim)["spec"]
    assert spec["holderIdentity"] == "replica-a"
    term = a.kube.fence.term
    assert term is not None and term.holder == "replica-a"
    assert term.number == spec["leaseTransitions"]
    assert a.kube.fence.may_act()
    assert not b.kube.fence.may_act() and b.kube.fence.term is None
    assert not b.leading.is_set()

    # The follower's writes never reach the API server; its reads do.
    target = Target("default", "web")
    before = len(kubesim.store.list("v1/events", "default"))
    with pytest.raises(FencedError, match="refusing PATCH"):
        await b.kube.patch_deployment(target, [{"op": "add", "path": "/x", "value": 1}])
    await b.kube.emit_event(target, reason="Test", message="must not land")
    assert len(kubesim.store.list("v1/events", "default")) == before
    with pytest.raises(NotFoundError):  # answered by the server: reads are not fenced
        await b.kube.read_deployment(Target("default", "nope"))


async def test_a_stalled_renewal_fences_the_leader_at_the_renew_deadline(
    kubesim: KubeSim, replicas: dict[str, Replica]
) -> None:
    a, b = replicas["replica-a"], replicas["replica-b"]
    a.campaign()
    await asyncio.wait_for(a.leading.wait(), 10)
    b.campaign()
    first = a.kube.fence.term
    assert first is not None
    # A's next renewal hangs in the API server far past the renew deadline.
    kubesim.faults.delay("update", r"/leases/rollbackd$", seconds=4.0, count=1)
    stalled = time.monotonic()
    await until(lambda: not a.kube.fence.may_act(), RENEW_DEADLINE + 1, "the fence", interval=0.002)
    # The last grant was before the stall: fenced within the renew deadline of it,
    # while the renewal was still hanging and before any other replica could act.
    assert time.monotonic() - stalled <= RENEW_DEADLINE + 0.05
    assert not b.leading.is_set()

    # The API server answers again: the leader acquires anew, in a new term.
    await until(
        lambda: (t := a.kube.fence.term) is not None and t.number > first.number, 5, "new term"
    )
    second = a.kube.fence.term
    assert second is not None
    # The stale renewal finally lands; it cannot overwrite the newer term.
    await asyncio.sleep(max(0.0, stalled + 4.5 - time.monotonic()))
    spec = lease(kubesim)["spec"]
    assert spec["leaseTransitions"] >= second.number > first.number
    assert spec["holderIdentity"] == "replica-a"
    # In between, the work of the first term was stopped before the second began.
    assert a.events[:4] == ["started", "work cancelled", "stopped", "started"]


async def test_a_leader_that_shuts_down_hands_the_lease_over_at_once(
    kubesim: KubeSim, replicas: dict[str, Replica]
) -> None:
    a, b = replicas["replica-a"], replicas["replica-b"]
    # A long lease: without the hand-over, b would wait 30 s.
    timing = {"lease_duration": 30, "renew_deadline": 20.0, "retry_period": 0.3}
    a.campaign(**timing)
    await asyncio.wait_for(a.leading.wait(), 10)
    b.campaign(**timing)
    await until(lambda: b.kube.election and b.kube.election.holder == "replica-a", 10, "b sees a")

    stopped = time.monotonic()
    await a.stop()
    assert a.events == ["started", "work cancelled", "stopped"]
    assert not a.kube.fence.may_act()
    await asyncio.wait_for(b.leading.wait(), 5)
    assert time.monotonic() - stopped < 5
    assert lease(kubesim)["spec"]["holderIdentity"] == "replica-b"


async def test_a_missing_lease_namespace_is_one_problem_naming_the_key(
    kubesim: KubeSim, replicas: dict[str, Replica], caplog: pytest.LogCaptureFixture
) -> None:
    a = replicas["replica-a"]
    a.campaign(namespace="rollbackd-system", retry_period=0.1, renew_deadline=1.0)
    await until(lambda: a.problems, 10, "a problem report")
    mark = kubesim.requests.mark()
    await until(
        lambda: len([r for r in kubesim.requests.since(mark) if "/leases" in r.path]) >= 3,
        10,
        "three more tries at the Lease",
    )
    (problem,) = a.problems  # reported once, however often it is retried
    assert problem is not None
    assert problem.key == "leader_election.namespace"
    assert 'namespace "rollbackd-system" does not exist' in problem.message
    assert a.kube.election is not None and a.kube.election.problem == problem
    assert not a.leading.is_set()
    assert "Traceback" not in caplog.text

    # Fixed in the cluster: the problem clears and the replica leads.
    kubesim.store.create("v1/namespaces", {"metadata": {"name": "rollbackd-system"}})
    await asyncio.wait_for(a.leading.wait(), 40)
    assert a.problems[-1] is None
    assert a.kube.election.problem is None


async def test_a_forbidden_lease_says_what_to_grant(
    kubesim: KubeSim, replicas: dict[str, Replica]
) -> None:
    a = replicas["replica-a"]
    kubesim.faults.fail("get", r"/leases/rollbackd$", 403, count=1000)
    a.campaign(retry_period=0.1, renew_deadline=1.0)
    await until(lambda: a.problems, 10, "a problem report")
    (problem,) = a.problems
    assert problem is not None and problem.key == "leader_election.namespace"
    assert "refuses to get the Lease default/rollbackd" in problem.message
    assert "get, create and update on leases" in problem.message
    assert not a.leading.is_set() and not a.kube.fence.may_act()


async def test_a_leader_never_replaces_state_written_in_a_later_term(
    kubesim: KubeSim, replicas: dict[str, Replica]
) -> None:
    a = replicas["replica-a"]
    a.campaign()
    await asyncio.wait_for(a.leading.wait(), 10)
    ours = a.kube.fence.term
    assert ours is not None
    at = datetime.now(UTC)
    theirs = RollbackState(
        rollback_id="rb-1",
        phase=Phase.VERIFYING,
        from_revision=2,
        to_revision=1,
        started_at=at,
        updated_at=at,
        reason_code="rollback",
        holder="replica-b",
        term=ours.number + 1,
    )
    kubesim.store.create(
        "apps/v1/deployments",
        {
            "metadata": {
                "name": "web",
                "namespace": "default",
                "annotations": {ANNOTATION_ROLLBACK: encode_state(theirs)},
            },
            "spec": {
                "replicas": 0,  # no pods: nothing moves the object after the read below
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "web:1"}]},
                },
            },
        },
    )
    mine = replace(theirs, phase=Phase.ROLLBACK_COMPLETED, holder=ours.holder, term=ours.number)
    target = Target("default", "web")
    await kubesim.controller.settle()
    current = await a.kube.read_deployment(target)
    with pytest.raises(StaleTermError, match="written by replica-b in term"):
        await a.kube.write_state(
            target, mine, resource_version=current["metadata"]["resourceVersion"]
        )
    stored = kubesim.store.get("apps/v1/deployments", "default", "web")
    assert stored["metadata"]["annotations"][ANNOTATION_ROLLBACK] == encode_state(theirs)
