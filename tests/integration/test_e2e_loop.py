"""The whole loop, end to end, on real servers.

kubesim (the cluster) serves workload metrics; the real Prometheus scrapes
them every second and evaluates real alert rules; the real Alertmanager posts
webhooks to rollbackd; rollbackd also polls Prometheus itself; a local sink
stands in for PagerDuty and Slack. Each scenario asserts on the cluster, the
journal, what was paged, and rollbackd's own metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.model import ANNOTATION_ROLLBACK, Phase, RecordKind, SignalSource, Target
from rollbackd.signals import DEFAULT_SIGNALS
from rollbackd.testing.promstack import instant_query
from rollbackd.testing.stack import (
    ALERT_RULES,
    PAGERDUTY_PATH,
    ROUTING_KEY,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
HEALTHY = knobs(error_rate=0.0, latency_ms=40)
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s

StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Any) -> AsyncIterator[StackFactory]:
    started: list[Stack] = []

    async def make(**kwargs: Any) -> Stack:
        stack = Stack(tmp_path / f"stack{len(started)}", **kwargs)
        started.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in reversed(started):
        await stack.stop()


async def deploy_stable_v1(
    stack: Stack, *, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """v1 rolled out, Ready, and stable for longer than min_stable."""
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=HEALTHY, annotations=annotations)
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)
    return await stack.deployment(SHOP.name)


async def metrics_of(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.daemon.url}/metrics") as resp,
    ):
        text = await resp.text()
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample_name, sample_labels), value in found.items()
        if sample_name == name and all((k, v) in sample_labels for k, v in labels.items())
    )


async def wait_poll_cycles(stack: Stack, cycles: int) -> None:
    """Until the poller has finished ``cycles`` more cycles: "nothing happened" means
    nothing happened while rollbackd was looking, however slow the machine."""

    async def finished() -> float:
        return metric(await metrics_of(stack), "rollbackd_poll_cycles_total")

    target = await finished() + cycles

    async def reached() -> bool:
        return await finished() >= target

    await wait_for(reached, 10 + 3 * cycles, f"{cycles} more poll cycles")


def untouched_view(dep: dict[str, Any]) -> dict[str, Any]:
    """What any write by rollbackd would change: spec, generation and annotations."""
    return {
        "generation": dep["metadata"]["generation"],
        "annotations": dep["metadata"].get("annotations", {}),
        "spec": dep["spec"],
    }


def pages(stack: Stack) -> list[dict[str, Any]]:
    return [r.json for r in stack.sink.requests_to(PAGERDUTY_PATH) if isinstance(r.json, dict)]


async def assert_single_completed_rollback(stack: Stack, v1: dict[str, Any]) -> None:
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED, rollback

    # The cluster runs v1's template again, through v1's own ReplicaSet.
    dep = await stack.deployment(SHOP.name)
    assert dep["spec"]["template"] == v1["spec"]["template"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    assert rollback.from_revision == 2 and rollback.to_revision == 1
    assert await stack.revision(SHOP.name) == 3  # the v1 ReplicaSet was promoted to revision 3

    # Exactly one rollback, although Alertmanager and the poller both fired.
    all_rollbacks = await stack.daemon.journal.list_rollbacks(target=SHOP, limit=50)
    assert [r.id for r in all_rollbacks] == [rollback.id]

    # Verification covered three healthy intervals after the rollback was ready.
    timeline = await stack.daemon.journal.timeline(rollback.id)
    kinds = [entry.kind for entry in timeline]
    assert "phase:VERIFYING" in kinds and "phase:ROLLBACK_COMPLETED" in kinds
    verified = [e for e in timeline if e.kind.startswith("verify")]
    assert len(verified) >= 3, kinds

    # One info page, then its resolve, both keyed by the rollback id.
    sent = await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)
    bodies = [r.json for r in sent]
    assert [b["event_action"] for b in bodies] == ["trigger", "resolve"]
    assert {b["dedup_key"] for b in bodies} == {rollback.id}
    assert bodies[0]["payload"]["severity"] == "info"
    assert bodies[0]["routing_key"] == ROUTING_KEY

    found = await metrics_of(stack)
    assert metric(found, "rollbackd_rollbacks_total", result="ROLLBACK_COMPLETED") == 1
    assert metric(found, "rollbackd_decisions_total", action="rollback") == 1
    # The signals were committed on the loop's own connection, the lock free.
    assert metric(found, "rollbackd_journal_intake_commits_total", path="in_place") >= 1


async def assert_only_an_escalation_record(stack: Stack, dedup_key: str) -> None:
    """No rollback happened; the page is a record of its own, listed by kind."""
    journal = stack.daemon.journal
    assert await journal.list_rollbacks(target=SHOP, kind=RecordKind.ROLLBACK) == []
    [record] = await journal.list_rollbacks(target=SHOP, kind=RecordKind.ESCALATION)
    assert record.id == dedup_key and record.phase is Phase.ESCALATED


async def signals_of(stack: Stack, rollback_id: str) -> list[dict[str, Any]]:
    """The signals the journal links to a rollback (the trigger and those that joined)."""
    timeline = await stack.daemon.journal.timeline(rollback_id)
    return [dict(entry.data) for entry in timeline if entry.kind == "signal"]


async def test_error_regression_is_rolled_back_verified_and_resolved(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    v1 = await deploy_stable_v1(stack)

    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.3), change_cause="v2")
    await stack.wait_rollout_complete(SHOP.name)
    bad_ready = time.monotonic()

    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    completed = time.monotonic()
    await assert_single_completed_rollback(stack, v1)
    # Both sources saw the regression; both led to the same single rollback.
    sources = {SignalSource(s["source"]) for s in await signals_of(stack, rollback.id)}
    assert sources == {SignalSource.ALERTMANAGER, SignalSource.PROMETHEUS}
    print(
        f"\nbad pods Ready -> ROLLBACK_COMPLETED: {completed - bad_ready:.1f}s "
        f"(rollback {rollback.id})"
    )


async def test_latency_regression_is_rolled_back(make_stack: StackFactory) -> None:
    stack = await make_stack()
    v1 = await deploy_stable_v1(stack)

    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(latency_ms=2500), change_cause="v2")

    await assert_single_completed_rollback(stack, v1)
    rollback = (await stack.daemon.journal.list_rollbacks(target=SHOP))[0]
    names = {s["name"] for s in await signals_of(stack, rollback.id)}
    assert names & {"latency_p99", "DeploymentHighLatencyP99"}, names
    assert not names & {"error_ratio", "DeploymentHighErrorRatio"}, names


async def test_rollback_that_does_not_help_fails_and_pages_critical_once(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    await deploy_stable_v1(stack)

    # A shared dependency breaks together with the v2 rollout: v1 fails too.
    stack.sim.workload.degrade(SHOP.namespace, SHOP.name, error_rate=0.4)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.4))

    rollback = await stack.wait_rollback(SHOP, phases=("ESCALATED", "ROLLBACK_COMPLETED"))
    assert rollback.phase is Phase.ESCALATED

    critical = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("payload", {}).get("severity") == "critical"
        ),
        timeout=20,
    )
    assert critical.json["dedup_key"] == rollback.id
    assert critical.json["event_action"] == "trigger"

    # The breach goes on, signals keep coming: still one rollback, no ping-pong.
    await wait_poll_cycles(stack, 5)
    assert [r.id for r in await stack.daemon.journal.list_rollbacks(target=SHOP)] == [rollback.id]
    assert await stack.revision(SHOP.name) == 3
    assert [p["payload"]["severity"] for p in pages(stack) if p["event_action"] == "trigger"] == [
        "info",
        "critical",
    ]
    found = await metrics_of(stack)
    assert metric(found, "rollbackd_rollbacks_total", result="ROLLBACK_FAILED") == 1


async def test_anomaly_without_recent_rollout_escalates_without_rollback(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(overrides={"policy": {"change_window": "4s", "min_stable": "1s"}})
    await stack.create_deployment(deployment_manifest(SHOP.name, image=V1, behaviour=HEALTHY))
    await stack.wait_rollout_complete(SHOP.name)
    await stack.roll_out(SHOP.name, image=V2, behaviour=HEALTHY)
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(5)  # the rollout is now outside the change window
    before = await stack.deployment(SHOP.name)

    stack.sim.workload.degrade(SHOP.namespace, SHOP.name, error_rate=0.4)

    page = await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and isinstance(r.json, dict), timeout=60
    )
    assert page.json["payload"]["severity"] == "critical"
    assert "not caused by a recent rollout" in page.json["payload"]["summary"]
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=500)
    assert {d["reason_code"] for d in decisions} >= {"no_recent_rollout"}
    assert all(d["action"] != "rollback" for d in decisions)
    after = await stack.deployment(SHOP.name)
    assert after["spec"]["template"] == before["spec"]["template"]
    await assert_only_an_escalation_record(stack, page.json["dedup_key"])


async def test_single_revision_escalates_manual_rollback_needed(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(error_rate=0.4))
    )

    page = await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and isinstance(r.json, dict), timeout=60
    )
    assert page.json["payload"]["severity"] == "critical"
    assert "manual rollback needed" in page.json["payload"]["summary"]
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=500)
    assert "no_previous_revision" in {d["reason_code"] for d in decisions}
    await assert_only_an_escalation_record(stack, page.json["dedup_key"])
    assert await stack.revision(SHOP.name) == 1


SLOW_RULES = ALERT_RULES.replace("for: 2s", "for: 30s")


async def test_one_breaching_sample_below_for_count_does_nothing(make_stack: StackFactory) -> None:
    # The poller needs 6 consecutive breaching evaluations of a 2 s window.
    signals = [{**asdict(spec), "window": "2s", "for_count": 6} for spec in DEFAULT_SIGNALS]
    stack = await make_stack(alert_rules=SLOW_RULES, overrides={"prometheus": {"signals": signals}})
    await deploy_stable_v1(stack)
    await stack.roll_out(SHOP.name, image=V2, behaviour=HEALTHY)
    await stack.wait_rollout_complete(SHOP.name)

    stack.sim.workload.degrade(SHOP.namespace, SHOP.name, error_rate=0.5)
    await asyncio.sleep(1.5)
    stack.sim.workload.degrade(SHOP.namespace, SHOP.name, error_rate=None)
    # Long enough for the poller to have judged the whole spike and its end.
    await wait_poll_cycles(stack, 8)

    # The spike was real and visible to Prometheus ...
    spike = await instant_query(
        stack.prometheus.url,
        'max_over_time((sum(rate(http_requests_total{code=~"5.."}[2s]))'
        " / sum(rate(http_requests_total[2s])))[30s:1s])",
    )
    assert spike and float(spike[0]["value"][1]) > 0.05
    # ... and rollbackd did nothing about it.
    assert await stack.daemon.journal.list_rollbacks(target=SHOP) == []
    decisions = await stack.daemon.journal.decisions(target=SHOP, limit=500)
    assert all(d["action"] not in ("rollback", "escalate") for d in decisions), decisions
    assert pages(stack) == []


async def test_prometheus_outage_never_triggers_rollback_and_nothing_is_lost(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    await deploy_stable_v1(stack)
    await stack.prometheus.stop()

    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.4))
    await stack.wait_rollout_complete(SHOP.name)

    async def query_errors() -> float | None:
        value = metric(await metrics_of(stack), "rollbackd_prometheus_query_errors_total")
        return value if value >= 2 else None

    await wait_for(query_errors, 30, "rollbackd to count failed Prometheus queries")
    assert await stack.daemon.journal.list_rollbacks(target=SHOP) == []
    assert pages(stack) == []
    async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon.url}/healthz") as r:
        assert r.status == 200  # the daemon keeps running

    # Data returns: the regression is seen and handled as usual.
    await stack.prometheus.start()
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED


async def test_opted_out_deployment_is_never_patched(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await deploy_stable_v1(stack, annotations={"rollbackd.io/enabled": "false"})
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.4))
    before = untouched_view(await stack.wait_rollout_complete(SHOP.name))

    async def opted_out() -> bool:
        decisions = await stack.daemon.journal.decisions(target=SHOP, limit=500)
        return any(d["reason_code"] == "opted_out" for d in decisions)

    await wait_for(opted_out, 60, "the opt-out decision to be recorded")
    await wait_poll_cycles(stack, 3)
    dep = await stack.deployment(SHOP.name)
    assert untouched_view(dep) == before  # no write from rollbackd
    assert ANNOTATION_ROLLBACK not in dep["metadata"].get("annotations", {})
    assert await stack.daemon.journal.list_rollbacks(target=SHOP) == []
    assert pages(stack) == []


async def test_dry_run_records_the_would_be_rollback_without_patching(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(overrides={"policy": {"dry_run": True}})
    await deploy_stable_v1(stack)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.4))
    before = untouched_view(await stack.wait_rollout_complete(SHOP.name))

    rollback = await stack.wait_rollback(SHOP, phases=("DRY_RUN",), timeout=60)
    assert (rollback.from_revision, rollback.to_revision) == (2, 1)
    await wait_poll_cycles(stack, 3)
    dep = await stack.deployment(SHOP.name)
    assert untouched_view(dep) == before
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == V2
    rollbacks = await stack.daemon.journal.list_rollbacks(target=SHOP)
    assert {r.phase for r in rollbacks} == {Phase.DRY_RUN}
    found = await metrics_of(stack)
    assert metric(found, "rollbackd_decisions_total", action="dry_run") >= 1
    assert metric(found, "rollbackd_decisions_total", action="rollback") == 0
