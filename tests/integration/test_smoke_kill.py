"""A daemon SIGKILLed between a failed smoke check and its escalation page.

The whole stack on loopback (kubesim, real Prometheus and Alertmanager, the
pager sink) and ``rollbackd run`` as a real subprocess. A bad v2 is rolled
back to a v1 whose metrics are fine but which answers 500 on its smoke
check's path. kubesim holds the daemon's Events once verification began, so
the daemon stops right after it wrote ROLLBACK_FAILED on the Deployment, and
is SIGKILLed there: the failure recorded, the escalation not yet (no page can
have gone out). The next daemon must end the rollback ESCALATED as
``verify_smoke_failed`` and page once, quoting the check, as if nothing had
happened: the reason is the rollback's, not "the daemon restarted".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.kubesim.proxy import KNOB_FAILING_PATHS
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, knobs, wait_for
from tests.integration.test_e2e_smoke import ORDERS_CHECK, SHOP, bad_rollout_over

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "2s"}
SMOKE = {
    "intervals": 3,
    "timeout": "60s",
    "smoke_checks": [ORDERS_CHECK],
    "smoke_via": "service-proxy",
}
EVENTS = r"/api/v1/namespaces/default/events$"
DEPLOYMENT = r"/apis/apps/v1/namespaces/default/deployments/shop$"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False, overrides={"verify": SMOKE}) as s:
        yield s


async def state_of(stack: Stack, target: Target) -> RollbackState | None:
    dep = await stack.deployment(target.name, target.namespace)
    raw = (dep["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


def critical_pages(stack: Stack, dedup_key: str) -> list[dict[str, Any]]:
    """Escalations PagerDuty accepted (2xx) for ``dedup_key``, in arrival order."""
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict)
        and 200 <= r.status < 300
        and r.json.get("dedup_key") == dedup_key
        and r.json.get("event_action") == "trigger"
        and r.json.get("payload", {}).get("severity") == "critical"
    ]


async def test_sigkill_after_a_failed_smoke_check_still_escalates_it_once(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.daemon_config(notify=FAST_RETRIES)
    first = DaemonProcess(config, tmp_path / "first")
    async with first:
        await bad_rollout_over(stack, {**knobs(), KNOB_FAILING_PATHS: "/orders"})

        async def phase_is(phase: Phase) -> RollbackState | None:
            state = await state_of(stack, SHOP)
            return state if state is not None and state.phase is phase else None

        await wait_for(lambda: phase_is(Phase.VERIFYING), 60, "verification", interval=0.01)
        # From here the daemon's Events hang (verification emits none before its
        # ending), so it stops between ROLLBACK_FAILED and the escalation.
        stack.sim.faults.delay("create", EVENTS, 60)
        failed = await wait_for(lambda: phase_is(Phase.ROLLBACK_FAILED), 30, "the failure")
        await first.kill()
    assert failed.reason_code == "verify_smoke_failed"
    assert critical_pages(stack, failed.rollback_id) == []  # the escalation never went out
    stack.sim.faults.clear()

    second = DaemonProcess(config, tmp_path / "second")
    async with second:

        async def escalated() -> list[dict[str, Any]] | None:
            return critical_pages(stack, failed.rollback_id) or None

        [page] = await wait_for(escalated, 30, "the escalation after the restart")
        ended = await wait_for(lambda: phase_is(Phase.ESCALATED), 10, "ESCALATED")
    # The second daemon stopped gracefully, sending whatever was still due: no second page.
    assert len(critical_pages(stack, failed.rollback_id)) == 1
    assert ended.rollback_id == failed.rollback_id
    assert ended.reason_code == "verify_smoke_failed"
    payload = page["payload"]
    assert payload["custom_details"]["reason_code"] == "verify_smoke_failed"
    for quoted in ('smoke check "orders"', "status 500, expected 200"):
        assert quoted in payload["summary"], payload["summary"]


async def test_sigkill_after_the_escalation_page_is_queued_still_pages_it_once(
    stack: Stack, tmp_path: Path
) -> None:
    """Killed after the escalation page is in the outbox, before ESCALATED is written anywhere.

    The page must already be durable (the pager is down, so it has been tried
    and refused, not sent), and the Deployment must still say ROLLBACK_FAILED,
    so the restarted daemon, on the same journal, resumes and pages exactly once.
    """
    config = stack.daemon_config(notify=FAST_RETRIES)
    workdir = tmp_path / "daemon"
    first = DaemonProcess(config, workdir)
    async with first:
        await bad_rollout_over(stack, {**knobs(), KNOB_FAILING_PATHS: "/orders"})

        async def phase_is(phase: Phase) -> RollbackState | None:
            state = await state_of(stack, SHOP)
            return state if state is not None and state.phase is phase else None

        await wait_for(lambda: phase_is(Phase.VERIFYING), 60, "verification", interval=0.01)
        # The failure's Event is slowed, so the terminal write can be held before it comes.
        stack.sim.faults.delay("create", EVENTS, 3, count=1)
        failed = await wait_for(
            lambda: phase_is(Phase.ROLLBACK_FAILED), 30, "the failure", interval=0.01
        )
        stack.sim.faults.delay("patch", DEPLOYMENT, 60)
        stack.sink.fail_for(PAGERDUTY_PATH, 120, status=503)
        await stack.sink.wait_for(
            lambda r: (
                isinstance(r.json, dict)
                and r.json.get("dedup_key") == failed.rollback_id
                and r.json.get("payload", {}).get("severity") == "critical"
            ),
            timeout=30,
        )
        await first.kill()
    assert (await state_of(stack, SHOP)) == failed  # ESCALATED was never written
    stack.sim.faults.clear()
    stack.sink.end_outages(PAGERDUTY_PATH)

    second = DaemonProcess(config, workdir)  # the same journal: its outbox holds the page
    async with second:

        async def escalated() -> list[dict[str, Any]] | None:
            return critical_pages(stack, failed.rollback_id) or None

        await wait_for(escalated, 30, "the escalation after the restart")
        ended = await wait_for(lambda: phase_is(Phase.ESCALATED), 10, "ESCALATED")
    assert len(critical_pages(stack, failed.rollback_id)) == 1
    assert ended.rollback_id == failed.rollback_id
    assert ended.reason_code == "verify_smoke_failed"
