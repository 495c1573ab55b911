"""The cache's watch stream: the library's decoding, without building a client per watch."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.kube.rawwatch import RawWatch


class Lines:
    """A watch response body: one JSON event per line, then the end of the stream."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self._lines = [json.dumps(e).encode() + b"\n" for e in events] + [b""]
        self.content = self
        self.released = False

    async def readline(self) -> bytes:
        return self._lines.pop(0)

    def release(self) -> None:
        self.released = True


def deployment(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


@pytest.fixture(autouse=True)
def no_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building an SSL context (the system CA store, ~60 ms of CPU) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        raise AssertionError("a watch built an SSL context")

    monkeypatch.setattr(ssl, "create_default_context", refuse)


async def events_of(body: Lines, **params: Any) -> list[dict[str, Any]]:
    opened: list[dict[str, Any]] = []

    async def open_stream(**kwargs: Any) -> Lines:
        opened.append(kwargs)
        return body

    async with RawWatch() as stream:
        events = [e async for e in stream.stream(open_stream, timeout_seconds=30, **params)]
    assert opened and opened[0]["watch"] is True
    return events


async def test_events_stay_dicts_and_the_stream_ends_with_the_servers_timeout() -> None:
    body = Lines(
        {"type": "ADDED", "object": deployment("web", "11")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
        {"type": "MODIFIED", "object": deployment("web", "13")},
    )

    events = await events_of(body, resource_version="10")

    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "MODIFIED"]
    assert events[2]["raw_object"] == deployment("web", "13")
    assert isinstance(events[0]["object"], dict)
    assert body.released


async def test_an_expired_resource_version_is_raised_as_410_for_the_cache_to_relist() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    body = Lines({"type": "ERROR", "object": gone})

    with pytest.raises(ApiException) as raised:
        await events_of(body, resource_version="1")

    assert raised.value.status == 410
    assert body.released


async def test_the_resource_version_follows_the_events() -> None:
    watch = RawWatch()
    body = Lines({"type": "ADDED", "object": deployment("web", "7")})

    async def open_stream(**kwargs: Any) -> Lines:
        return body

    async with watch:
        async for _ in watch.stream(open_stream, timeout_seconds=30):
            pass

    assert watch.resource_version == "7"
