"""Pages that were meant reach a human: pager outages, a kill after the patch, alert storms.

The whole stack on loopback (kubesim, real Prometheus and Alertmanager, the
pager sink); the daemon in-process or as a real `rollbackd run` subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.escalation import KIND_GROUP
from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5
FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "2s"}


def accepted_pages(stack: Stack) -> list[dict[str, Any]]:
    """What PagerDuty accepted (2xx), in arrival order."""
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict) and 200 <= r.status < 300
    ]


async def bad_rollout(stack: Stack) -> None:
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=2)
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # v1 must have been stable for min_stable
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))


@pytest.fixture
async def outage_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path / "stack", overrides={"notify": FAST_RETRIES})
    async with stack:
        yield stack


async def test_a_pager_outage_during_a_rollback_delays_pages_but_loses_none(
    outage_stack: Stack,
) -> None:
    stack = outage_stack
    # Down for the whole rollback, however long it takes, then back.
    stack.sink.fail_for(PAGERDUTY_PATH, 120, status=503)
    await bad_rollout(stack)
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED
    assert accepted_pages(stack) == []  # still down: nothing got through yet

    def refused() -> list[Any]:
        return [r for r in stack.sink.requests_to(PAGERDUTY_PATH) if r.status == 503]

    # Retried through the outage (every request refused), not given up after 5.
    await stack.sink.wait_for_count(PAGERDUTY_PATH, 6, timeout=60)
    stack.sink.end_outages(PAGERDUTY_PATH)

    async def delivered() -> list[dict[str, Any]] | None:
        found = [p for p in accepted_pages(stack) if p["dedup_key"] == rollback.id]
        return found if len(found) >= 2 else None

    pages = await wait_for(delivered, 90, "the trigger and the resolve after the outage")
    assert [p["event_action"] for p in pages] == ["trigger", "resolve"]
    assert len(refused()) > 5
    # Exactly once per dedup key and action, however many attempts it took.
    delivered_keys = [(p["dedup_key"], p["event_action"]) for p in accepted_pages(stack)]
    assert len(delivered_keys) == len(set(delivered_keys))


@pytest.fixture
async def stack_without_daemon(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as stack:
        yield stack


async def test_sigkill_right_after_the_patch_still_delivers_the_start_page(
    stack_without_daemon: Stack, tmp_path: Path
) -> None:
    stack = stack_without_daemon
    config = stack.daemon_config(notify=FAST_RETRIES)
    first = DaemonProcess(config, tmp_path / "first")
    async with first:
        await bad_rollout(stack)

        async def rolling_back() -> bool:
            dep = await stack.deployment(SHOP.name)
            raw = (dep["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
            return bool(raw) and decode_state(raw).phase is Phase.ROLLING_BACK

        await wait_for(rolling_back, 60, "the rollback patch", interval=0.01)
        await first.kill()
    killed_rollback = decode_state(
        (await stack.deployment(SHOP.name))["metadata"]["annotations"][ANNOTATION_ROLLBACK]
    ).rollback_id

    second = DaemonProcess(config, tmp_path / "second")
    async with second:

        async def both_pages() -> list[dict[str, Any]] | None:
            found = [p for p in accepted_pages(stack) if p["dedup_key"] == killed_rollback]
            return found if {p["event_action"] for p in found} == {"trigger", "resolve"} else None

        pages = await wait_for(both_pages, 90, "start page and resolve after the restart")
    actions = [p["event_action"] for p in pages]
    assert actions.index("trigger") < actions.index("resolve")


async def post_alerts(url: str, headers: dict[str, str], alerts: list[dict[str, Any]]) -> None:
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="DeploymentHighErrorRatio"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": alerts,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json", **headers}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def test_an_alert_storm_on_healthy_deployments_is_one_grouped_page(
    stack: Stack,
) -> None:
    names = [f"svc-{i:02d}" for i in range(50)]
    for name in names:
        await stack.create_deployment(
            deployment_manifest(name, image=f"{name}:1", behaviour=knobs(), replicas=1)
        )
    token = stack.settings.webhook.bearer_token_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    long_ago = datetime.now(UTC) - timedelta(hours=1)  # before any of these rollouts
    # 6 000 alerts: 50 Deployments x 10 anomaly starts x 12 repeats with fresh fingerprints.
    sent = 0
    for repeat in range(12):
        for start in range(10):
            alerts = [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "DeploymentHighErrorRatio",
                        "namespace": "default",
                        "deployment": name,
                    },
                    "annotations": {},
                    "startsAt": (long_ago + timedelta(seconds=start)).isoformat(),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": f"{i:02d}{start:02d}{repeat:02d}".ljust(16, "0"),
                }
                for i, name in enumerate(names)
            ]
            await post_alerts(stack.webhook_url, headers, alerts)
            sent += len(alerts)
    assert sent == 6000

    async def grouped() -> list[dict[str, Any]] | None:
        found = [p for p in accepted_pages(stack) if p["dedup_key"].startswith("esc-group-")]
        return found or None

    [page] = await wait_for(grouped, 60, "the grouped page")
    # The page names the Deployments grouped when it went out (group_wait after
    # the first); on a loaded machine the last decisions come later and join
    # the open group silently, into its record.
    summary = page["payload"]["summary"]
    count = int(summary.split(" ", 1)[0])
    assert 3 <= count <= 50, summary
    assert summary.startswith(
        f"{count} Deployments in namespace default breaching; none recently rolled out"
    )

    async def every_member_recorded() -> list[str] | None:
        timeline = await stack.daemon.journal.timeline(page["dedup_key"])
        records = [e for e in timeline if e.kind == KIND_GROUP]
        members = list(records[-1].data.get("members", [])) if records else []
        return members if len(members) == len(names) else None

    assert await wait_for(every_member_recorded, 60, "all 50 in the group's record") == names
    triggers = [p for p in accepted_pages(stack) if p["event_action"] == "trigger"]
    per_deployment = [p for p in triggers if not p["dedup_key"].startswith("esc-group-")]
    keys = [p["dedup_key"] for p in per_deployment]
    assert len(keys) == len(set(keys))  # at most one page per (Deployment, reason)
    assert len(per_deployment) < 3  # the storm was grouped, not paged 50 times


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started
