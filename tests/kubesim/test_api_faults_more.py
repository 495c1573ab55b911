"""Connection resets, the n-th call, faults for a duration, and the request log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.faults import FaultInjector

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"User-Agent": "spec/1"}) as client:
        yield client


async def status_of(
    session: aiohttp.ClientSession, sim: KubeSim, method: str, path: str, body: Any = None
) -> int:
    async with session.request(method, sim.url + path, json=body) as response:
        await response.read()
        return response.status


async def test_a_reset_drops_the_connection_and_changes_nothing(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.reset("create", r"/configmaps$")
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(session, kubesim, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert kubesim.store.try_get("v1/configmaps", "default", "a") is None
    assert await status_of(session, kubesim, "POST", CONFIGMAPS, {"metadata": {"name": "a"}}) == 201


async def test_after_lets_the_first_matches_through(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.fail("list", r"/configmaps$", 503, after=2)
    statuses = [await status_of(session, kubesim, "GET", CONFIGMAPS) for _ in range(4)]
    assert statuses == [200, 200, 503, 200]


async def test_fail_for_fails_every_match_until_the_duration_ends(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.fail_for("list", r"/configmaps$", 409, duration=0.5)
    assert [await status_of(session, kubesim, "GET", CONFIGMAPS) for _ in range(3)] == [409] * 3
    async with asyncio.timeout(5):
        while True:  # the window ends at 0.5 s; poll until a request passes
            if await status_of(session, kubesim, "GET", CONFIGMAPS) == 200:
                break
            await asyncio.sleep(0.05)
    assert kubesim.faults.active_rules == 0


def test_fail_for_every_period_fails_at_most_once_per_period() -> None:
    faults = FaultInjector()
    faults.fail_for("patch", "x", 409, duration=10, every=0.2)
    first = [faults.check("patch", "x")[1] is not None for _ in range(3)]
    assert first == [True, False, False]
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        time.sleep(0.01)
    assert faults.check("patch", "x")[1] is not None


def test_bad_timed_and_reset_rules_are_refused() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="duration"):
        faults.fail_for("get", ".*", 409, duration=0)
    with pytest.raises(ValueError, match="after"):
        faults.reset("get", ".*", after=-1)


async def test_the_request_log_records_client_call_and_answer(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    mark = kubesim.requests.mark()
    kubesim.faults.fail("list", r"/configmaps$", 429)
    kubesim.faults.reset("create", r"/configmaps$")
    await status_of(session, kubesim, "GET", CONFIGMAPS)
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(session, kubesim, "POST", CONFIGMAPS, {"metadata": {"name": "b"}})
    await status_of(session, kubesim, "GET", f"{CONFIGMAPS}/missing")

    records = kubesim.requests.since(mark)
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", CONFIGMAPS, 429),
        ("POST", CONFIGMAPS, 0),  # the connection was dropped: nobody got an answer
        ("GET", f"{CONFIGMAPS}/missing", 404),
    ]
    assert {r.user_agent for r in records} == {"spec/1"}
    assert [r.is_write for r in records] == [False, True, False]
    assert [r.verb for r in records] == ["list", "create", "get"]

    async with session.get(f"{kubesim.url}/_kubesim/requests?since={mark}") as response:
        listed = (await response.json())["requests"]
    assert [r["status"] for r in listed] == [429, 0, 404]
    async with session.delete(f"{kubesim.url}/_kubesim/requests") as response:
        assert response.status == 200
    assert len(kubesim.requests) == 0
