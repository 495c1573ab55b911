"""Retry-After, read once for the API server and the pager alike: honoured, within bounds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollbackd.kube.errors import parse_retry_after
from rollbackd.notify.channel import ChannelError
from rollbackd.notify.webhook import WebhookChannel
from rollbackd.retryafter import MAX_RETRY_AFTER, retry_after_seconds
from rollbackd.testing.sink import HttpSink


@pytest.mark.parametrize(("header", "seconds"), [("0", 0.0), ("5", 5.0), ("2.5", 2.5)])
def test_delta_seconds_are_honoured(header: str, seconds: float) -> None:
    assert retry_after_seconds(header) == seconds


@pytest.mark.parametrize("header", ["inf", "Infinity", "1e12", "86400"])
def test_a_wait_longer_than_the_bound_is_cut_to_it(header: str) -> None:
    assert retry_after_seconds(header) == MAX_RETRY_AFTER
    timedelta(seconds=MAX_RETRY_AFTER)  # what the callers build from it


@pytest.mark.parametrize(
    "header", [None, "", "soon", "-1", "nan", "Wed, 21 Oct 2026 07:28:00 GMT", "1_0x"]
)
def test_anything_unreadable_leaves_the_callers_backoff_in_charge(header: str | None) -> None:
    assert retry_after_seconds(header) is None


def test_the_first_readable_candidate_wins() -> None:
    assert retry_after_seconds("garbage", None, 7) == 7.0
    assert retry_after_seconds(True, "3") == 3.0  # a JSON true is not one second


def test_the_api_servers_status_details_count_when_the_header_is_missing() -> None:
    body = {"kind": "Status", "details": {"retryAfterSeconds": 4}}
    assert parse_retry_after(None, body) == 4.0
    assert parse_retry_after("2", body) == 2.0
    assert parse_retry_after(None, {"details": {"retryAfterSeconds": 10**9}}) == MAX_RETRY_AFTER


@pytest.mark.parametrize("header", ["inf", "1e300"])
async def test_a_pager_asking_to_wait_forever_is_asked_again_within_the_bound(
    header: str,
) -> None:
    async with HttpSink(status=200) as sink:
        sink.fail_next("/hook", 429, headers={"Retry-After": header})
        channel = WebhookChannel(url=f"{sink.url}/hook")
        await channel.start()
        try:
            with pytest.raises(ChannelError) as raised:
                await channel.post_json(f"{sink.url}/hook", {"page": 1})
        finally:
            await channel.stop()
    assert raised.value.retryable
    assert raised.value.retry_after == MAX_RETRY_AFTER
