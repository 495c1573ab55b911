"""A Rollout's proposed abort outlives its daemon: killed while waiting, approved on the next one.

kubesim (the Rollouts controller), the real Prometheus and Alertmanager, the
pager sink and `rollbackd run` as subprocesses. A breaching canary of Rollout
default/shop in approve mode is proposed; the daemon is SIGKILLed in
PENDING_APPROVAL. The next daemon has its own, empty journal (a new leader:
each replica has its own), so only the Rollout's annotation tells it the
proposal exists: it resumes the wait, and the exact `rollbackd approve ID`
the page gave is accepted. The canary is aborted exactly once and the stable
version verified. And the command an `approval_timeout` page gives,
`rollbackd rollback NS/NAME --force`, aborts a Rollout without a second approval.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rollbackd.journal import Journal
from rollbackd.manual import manual_rollback
from rollbackd.model import ANNOTATION_MODE, ANNOTATION_ROLLBACK, Phase, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.promstack import instant_query
from rollbackd.testing.stack import Stack, wait_for
from tests.integration.test_e2e_approval import approval_requested, cli, leading
from tests.integration.test_e2e_argo import ROLLOUTS, aborts, released, status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


async def in_phase(stack: Stack, phase: str, timeout: float) -> RollbackState:
    async def reached() -> RollbackState | None:
        rollout = await stack._request("GET", f"{ROLLOUTS}/shop")
        raw = (rollout["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
        state = decode_state(raw) if raw else None
        return state if state is not None and state.phase == phase else None

    return await wait_for(reached, timeout, f"the Rollout to record {phase}")


def replica(stack: Stack, workdir: Path) -> DaemonProcess:
    config = stack.daemon_config(journal={"path": str(workdir / "journal.sqlite")})
    return DaemonProcess(config, workdir)


async def test_killed_while_a_rollout_abort_waits_the_next_leader_takes_the_approval(
    stack: Stack, tmp_path: Path
) -> None:
    first = replica(stack, tmp_path / "first")
    await first.start()
    try:
        await leading(first)
        stable = await released(stack, {ANNOTATION_MODE: "approve"})
        waiting = await in_phase(stack, "PENDING_APPROVAL", 45)
        await approval_requested(stack, waiting.rollback_id)
    finally:
        await first.kill()
    assert aborts(stack) == [] and "abort" not in await status(stack)

    second = replica(stack, tmp_path / "second")
    async with second:
        await leading(second)
        code, out, err = await cli(
            "approve", waiting.rollback_id, "--config", str(second.config_path), "--by", "oncall"
        )
        assert code == 0, err
        assert "approved by oncall" in out and "PLANNING" in out

        done = await in_phase(stack, "ROLLBACK_COMPLETED", 60)
        assert done.rollback_id == waiting.rollback_id

    assert len(aborts(stack)) == 1  # once, by the second daemon
    final = await status(stack)
    assert final["abort"] is True and final["stableRS"] == stable


async def test_the_command_an_approval_timeout_page_gives_aborts_a_rollout_without_asking_again(
    stack: Stack,
) -> None:
    """`rollbackd rollback NS/NAME --force` on a Rollout in approve mode: the operator asked."""
    stable = await released(stack, {ANNOTATION_MODE: "approve"})
    await wait_for(_canary_running(stack), 30, "the canary's pod")
    # The stable version's error ratio has data to verify against (a rate
    # needs two scrapes in its window): without it, verification would rightly
    # end inconclusive and escalate, which is not what this test is about.
    await wait_for(_traffic_scraped(stack), 30, "shop's error ratio in Prometheus")
    settings = stack.settings  # no daemon runs: the one-shot command uses its journal

    rollback_id = await asyncio.wait_for(
        manual_rollback(settings, SHOP, reason="approval timed out", force=True), 60
    )

    final = await status(stack)
    assert final["abort"] is True and final["stableRS"] == stable
    assert len(aborts(stack)) == 1
    journal = await Journal.open(settings.journal.path, create=False)
    try:
        done = await journal.get_rollback(rollback_id)
        kinds = [e.kind for e in await journal.timeline(rollback_id)]
    finally:
        await journal.close()
    assert done is not None and done.phase is Phase.ROLLBACK_COMPLETED, done
    assert "approved" not in kinds  # no second approval


def _canary_running(stack: Stack) -> Callable[[], Awaitable[bool]]:
    async def running() -> bool:
        found = await status(stack)
        return bool(found.get("updatedReplicas")) and found.get("currentPodHash") != found.get(
            "stableRS"
        )

    return running


def _traffic_scraped(stack: Stack) -> Callable[[], Awaitable[bool]]:
    expr = (
        'sum(rate(http_requests_total{namespace="default",deployment="shop",code=~"5.."}[10s]))'
        ' / sum(rate(http_requests_total{namespace="default",deployment="shop"}[10s]))'
    )

    async def scraped() -> bool:
        return bool(await instant_query(stack.prometheus.url, expr))

    return scraped
