"""Fault injection through the Python API and the admin HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
FAULTS = "/_kubesim/faults"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def call(
    session: aiohttp.ClientSession, sim: KubeSim, method: str, path: str, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    async with session.request(method, sim.url + path, json=body) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_fail_answers_the_next_n_matching_requests_then_recovers(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.fail("create", r"/configmaps$", 500, count=2)
    body = {"metadata": {"name": "a"}}
    for _ in range(2):
        status, error, _ = await call(session, kubesim, "POST", CONFIGMAPS, body)
        assert status == 500
        assert error["kind"] == "Status" and error["reason"] == "InternalError"
    assert kubesim.store.try_get("v1/configmaps", "default", "a") is None
    status, _, _ = await call(session, kubesim, "POST", CONFIGMAPS, body)
    assert status == 201


async def test_rules_match_only_their_verb_and_path(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.fail("patch", r"/deployments/", 409)
    status, _, _ = await call(
        session, kubesim, "GET", "/apis/apps/v1/namespaces/default/deployments"
    )
    assert status == 200
    status, _, _ = await call(session, kubesim, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert status == 201
    assert kubesim.faults.active_rules == 1


async def test_429_carries_retry_after(kubesim: KubeSim, session: aiohttp.ClientSession) -> None:
    kubesim.faults.fail("list", r"configmaps", 429)
    status, body, headers = await call(session, kubesim, "GET", CONFIGMAPS)
    assert status == 429
    assert body["reason"] == "TooManyRequests"
    assert headers["Retry-After"] == "1"
    assert body["details"]["retryAfterSeconds"] == 1


async def test_delay_holds_matching_requests_only(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    kubesim.faults.delay("get", r"/configmaps/slow$", 30.0)
    slow = asyncio.ensure_future(call(session, kubesim, "GET", f"{CONFIGMAPS}/slow"))
    try:
        status, _, _ = await call(session, kubesim, "GET", f"{CONFIGMAPS}/fast")
        assert status == 404  # answered while the delayed request is still held
        assert not slow.done()
    finally:
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)


async def test_drop_watches_ends_open_streams(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{kubesim.url}{CONFIGMAPS}?watch=true&resourceVersion=1") as response:
        assert response.status == 200

        async def dropped() -> int:
            while True:  # the watch registers once the handler has run; poll until it has
                count = kubesim.faults.drop_watches(r"configmaps")
                if count:
                    return count
                await asyncio.sleep(0.01)

        assert await asyncio.wait_for(dropped(), 10) == 1
        assert await asyncio.wait_for(response.content.read(), 10) == b""


async def test_admin_api_adds_and_clears_rules(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    rule = {"verb": "get", "path": "configmaps/x$", "status": 503, "count": 5}
    status, body, _ = await call(session, kubesim, "POST", FAULTS, rule)
    assert status == 200 and body == {"rules": 1}
    status, error, _ = await call(session, kubesim, "GET", f"{CONFIGMAPS}/x")
    assert status == 503 and error["reason"] == "ServiceUnavailable"
    status, _, _ = await call(session, kubesim, "DELETE", FAULTS)
    assert status == 200
    status, _, _ = await call(session, kubesim, "GET", f"{CONFIGMAPS}/x")
    assert status == 404


async def test_admin_api_rejects_bad_rules_with_400(
    kubesim: KubeSim, session: aiohttp.ClientSession
) -> None:
    bad_rules: list[Any] = [
        {"verb": "explode", "path": ".*", "status": 500},
        {"verb": "get", "path": "(unclosed", "status": 500},
        {"verb": "get", "path": ".*", "status": 200},
        {"verb": "get", "path": ".*"},
        ["not", "an", "object"],
    ]
    for rule in bad_rules:
        status, body, _ = await call(session, kubesim, "POST", FAULTS, rule)
        assert status == 400, rule
        assert body["reason"] == "BadRequest"
    assert kubesim.faults.active_rules == 0
    headers = {"Content-Type": "application/json"}
    async with session.post(kubesim.url + FAULTS, data=b"{nope", headers=headers) as response:
        assert response.status == 400


def test_python_api_rejects_bad_rules() -> None:
    from rollbackd.testing.kubesim.faults import FaultInjector

    faults = FaultInjector()
    with pytest.raises(ValueError, match="verb"):
        faults.fail("explode", ".*", 500)
    with pytest.raises(ValueError, match="count"):
        faults.fail("get", ".*", 500, count=0)
    with pytest.raises(ValueError, match="regex"):
        faults.delay("get", "(", 1.0)
