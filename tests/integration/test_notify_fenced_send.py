"""A page checked against the Lease before a freeze is checked again as it leaves.

The Notifier asks the fence before each send. A process stopped right after
that check (SIGSTOP, a starved VM) and woken past its Lease would still send
the page: another replica leads by then, and pages too. The pager's HTTP
session is built with the fence's request class, which asks again when the
connection is ready: nothing reaches the pager, and the page stays pending.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from rollbackd.journal import Journal
from rollbackd.kube.fencing import Fence, Term, fenced_request_class
from rollbackd.notify.base import Notification, Notifier
from rollbackd.notify.http import default_session_factory
from rollbackd.notify.pagerduty import PagerDutyChannel
from rollbackd.testing.promstack import poll_until
from rollbackd.testing.sink import HttpSink
from tests.integration.test_notify_notifier import trigger

pytestmark = pytest.mark.integration

LEASE_SECONDS = 3.0


@pytest_asyncio.fixture
async def journal() -> AsyncIterator[Journal]:
    async with await Journal.open(":memory:") as j:
        yield j


async def test_a_page_checked_before_a_freeze_is_not_sent_after_waking_past_the_lease(
    journal: Journal, pager_sink: HttpSink
) -> None:
    now = [0.0]
    fence = Fence(clock=lambda: now[0])
    fence.require_lease()
    fence.grant(Term("replica-a", 1), renewed_at=0.0, valid_for=LEASE_SECONDS)
    sessions = default_session_factory(request_class=fenced_request_class(fence))

    class FrozenAfterTheCheck(PagerDutyChannel):
        """The Notifier's check passed; the process sleeps before the request leaves."""

        async def send(self, n: Notification) -> None:
            if fence.may_act():
                now[0] += 10 * LEASE_SECONDS  # ... and wakes past the Lease, once
            await super().send(n)

    channel = FrozenAfterTheCheck(
        "routing-key-0123456789abcdef",
        url=f"{pager_sink.url}/v2/enqueue",
        session_factory=sessions,
    )
    notifier = Notifier([channel], journal=journal)
    notifier.gate = fence.may_act
    with capture_logs() as logs:
        async with notifier:
            await notifier.enqueue(trigger("rb-1"))

            async def refused() -> bool | None:
                return any(e["event"] == "notification_send_fenced" for e in logs) or None

            await poll_until(refused, within=10, message="the send refused as it left")
            assert pager_sink.requests_to("/v2/enqueue") == []
            assert await notifier.pending() == 1  # kept for whoever leads

            # Renewed in time again: the same page goes out, once.
            fence.grant(Term("replica-a", 1), renewed_at=now[0], valid_for=1e9)
            assert await notifier.drain(10.0)
    [sent] = pager_sink.requests_to("/v2/enqueue")
    assert sent.json["dedup_key"] == "rb-1"
