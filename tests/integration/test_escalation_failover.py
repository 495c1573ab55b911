"""An escalation across a change of leader: one incident, never silence.

Two real `rollbackd run` processes (replica-a leads, replica-b stands by,
each with its own journal) watch a Deployment that breaches with no recent
rollout: a rollback would not help, so the leader escalates
(`no_recent_rollout`). replica-a is SIGKILLed; replica-b leads, its own
poller keeps seeing the breach, and its journal knows nothing of the page.

- Killed after the page was delivered: replica-b reads the incident from the
  Deployment (``rollbackd.io/escalated``) and notes the breach as a repeat:
  PagerDuty holds one incident (one dedup key among the triggers).
- Killed after queueing the page but before PagerDuty took it: nothing on the
  Deployment says PagerDuty has it, so replica-b pages it, under replica-a's
  key and not to Slack, which had it already; silence would be the worse
  failure.

Without the record, the first case ends with two PagerDuty incidents (a new
dedup key from replica-b).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.incidents import IncidentMark, marks_of
from rollbackd.model import Target
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration._replicas import journal_rows, readyz_reason, replica

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
CHANGE_WINDOW_SECONDS = 2.0


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    overrides = {
        "policy": {"change_window": f"{CHANGE_WINDOW_SECONDS:g}s", "min_stable": "1s"},
        "notify": {"escalation": {"group_wait": "1s"}},
    }
    async with Stack(tmp_path / "stack", with_daemon=False, overrides=overrides) as started:
        yield started


def triggers(stack: Stack) -> list[dict[str, Any]]:
    """The PagerDuty triggers PagerDuty accepted (2xx), in order."""
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict)
        and 200 <= r.status < 300
        and r.json["event_action"] == "trigger"
    ]


def escalation_events(daemon: DaemonProcess) -> list[str]:
    """What the replica did with the breach: ``escalated`` (paged) or ``escalation_repeated``."""
    rows = journal_rows(
        Path(daemon.config["journal"]["path"]),
        "SELECT kind FROM events WHERE namespace = 'default' AND name = 'shop'"
        " AND kind IN ('escalated', 'escalation_repeated') ORDER BY id",
    )
    return [row[0] for row in rows]


def pending_pages(daemon: DaemonProcess) -> int:
    sql = "SELECT id FROM outbox WHERE state = 'pending'"
    return len(journal_rows(Path(daemon.config["journal"]["path"]), sql))


def slack_messages(stack: Stack, text: str) -> list[Any]:
    """Slack messages the sink took that mention ``text``."""
    return [
        r.json
        for r in stack.sink.requests_to(SLACK_PATH)
        if 200 <= r.status < 300 and text in json.dumps(r.json)
    ]


def shop_mark(stack: Stack) -> IncidentMark | None:
    """The no_recent_rollout page recorded on shop (``rollbackd.io/escalated``)."""
    deployment = stack.sim.store.get("apps/v1/deployments", SHOP.namespace, SHOP.name)
    return marks_of(deployment).get("no_recent_rollout")


async def breaching_shop_under_two_replicas(
    stack: Stack, a: DaemonProcess, b: DaemonProcess
) -> None:
    """replica-a leads, replica-b follows, shop breaches with no recent rollout."""

    async def a_leads_b_follows() -> bool:
        return (await readyz_reason(a), await readyz_reason(b)) == (
            "ok: leader",
            "standby: following replica-a",
        )

    await wait_for(a_leads_b_follows, 30, "replica-a leading, replica-b standing by")
    meta = (await stack.deployment(SHOP.name))["metadata"]
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))

    async def outside_the_change_window() -> bool:
        # creationTimestamp is whole seconds: one more to be sure.
        return datetime.now(UTC) - created > timedelta(seconds=CHANGE_WINDOW_SECONDS + 1)

    await wait_for(outside_the_change_window, 10, "shop's only rollout to leave the change window")
    # Trouble outside the template (a shared dependency): no rollout to blame.
    stack.sim.workload.degrade(SHOP.namespace, SHOP.name, error_rate=0.4)


async def b_has_decided_and_sent(b: DaemonProcess) -> None:
    """replica-b leads, decided the breach (paged or noted) and has nothing left to send."""

    async def settled() -> list[str] | None:
        events = escalation_events(b)
        return events if events and pending_pages(b) == 0 else None

    await wait_for(settled, 60, "replica-b to decide the breach and empty its outbox")


async def shop_created_long_ago(stack: Stack) -> None:
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image="registry.example/shop:1.4.0", behaviour=knobs())
    )
    await stack.wait_rollout_complete(SHOP.name)


async def test_a_delivered_escalation_is_not_paged_again_by_the_next_leader(
    stack: Stack, tmp_path: Path
) -> None:
    await shop_created_long_ago(stack)
    a = replica(stack, tmp_path, "replica-a")
    b = replica(stack, tmp_path, "replica-b", listen="127.0.0.1:0")
    async with a, b:
        await breaching_shop_under_two_replicas(stack, a, b)

        async def delivered() -> list[dict[str, Any]] | None:
            return triggers(stack) or None

        [first] = await wait_for(delivered, 60, "replica-a's escalation page")
        assert "not caused by a recent rollout" in first["payload"]["summary"]

        async def delivered_everywhere() -> IncidentMark | None:
            mark = shop_mark(stack)
            return mark if mark is not None and mark.covered else None

        mark = await wait_for(delivered_everywhere, 15, "every channel's delivery on shop")
        assert mark.key == first["dedup_key"]
        assert {"pagerduty", "slack"} <= mark.delivered, mark

        await a.kill()
        await b_has_decided_and_sent(b)

    assert {t["dedup_key"] for t in triggers(stack)} == {first["dedup_key"]}, triggers(stack)
    assert escalation_events(b)[0] == "escalation_repeated", escalation_events(b)
    assert len(slack_messages(stack, "not caused by a recent rollout")) == 1


async def test_a_page_the_dead_leader_never_delivered_is_paged_by_the_next_leader(
    stack: Stack, tmp_path: Path
) -> None:
    await shop_created_long_ago(stack)
    stack.sink.fail_for(PAGERDUTY_PATH, 300)  # PagerDuty down while replica-a leads
    a = replica(stack, tmp_path, "replica-a")
    b = replica(stack, tmp_path, "replica-b", listen="127.0.0.1:0")
    async with a, b:
        await breaching_shop_under_two_replicas(stack, a, b)

        async def tried() -> bool:
            return any(
                isinstance(r.json, dict) and r.status >= 500
                for r in stack.sink.requests_to(PAGERDUTY_PATH)
            )

        await wait_for(tried, 60, "replica-a trying its escalation page")
        assert triggers(stack) == []

        async def slack_took_it() -> IncidentMark | None:
            mark = shop_mark(stack)  # claimed when queued, marked as channels take it
            return mark if mark is not None and "slack" in mark.delivered else None

        claimed = await wait_for(slack_took_it, 15, "Slack's delivery recorded on shop")
        assert "pagerduty" not in claimed.delivered, claimed
        await a.kill()
        stack.sink.end_outages(PAGERDUTY_PATH)

        async def paged() -> list[dict[str, Any]] | None:
            return triggers(stack) or None

        [page] = await wait_for(paged, 60, "the escalation page, from replica-b")
        await b_has_decided_and_sent(b)

    assert "not caused by a recent rollout" in page["payload"]["summary"]
    assert escalation_events(b)[0] == "escalated", escalation_events(b)
    # Under replica-a's key: had it gone out after all, PagerDuty would fold the two.
    assert {t["dedup_key"] for t in triggers(stack)} == {claimed.key}, triggers(stack)
    # Slack had it from replica-a: replica-b withdrew its copy instead of repeating it.
    assert len(slack_messages(stack, "not caused by a recent rollout")) == 1
