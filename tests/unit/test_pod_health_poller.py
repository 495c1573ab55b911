"""The pod_health poller: which Deployments it looks at, and the signals its looks become.

Only Deployments with a rollout inside their change window (and those it
already tracks) are looked at; their pods come from the watch cache while
its pod watch is current (no API call) and are listed, a few at a time, while
it is not. Either way a breach fires after ``for_count`` looks, repeats under
one key, resolves when the pods recover or another ReplicaSet takes over, and
a failed list is no data, never a trigger.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from rollbackd.model import ClusterFacts, RevisionInfo, Signal, SignalSource, SignalStatus, Target
from rollbackd.podhealth import PodRules
from rollbackd.sources.kubernetes import CONCURRENT_LISTS, PodHealthPoller, recent_rollouts

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FRESH = Target("shop", "checkout")
OLD = Target("shop", "cart")


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def crashing_pod(name: str, rs_uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": stamp(T0 + timedelta(seconds=1)),
            "ownerReferences": [{"kind": "ReplicaSet", "uid": rs_uid, "controller": True}],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": stamp(T0)}],
            "containerStatuses": [
                {
                    "name": "app",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "restartCount": 3,
                }
            ],
        },
    }


def ready_pod(name: str, rs_uid: str) -> dict[str, Any]:
    pod = crashing_pod(name, rs_uid)
    pod["status"] = {
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp(T0)}],
        "containerStatuses": [
            {"name": "app", "state": {"running": {}}, "ready": True, "restartCount": 0}
        ],
    }
    return pod


class FakeCluster:
    """A watch cache's answers and an API server's pod lists, set by the test."""

    def __init__(self) -> None:
        self.rollouts = {FRESH: T0, OLD: T0 - timedelta(days=2)}
        self.current = {FRESH: ("checkout-v2", "uid-v2"), OLD: ("cart-v1", "uid-cart")}
        self.pods: dict[Target, list[dict[str, Any]] | Exception] = {
            FRESH: [
                crashing_pod("checkout-v2-a", "uid-v2"),
                crashing_pod("checkout-v2-b", "uid-v2"),
            ],
            OLD: [crashing_pod("cart-v1-a", "uid-cart")] * 2,
        }
        self.listed: list[Target] = []
        self.watched = False  # the pod watch current: pods come from the cache, nothing is listed
        self.asked: list[set[tuple[str, str]]] = []

    def cached_deployments(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        return [
            (
                (target.namespace, target.name),
                {
                    "metadata": {"annotations": {}},
                    "status": {
                        "conditions": [{"type": "Progressing", "lastUpdateTime": stamp(started)}]
                    },
                },
            )
            for target, started in sorted(self.rollouts.items())
        ]

    def rollout_targets(self) -> list[Target]:
        return []  # no Argo Rollouts here

    def facts(self, target: Target, *, now: datetime) -> ClusterFacts:
        name, uid = self.current[target]
        info = RevisionInfo(2, name, uid, self.rollouts[target], {}, ())
        return ClusterFacts(
            target, True, revisions=(info,), rollout_started_at=self.rollouts[target]
        )

    async def current_pods(self, target: Target) -> list[dict[str, Any]]:
        self.listed.append(target)
        pods = self.pods[target]
        if isinstance(pods, Exception):
            raise pods
        return pods

    def pods_watched(self) -> bool:
        return self.watched

    async def replicaset_pods(
        self, wanted: set[tuple[str, str]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        self.asked.append(wanted)
        found: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in wanted}
        for target, (name, _) in self.current.items():
            pods = self.pods.get(target)
            if (target.namespace, name) in wanted and isinstance(pods, list):
                found[(target.namespace, name)] += pods
        return found


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(seconds=30)

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(seconds=10)


@pytest.fixture(params=["watched", "listed"])
def cluster(request: pytest.FixtureRequest) -> FakeCluster:
    """The same cluster, its pods read from a current pod watch or listed."""
    found = FakeCluster()
    found.watched = request.param == "watched"
    return found


def looked_at(cluster: FakeCluster) -> list[Target]:
    """The targets whose pods were read, from the cache or by a list."""
    asked = set().union(*cluster.asked) if cluster.asked else set()
    cached = [t for t, (name, _) in cluster.current.items() if (t.namespace, name) in asked]
    return sorted(cached + cluster.listed)


def make_poller(
    cluster: FakeCluster,
    clock: Clock,
    emitted: list[Signal],
    emit: Callable[[Signal], Awaitable[None]] | None = None,
    **kw: Any,
) -> PodHealthPoller:
    async def record(signal: Signal) -> None:
        emitted.append(signal)

    def window_of(target: Target, annotations: Mapping[str, str]) -> timedelta:
        return timedelta(minutes=30)

    return PodHealthPoller(
        cluster,
        rules=PodRules(),
        for_count=2,
        interval=1.0,
        window_of=window_of,
        default_window=timedelta(minutes=30),
        emit=emit or record,
        clock=clock,
        **kw,
    )


async def test_only_deployments_with_a_rollout_in_their_change_window_are_looked_at(
    cluster: FakeCluster,
) -> None:
    clock = Clock()
    emitted: list[Signal] = []
    poller = make_poller(cluster, clock, emitted)
    await poller.evaluate_once()
    assert looked_at(cluster) == [FRESH], (
        "a two-day-old rollout crash-looping is not this rollout's fault"
    )


async def test_a_breach_fires_after_for_count_looks_and_repeats_under_one_key(
    cluster: FakeCluster,
) -> None:
    clock = Clock()
    emitted: list[Signal] = []
    poller = make_poller(cluster, clock, emitted)
    assert await poller.evaluate_once() == []
    first_look = clock.now
    clock.tick()
    [fired] = await poller.evaluate_once()
    clock.tick()
    [again] = await poller.evaluate_once()
    assert fired.status is SignalStatus.FIRING and fired.source is SignalSource.KUBERNETES
    assert fired.name == "pod_health" and fired.started_at == first_look
    assert again.key == fired.key, "a repeat is deduplicated by the intake"
    assert fired.labels["replicaset"] == "checkout-v2"
    assert "checkout-v2-a container app CrashLoopBackOff (restarts 3)" in fired.summary
    assert (fired.value, fired.threshold) == (2, 2.0)


async def test_the_signal_resolves_once_when_the_pods_recover(cluster: FakeCluster) -> None:
    clock = Clock()
    emitted: list[Signal] = []
    poller = make_poller(cluster, clock, emitted)
    for _ in range(2):
        await poller.evaluate_once()
        clock.tick()
    cluster.pods[FRESH] = [
        ready_pod("checkout-v2-a", "uid-v2"),
        ready_pod("checkout-v2-b", "uid-v2"),
    ]
    [resolved] = await poller.evaluate_once()
    assert resolved.status is SignalStatus.RESOLVED
    assert await poller.evaluate_once() == []
    assert poller.tracked == 0


async def test_a_new_current_replicaset_resolves_the_old_streak_and_starts_afresh(
    cluster: FakeCluster,
) -> None:
    clock = Clock()
    emitted: list[Signal] = []
    poller = make_poller(cluster, clock, emitted)
    for _ in range(2):
        await poller.evaluate_once()
        clock.tick()
    # Rolled back: revision 1's ReplicaSet is current, and it crash-loops too.
    cluster.current[FRESH] = ("checkout-v1", "uid-v1")
    cluster.pods[FRESH] = [crashing_pod("checkout-v1-a", "uid-v1")] * 2
    restored_at = clock.now
    [resolved] = await poller.evaluate_once()
    assert (
        resolved.status is SignalStatus.RESOLVED and resolved.labels["replicaset"] == "checkout-v2"
    )
    clock.tick()
    [fired] = await poller.evaluate_once()
    assert fired.status is SignalStatus.FIRING and fired.labels["replicaset"] == "checkout-v1"
    assert fired.started_at == restored_at, "the restored revision's anomaly starts after it"


async def test_a_failing_pod_list_is_no_data_once_and_never_a_trigger() -> None:
    cluster, clock = FakeCluster(), Clock()
    emitted: list[Signal] = []
    errors: list[tuple[Target, Exception]] = []
    poller = make_poller(cluster, clock, emitted, on_error=lambda t, e: errors.append((t, e)))
    cluster.pods[FRESH] = RuntimeError("503 from the API server")
    for _ in range(3):
        assert await poller.evaluate_once() == []
        clock.tick()
    assert errors and errors[0][0] == FRESH

    cluster.pods[FRESH] = [crashing_pod("checkout-v2-a", "uid-v2")] * 2
    for _ in range(2):
        await poller.evaluate_once()
        clock.tick()
    cluster.pods[FRESH] = RuntimeError("503 from the API server")
    [no_data] = await poller.evaluate_once()
    clock.tick()
    assert no_data.status is SignalStatus.NO_DATA and "listing pods failed" in no_data.summary
    assert await poller.evaluate_once() == [], "no data is said once per streak"


async def test_a_tracked_deployment_is_still_looked_at_after_its_window_closes(
    cluster: FakeCluster,
) -> None:
    clock = Clock()
    emitted: list[Signal] = []
    poller = make_poller(cluster, clock, emitted)
    for _ in range(2):
        await poller.evaluate_once()
        clock.tick()
    clock.now += timedelta(hours=1)
    cluster.pods[FRESH] = [ready_pod("checkout-v2-a", "uid-v2")] * 2
    [resolved] = await poller.evaluate_once()
    assert resolved.status is SignalStatus.RESOLVED, "a firing signal is always closed"


async def test_an_emit_failure_does_not_hide_the_other_signals(cluster: FakeCluster) -> None:
    clock = Clock()
    cluster.rollouts[OLD] = T0
    emitted: list[Signal] = []

    async def flaky_emit(signal: Signal) -> None:
        if signal.target == FRESH:
            raise RuntimeError("journal full")
        emitted.append(signal)

    poller = make_poller(cluster, clock, [], emit=flaky_emit)
    for _ in range(2):
        await poller.evaluate_once()
        clock.tick()
    assert [s.target for s in emitted] == [OLD]


async def test_while_the_pod_watch_is_current_a_breach_fires_without_one_api_call() -> None:
    cluster, clock = FakeCluster(), Clock()
    cluster.watched = True
    cluster.rollouts[OLD] = T0
    poller = make_poller(cluster, clock, [])
    await poller.evaluate_once()
    clock.tick()
    fired = await poller.evaluate_once()
    assert {s.target for s in fired} == {FRESH, OLD}
    assert cluster.listed == [], "nothing is listed while the watch is current"
    assert cluster.asked[-1] == {("shop", "checkout-v2"), ("shop", "cart-v1")}, (
        "one read of the cache per cycle, for every ReplicaSet looked at"
    )


async def test_a_pod_watch_that_stops_being_current_turns_the_looks_into_lists_and_back() -> None:
    cluster, clock = FakeCluster(), Clock()
    cluster.watched = True
    poller = make_poller(cluster, clock, [])
    await poller.evaluate_once()
    clock.tick()
    cluster.watched = False  # the watch failed: the cache may be minutes old
    with capture_logs() as logs:
        [fired] = await poller.evaluate_once()
    assert fired.status is SignalStatus.FIRING, "the streak goes on across the switch"
    assert cluster.listed == [FRESH] and len(cluster.asked) == 1
    assert [e["targets"] for e in logs if e["event"] == "pod_health_listing_pods"] == [1]
    cluster.watched = True
    clock.tick()
    await poller.evaluate_once()
    assert cluster.listed == [FRESH] and len(cluster.asked) == 2


async def test_each_targets_facts_are_computed_once_a_cycle(cluster: FakeCluster) -> None:
    """Facts compare templates (a fraction of a millisecond each): after a fleet-wide
    rollout, computing them twice a cycle doubled pod health's CPU."""
    asked: Counter[Target] = Counter()
    facts = cluster.facts

    def counted(target: Target, *, now: datetime) -> ClusterFacts:
        asked[target] += 1
        return facts(target, now=now)

    cluster.facts = counted  # type: ignore[method-assign]
    cluster.rollouts[OLD] = T0
    poller = make_poller(cluster, Clock(), [])
    await poller.evaluate_once()
    assert asked == {FRESH: 1, OLD: 1}


