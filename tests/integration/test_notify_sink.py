"""The pager stand-in records what it was sent and fails or stalls on request."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from rollbackd.testing.sink import HttpSink


async def test_records_method_path_query_headers_and_json(pager_sink: HttpSink) -> None:
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            f"{pager_sink.url}/v2/enqueue?x=1", json={"a": 1}, headers={"X-Key": "k"}
        )
        assert resp.status == 202
        assert await resp.json() == {"status": "success", "message": "Event processed"}
    [req] = pager_sink.requests
    assert (req.method, req.path, dict(req.query)) == ("POST", "/v2/enqueue", {"x": "1"})
    assert req.header("x-key") == "k"
    assert req.json == {"a": 1}
    assert req.body == b'{"a": 1}'
    assert req.status == 202


async def test_non_json_body_is_kept_raw(pager_sink: HttpSink) -> None:
    async with aiohttp.ClientSession() as client:
        await client.post(f"{pager_sink.url}/hook", data=b"not json")
    [req] = pager_sink.requests
    assert req.json is None and req.body == b"not json"


async def test_fail_next_applies_to_matching_prefix_then_recovers(pager_sink: HttpSink) -> None:
    pager_sink.fail_next("/v2", 503, count=2)
    statuses = []
    async with aiohttp.ClientSession() as client:
        for path in ("/other", "/v2/enqueue", "/v2/enqueue", "/v2/enqueue"):
            async with client.post(f"{pager_sink.url}{path}", json={}) as resp:
                statuses.append(resp.status)
    assert statuses == [202, 503, 503, 202]
    assert [r.status for r in pager_sink.requests_to("/v2")] == [503, 503, 202]


async def test_an_outage_lasts_until_it_is_ended_and_only_on_its_path(pager_sink: HttpSink) -> None:
    pager_sink.fail_for("/v2", 60, status=503)
    pager_sink.fail_for("/slack", 60, status=500)
    statuses = []
    async with aiohttp.ClientSession() as client:
        for path in ("/v2/enqueue", "/slack/x", "end", "/v2/enqueue", "/slack/x"):
            if path == "end":
                pager_sink.end_outages("/v2")
                continue
            async with client.post(f"{pager_sink.url}{path}", json={}) as resp:
                statuses.append(resp.status)
    assert statuses == [503, 500, 202, 500]


async def test_hold_next_records_but_answers_only_after_release(pager_sink: HttpSink) -> None:
    pager_sink.hold_next("/slow")
    async with aiohttp.ClientSession() as client:
        pending = asyncio.create_task(client.post(f"{pager_sink.url}/slow", json={}))
        await pager_sink.wait_for_count("/slow", 1)
        assert not pending.done()
        pager_sink.release()
        resp = await pending
        assert resp.status == 202
        resp.release()


async def test_wait_for_times_out_with_what_was_received(pager_sink: HttpSink) -> None:
    async with aiohttp.ClientSession() as client:
        await client.post(f"{pager_sink.url}/a", json={})
    with pytest.raises(TimeoutError, match=r"POST /a -> 202"):
        await pager_sink.wait_for(lambda r: r.path == "/b", timeout=0.2)


async def test_wait_for_returns_the_first_match_including_earlier_requests(
    pager_sink: HttpSink,
) -> None:
    async with aiohttp.ClientSession() as client:
        await client.post(f"{pager_sink.url}/a", json={"n": 1})
        await client.post(f"{pager_sink.url}/a", json={"n": 2})
        pending = asyncio.create_task(pager_sink.wait_for(lambda r: r.json == {"n": 3}))
        await pager_sink.wait_for_count("/a", 2)
        assert not pending.done()
        await client.post(f"{pager_sink.url}/a", json={"n": 3})
        found = await pending
    assert found.json == {"n": 3}
    first = await pager_sink.wait_for(lambda r: r.path == "/a")
    assert first.json == {"n": 1}


async def test_clear_forgets_requests_and_rules() -> None:
    async with HttpSink() as sink:
        sink.fail_next("/", 500)
        async with aiohttp.ClientSession() as client:
            await client.post(f"{sink.url}/a", json={})
            sink.fail_next("/", 500)
            sink.clear()
            async with client.post(f"{sink.url}/a", json={}) as resp:
                assert resp.status == 202
        assert len(sink.requests) == 1
