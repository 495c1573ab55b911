"""Approve mode across two replicas: the proposer is killed, two on-calls approve on the other.

Two real `rollbackd run` processes (each its own journal) beside one loopback
stack. replica-a leads and proposes rolling back a bad v2 of Deployment
shop, or aborting the failing canary of Rollout shop (approve mode); it is
SIGKILLed while the proposal waits. From that moment two on-callers keep
sending their approval to replica-b's API, as an impatient human (or the
CLI's retry) does: while replica-b stands by, and while it leads but its
resume of the wait is slowed by the API server, every answer is 503
(nothing recorded; never 404 or 500). Once the wait is resumed exactly one
approval is taken (202), the other is refused as decided by someone else
(409), and the Deployment is rolled back once
(revision 3) or the canary aborted once (one status patch), with one start
page and one resolve page, every page under the one rollback id.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_MODE, ANNOTATION_ROLLBACK, Phase
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import (
    OPERATOR_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    wait_for,
)
from tests.integration.test_approval_failover import (
    RESUME_READ_DELAY,
    SHOP,
    SHOP_PATH,
    V1,
    bad_release_under_two_replicas,
    journal_rows,
    replica,
    stack,
    wait_reason,
)
from tests.integration.test_e2e_argo import aborts, released, status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

__all__ = ["stack"]  # the fixture, shared with the failover test

DEPLOYMENTS = "apps/v1/deployments"
ROLLOUTS_KEY = "argoproj.io/v1alpha1/rollouts"


async def approve(url: str, rollback_id: str, by: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(
            f"{url}/api/v1/rollbacks/{rollback_id}/approve",
            json={"by": by},
            headers=OPERATOR_HEADERS,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def keep_approving(url: str, rollback_id: str, by: str) -> list[tuple[int, str]]:
    """Approve every 50 ms until an answer other than 503; every (status, error or message)."""
    answers: list[tuple[int, str]] = []
    while True:
        status, body = await approve(url, rollback_id, by)
        answers.append((status, str(body.get("error") or body.get("message"))))
        if status != 503:
            return answers
        await asyncio.sleep(0.05)


def pagerduty_pages(stack: Stack) -> Counter[tuple[str, str, str]]:
    """Accepted PagerDuty events: (action, class, dedup key) -> how many."""
    return Counter(
        (
            r.json["event_action"],
            (r.json.get("payload") or {}).get("class", ""),
            r.json["dedup_key"],
        )
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if 200 <= r.status < 300 and isinstance(r.json, dict)
    )


def annotated_state(stack: Stack, key: str) -> RollbackState | None:
    """The rollback state annotation on default/shop of kind ``key`` as kubesim holds it."""
    found = stack.sim.store.get(key, SHOP.namespace, SHOP.name)
    raw = (found["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


@dataclass
class Race:
    rollback_id: str
    alice: list[tuple[int, str]]
    bob: list[tuple[int, str]]
    final: RollbackState

    @property
    def winner(self) -> str:
        return "alice" if self.alice[-1][0] == 202 else "bob"


async def kill_the_proposer_and_race(
    stack: Stack, a: DaemonProcess, b: DaemonProcess, key: str, read_path: str
) -> Race:
    """a's proposal on ``key``/shop; a killed; alice and bob approve on b until answered."""

    async def proposed() -> RollbackState | None:
        state = annotated_state(stack, key)
        return state if state is not None and state.phase is Phase.PENDING_APPROVAL else None

    waiting = await wait_for(proposed, 45, "replica-a's proposal", interval=0.1)
    assert waiting.holder == "replica-a"
    rollback_id = waiting.rollback_id
    await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and f"rollbackd approve {rollback_id}" in str(r.json),
        timeout=20,
    )
    await a.kill()
    # replica-b's resume of the wait is slowed by the API server.
    stack.sim.faults.delay("get", read_path, RESUME_READ_DELAY, count=1)
    alice, bob = await asyncio.gather(
        keep_approving(b.url, rollback_id, "alice"), keep_approving(b.url, rollback_id, "bob")
    )

    async def finished() -> RollbackState | None:
        state = annotated_state(stack, key)
        return state if state is not None and state.phase.terminal else None

    final = await wait_for(finished, 45, "replica-b to finish the rollback", interval=0.1)
    return Race(rollback_id, alice, bob, final)


def assert_one_approval_taken(race: Race, journal: Path) -> None:
    """503 only until the wait was resumed; then one 202 and one 409; one approval recorded."""
    refused = race.alice[:-1] + race.bob[:-1]
    assert all(status == 503 for status, _ in refused), (race.alice, race.bob)
    assert any("standby" in text for _, text in refused), refused
    assert any("being resumed" in text for _, text in refused), refused
    assert sorted([race.alice[-1][0], race.bob[-1][0]]) == [202, 409], (race.alice, race.bob)
    assert race.final.phase is Phase.ROLLBACK_COMPLETED, race.final
    assert (race.final.rollback_id, race.final.holder) == (race.rollback_id, "replica-b")
    approved = journal_rows(
        journal,
        "SELECT message FROM events WHERE rollback_id = ? AND kind = 'approved'",
        race.rollback_id,
    )
    assert len(approved) == 1 and race.winner in approved[0][0], approved


def assert_one_page_per_kind(stack: Stack, rollback_id: str) -> None:
    pages = pagerduty_pages(stack)
    assert {key for _, _, key in pages} == {rollback_id}, pages
    assert pages[("trigger", "rollback_started", rollback_id)] == 1, pages
    assert pages[("resolve", "", rollback_id)] == 1, pages
    # replica-b may send the request again: the same incident, never a second one.
    assert 1 <= pages[("trigger", "approval_requested", rollback_id)] <= 2, pages


async def test_two_approvals_racing_to_the_new_leader_roll_back_a_deployment_once(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = replica(stack, tmp_path, "replica-a"), replica(stack, tmp_path, "replica-b")
    try:
        await bad_release_under_two_replicas(stack, a, b)
        race = await kill_the_proposer_and_race(stack, a, b, DEPLOYMENTS, SHOP_PATH)
    finally:
        await a.stop()
        await b.stop()

    assert_one_approval_taken(race, b.workdir / "journal.sqlite")
    # One rollback patch: v1 (1) -> v2 (2) -> v1 again (3).
    assert await stack.revision(SHOP.name) == 3
    deployment = await stack.deployment(SHOP.name)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    assert_one_page_per_kind(stack, race.rollback_id)


async def test_two_approvals_racing_to_the_new_leader_abort_a_rollout_once(
    stack: Stack, tmp_path: Path
) -> None:
    a, b = replica(stack, tmp_path, "replica-a"), replica(stack, tmp_path, "replica-b")
    try:
        await a.start()
        await wait_reason(a, "ok: leader", "replica-a to lead")
        await b.start()
        await wait_reason(b, "standby: following replica-a", "replica-b standing by")
        stable = await released(stack, {ANNOTATION_MODE: "approve"})
        race = await kill_the_proposer_and_race(stack, a, b, ROLLOUTS_KEY, r"/rollouts/shop$")
    finally:
        await a.stop()
        await b.stop()

    assert_one_approval_taken(race, b.workdir / "journal.sqlite")
    assert len(aborts(stack)) == 1  # one abort, by replica-b
    final = await status(stack)
    assert final["abort"] is True and final["stableRS"] == stable
    assert_one_page_per_kind(stack, race.rollback_id)