class SlowFleet(FakeCluster):
    """Many fresh rollouts whose pod lists take a while: counts the lists in flight."""

    def __init__(self, size: int) -> None:
        super().__init__()
        fleet = [Target("shop", f"app-{i:03d}") for i in range(size)]
        self.rollouts = dict.fromkeys(fleet, T0)
        self.current = {target: (f"{target.name}-v2", f"uid-{target.name}") for target in fleet}
        self.pods = {t: [ready_pod(f"{t.name}-a", f"uid-{t.name}")] for t in fleet}
        self.in_flight = 0  # pod lists asked for and not yet answered
        self.most_in_flight = 0

    async def current_pods(self, target: Target) -> list[dict[str, Any]]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        pods = await super().current_pods(target)
        self.in_flight -= 1
        return pods


async def test_a_fleet_wide_rollout_is_looked_at_a_few_deployments_at_a_time() -> None:
    """With the pod watch not current: a few lists at a time, never one per Deployment at once."""
    fleet = SlowFleet(100)
    poller = make_poller(fleet, Clock(), [])
    await poller.evaluate_once()
    assert sorted(fleet.listed) == sorted(fleet.rollouts), "every recent rollout looked at once"
    assert 1 < fleet.most_in_flight <= CONCURRENT_LISTS


class CostlyFacts(SlowFleet):
    """A fleet-wide rollout whose facts cost what a Deployment's template comparison does."""

    FACTS_SECONDS = 0.0005

    def facts(self, target: Target, *, now: datetime) -> ClusterFacts:
        until = time.perf_counter() + self.FACTS_SECONDS
        while time.perf_counter() < until:
            pass
        return super().facts(target, now=now)


async def test_the_scan_of_a_fleet_wide_rollout_lets_webhooks_run_between_slices() -> None:
    """Every Deployment recent: the scan yields by the clock, not after a thousand facts.

    300 Deployments at 0.5 ms of facts each is 150 ms of work; a count-based
    yield every 1 000 Deployments held the loop for all of it (the webhook's
    p99 was the scan's length). Other tasks must run at least every few ms.
    """
    fleet = CostlyFacts(300)
    turns = 0
    scanning = True

    async def webhook_like() -> None:
        nonlocal turns
        while scanning:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(webhook_like())
    await asyncio.sleep(0)
    before = turns
    found = await recent_rollouts(
        fleet, T0 + timedelta(seconds=30), lambda t, a: timedelta(minutes=30), timedelta(minutes=30)
    )
    scanning = False
    await other
    assert sorted(found) == sorted(fleet.rollouts), "every fresh rollout is still found"
    # 150 ms in slices of about 2 ms: dozens of turns; never fewer than one per 10 ms.
    assert turns - before >= 15
