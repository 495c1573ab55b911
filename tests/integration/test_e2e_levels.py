"""Escalation levels end to end: kubesim, the real Prometheus and Alertmanager, rollbackd.

A Deployment of team "payments" (annotation ``rollbackd.io/team``) rolls out
a bad version; rollbackd rolls it back, and the restored version fails its
smoke check, so verification fails. The payments route's on-call routing key
hears the whole story (started, then the escalation); the payments lead's
routing key is paged with the escalation only; the default route's channels
hear nothing about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS
from rollbackd.model import Phase, Target
from rollbackd.notify.routing import ANNOTATION_TEAM
from rollbackd.testing.kubesim.proxy import KNOB_FAILING_PATHS
from rollbackd.testing.sink import HttpSink, RecordedRequest
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
ONCALL_KEY = "payments-oncall-routing-key"
LEAD_KEY = "payments-lead-routing-key"


@pytest.fixture
async def team_pager() -> AsyncIterator[HttpSink]:
    """The payments team's PagerDuty (two services, one per routing key)."""
    async with HttpSink() as sink:
        yield sink


def team_channels(tmp_path: Path, team_pager: HttpSink) -> dict[str, Any]:
    """The payments on-call and lead channels: two routing keys, one PagerDuty."""
    channels = {}
    for name, key in (("pay_oncall", ONCALL_KEY), ("pay_lead", LEAD_KEY)):
        key_file = tmp_path / f"{name}.key"
        key_file.write_text(key + "\n")
        channels[name] = {
            "type": "pagerduty",
            "url": f"{team_pager.url}{PAGERDUTY_PATH}",
            "routing_key_file": str(key_file),
        }
    return channels


@pytest.fixture
async def stack(tmp_path: Path, team_pager: HttpSink) -> AsyncIterator[Stack]:
    channels = team_channels(tmp_path, team_pager)
    overrides = {
        "verify": {
            "intervals": 3,
            "timeout": "60s",
            "smoke_checks": [{"name": "orders", "url": "/orders", "port": "http", "timeout": "3s"}],
            "smoke_via": "service-proxy",  # kubesim serves it; no cluster DNS on loopback
        },
        "notify": {
            "channels": channels,
            "routes": [
                {
                    "name": "payments",
                    "match": {"teams": ["payments"]},
                    "oncall": ["pay_oncall"],
                    "lead": ["pay_lead"],
                },
                # The stack's own channels (legacy sections) form the default route.
                {"oncall": ["pagerduty", "slack"], "lead": ["pagerduty"]},
            ],
        },
    }
    async with Stack(tmp_path / "stack", overrides=overrides) as started:
        yield started


def trigger(key: str, severity: str) -> Callable[[RecordedRequest], bool]:
    return lambda r: (
        isinstance(r.json, dict)
        and r.json.get("routing_key") == key
        and r.json.get("event_action") == "trigger"
        and r.json.get("payload", {}).get("severity") == severity
    )


def pages(sink: HttpSink, key: str) -> list[dict[str, Any]]:
    return [
        r.json
        for r in sink.requests
        if isinstance(r.json, dict) and r.json.get("routing_key") == key
    ]


async def test_a_failed_verification_pages_the_team_on_call_and_its_lead_by_routing_key(
    stack: Stack, team_pager: HttpSink
) -> None:
    stack.sim.store.create(
        "v1/services",
        {
            "metadata": {"name": "shop", "namespace": SHOP.namespace},
            "spec": {
                "selector": {"app": SHOP.name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    # v1's metrics are healthy, but it answers 500 on /orders: verification fails.
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image=V1,
            behaviour={**knobs(), KNOB_FAILING_PATHS: "/orders"},
            annotations={ANNOTATION_SMOKE_CHECKS: "orders", ANNOTATION_TEAM: "payments"},
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: only a stable v1 is restored
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(error_rate=0.3))
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ESCALATED, rollback.reason
    assert rollback.reason_code == "verify_smoke_failed"

    lead = await team_pager.wait_for(trigger(LEAD_KEY, "critical"), timeout=20)
    await team_pager.wait_for(trigger(ONCALL_KEY, "critical"), timeout=20)
    assert lead.json["dedup_key"] == rollback.id
    assert lead.json["payload"]["custom_details"]["reason_code"] == "verify_smoke_failed"
    assert 'smoke check "orders"' in lead.json["payload"]["summary"]
    # On-call heard the whole story, the lead only what needs a human.
    oncall = [p for p in pages(team_pager, ONCALL_KEY) if p["dedup_key"] == rollback.id]
    assert [p["payload"]["severity"] for p in oncall] == ["info", "critical"]
    assert [p["dedup_key"] for p in pages(team_pager, LEAD_KEY)] == [rollback.id]
    # The default route's channels were not told about the payments team's rollback.
    assert stack.sink.requests_to(PAGERDUTY_PATH) == []
    assert stack.sink.requests_to("/slack") == []


@pytest.fixture
async def slow_fix_stack(tmp_path: Path, team_pager: HttpSink) -> AsyncIterator[Stack]:
    """A payments route whose lead hears of anything still unresolved after 6 s."""
    channels = team_channels(tmp_path, team_pager)
    overrides = {
        # A Deployment breaching from its first minute is not a recent rollout's fault.
        "policy": {"change_window": "1s"},
        "notify": {
            "channels": channels,
            "escalation": {"group_wait": "200ms"},
            "routes": [
                {
                    "match": {"teams": ["payments"]},
                    "oncall": ["pay_oncall"],
                    "lead": ["pay_lead"],
                    "escalate_after": "6s",
                },
                {"oncall": ["pagerduty"], "lead": ["pagerduty"]},
            ],
        },
    }
    async with Stack(tmp_path / "stack", overrides=overrides) as started:
        yield started


async def test_an_unresolved_escalation_reaches_the_lead_once_across_a_daemon_restart(
    slow_fix_stack: Stack, team_pager: HttpSink
) -> None:
    stack = slow_fix_stack
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name,
            image=V1,
            behaviour=knobs(error_rate=0.3),
            annotations={ANNOTATION_TEAM: "payments"},
        )
    )
    oncall = await team_pager.wait_for(trigger(ONCALL_KEY, "critical"), timeout=60)
    key = oncall.json["dedup_key"]
    assert oncall.json["payload"]["custom_details"]["reason_code"] == "no_recent_rollout"
    assert pages(team_pager, LEAD_KEY) == []  # not a deploy problem: on-call first
    # Restarted before escalate_after: the new daemon reads the page from the journal.
    await stack.stop_daemon()
    assert pages(team_pager, LEAD_KEY) == []
    restarted_at = datetime.now(UTC)
    await stack.start_daemon()
    lead = await team_pager.wait_for(trigger(LEAD_KEY, "critical"), timeout=30)
    assert lead.json["dedup_key"] == key
    assert lead.at >= restarted_at  # paged by the restarted daemon
    assert "still unresolved" in lead.json["payload"]["summary"]
    # Once: a further check (and a further restart) finds it already escalated.
    assert await stack.daemon.lead_escalation.check() == []
    await stack.stop_daemon()
    await stack.start_daemon()
    assert await stack.daemon.lead_escalation.check() == []
    assert [p["dedup_key"] for p in pages(team_pager, LEAD_KEY)] == [key]
    on_call_for_key = [p for p in pages(team_pager, ONCALL_KEY) if p["dedup_key"] == key]
    assert len(on_call_for_key) == 1  # never repeated to on-call
