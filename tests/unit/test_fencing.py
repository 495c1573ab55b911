"""The fence: when a replica may write and page, from its monotonic clock and last renewal."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from rollbackd.kube.fencing import (
    Fence,
    FencedError,
    StaleTermError,
    Term,
    check_state_term,
    install,
)
from rollbackd.model import Phase
from rollbackd.state import RollbackState, decode_state, encode_state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fence(clock: Clock) -> Fence:
    fence = Fence(clock=clock)
    fence.require_lease()
    return fence


def test_without_leader_election_the_fence_is_open(clock: Clock) -> None:
    fence = Fence(clock=clock)
    assert fence.may_act()
    assert fence.term is None
    fence.check("PATCH /x")  # no error
    assert fence.remaining() == float("inf")


def test_with_a_lease_nothing_is_allowed_before_the_first_grant(fence: Fence) -> None:
    assert not fence.may_act()
    with pytest.raises(FencedError, match=r"never renewed.*refusing PATCH /x"):
        fence.check("PATCH /x")


def test_a_grant_holds_until_the_renew_deadline_after_the_request_was_sent(
    fence: Fence, clock: Clock
) -> None:
    # The renewal request went out at t=100; the answer came at 101.
    clock.now = 101.0
    fence.grant(Term("a", 3), renewed_at=100.0, valid_for=3.0)
    assert fence.may_act()
    assert fence.term == Term("a", 3)
    assert fence.remaining() == pytest.approx(2.0)
    clock.now = 102.999
    assert fence.may_act()
    # At the deadline, whether or not the renew loop has run since.
    clock.now = 103.0
    assert not fence.may_act()
    assert fence.term is None
    with pytest.raises(FencedError, match=r"last renewed 3\.0s ago"):
        fence.check("POST /events")


def test_a_frozen_leader_is_fenced_on_its_first_check_after_waking(
    fence: Fence, clock: Clock
) -> None:
    fence.grant(Term("a", 1), renewed_at=clock.now, valid_for=10.0)
    clock.now += 3600  # SIGSTOP: the monotonic clock keeps running
    with pytest.raises(FencedError):
        fence.check("PATCH /apis/apps/v1/namespaces/default/deployments/web")


def test_revoke_ends_a_grant_at_once(fence: Fence, clock: Clock) -> None:
    fence.grant(Term("a", 1), renewed_at=clock.now, valid_for=10.0)
    fence.revoke()
    assert not fence.may_act()
    assert fence.remaining() == 0.0


async def test_an_exemption_covers_only_its_own_block_and_task(fence: Fence) -> None:
    seen: list[bool] = []

    async def other_task() -> None:
        try:
            fence.check("PATCH /elsewhere")
            seen.append(True)
        except FencedError:
            seen.append(False)

    # A task started before (outside) the exempt block does not inherit it.
    outside = asyncio.create_task(other_task())
    with fence.exempt("lease"):
        fence.check("PUT /leases/rollbackd")
        await outside
    with pytest.raises(FencedError):
        fence.check("PUT /leases/rollbackd")
    assert seen == [False]


@pytest.mark.parametrize(
    ("recorded", "refused"),
    [(None, False), (4, False), (5, False), (6, True)],
)
def test_state_from_a_later_term_is_never_replaced(
    fence: Fence, clock: Clock, recorded: int | None, refused: bool
) -> None:
    fence.grant(Term("a", 5), renewed_at=clock.now, valid_for=10.0)
    if refused:
        with pytest.raises(StaleTermError, match=r"written by b in term 6.*term 5"):
            check_state_term(fence, "b", recorded, "state write")
    else:
        check_state_term(fence, "b", recorded, "state write")


def test_term_checks_need_leader_election(clock: Clock) -> None:
    unfenced = Fence(clock=clock)
    check_state_term(unfenced, "b", 99, "state write")  # nothing to compare with


def test_a_replica_that_is_not_leading_cannot_pass_a_term_check(fence: Fence) -> None:
    with pytest.raises(FencedError):
        check_state_term(fence, "b", 0, "state write")


class FakeRest:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> str:
        self.sent.append((method, url))
        return "response"


class FakeApiClient:
    def __init__(self) -> None:
        self.rest_client = FakeRest()


async def test_the_api_client_hook_lets_reads_through_and_stops_writes(
    fence: Fence, clock: Clock
) -> None:
    api = FakeApiClient()
    sent = api.rest_client.sent
    install(api, fence)
    url = "https://k8s:6443/apis/apps/v1/namespaces/default/deployments/web?x=1"
    assert await api.rest_client.request("GET", url) == "response"
    for method in ("PATCH", "POST", "PUT", "DELETE"):
        with pytest.raises(FencedError, match=f"refusing {method} /apis/apps/v1/.*/web$"):
            await api.rest_client.request(method, url)
    assert sent == [("GET", url)]
    fence.grant(Term("a", 1), renewed_at=clock.now, valid_for=5.0)
    await api.rest_client.request("PATCH", url)
    assert sent[-1] == ("PATCH", url)


def _state(**fields: Any) -> RollbackState:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    return RollbackState(
        rollback_id="rb-1",
        phase=Phase.ROLLING_BACK,
        from_revision=3,
        to_revision=2,
        started_at=at,
        updated_at=at,
        reason_code="recent_rollout",
        **fields,
    )


def test_the_state_annotation_carries_holder_and_term() -> None:
    state = _state(holder="rollbackd-0", term=7)
    text = encode_state(state)
    assert '"holder":"rollbackd-0"' in text and '"term":7' in text
    assert decode_state(text) == state


def test_state_without_a_term_reads_back_as_none_and_keeps_its_old_form() -> None:
    text = encode_state(_state())
    assert "term" not in text and "holder" not in text
    assert decode_state(text).term is None


@pytest.mark.parametrize("term", [-1, True, "3", 1.5])
def test_a_malformed_term_is_refused(term: object) -> None:
    text = encode_state(_state(holder="a", term=1)).replace(
        '"term":1', f'"term":{json.dumps(term)}'
    )
    with pytest.raises(ValueError, match="term"):
        decode_state(text)
