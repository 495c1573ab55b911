"""The HTTP listener's guard, against a real aiohttp server on 127.0.0.1.

A connection cap with fast refusal, eviction of connections still sending
headers, a header deadline that also covers idle keep-alive, keep-alive that
still works, the descriptor budget, and the accept()-error log limiter.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from rollbackd import serving
from rollbackd.metrics import Metrics
from rollbackd.serving import (
    ACCEPT_ERROR_MESSAGE,
    GuardedSite,
    fd_budget,
    install_accept_error_limiter,
    start_site,
)

pytestmark = pytest.mark.timeout(30)

GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"  # no blank line: headers never end


@dataclass
class Served:
    runner: web.AppRunner
    site: GuardedSite
    host: str
    port: int
    metrics: Metrics
    release: asyncio.Event

    @property
    def guard(self) -> serving.ConnectionGuard:
        assert self.site.guard is not None
        return self.site.guard

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    def gauge(self) -> float:
        return self.metrics.registry.get_sample_value("rollbackd_inbound_connections") or 0.0

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rollbackd_inbound_connections_refused_total", {"reason": reason}
        )
        return value or 0.0


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    runners: list[web.AppRunner] = []

    async def make(*, max_connections: int = 8, header_timeout: float = 5.0) -> Served:
        release = asyncio.Event()

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(text="slow")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        metrics = Metrics()
        site, host, port = await start_site(
            runner,
            "127.0.0.1",
            0,
            max_connections=max_connections,
            header_timeout=header_timeout,
            metrics=metrics,
        )
        return Served(runner, site, host, port, metrics, release)

    yield make
    for runner in runners:
        await runner.cleanup()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    return status, await asyncio.wait_for(reader.readexactly(length), 5)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True if the server closes the connection (EOF or reset) within ``within`` seconds."""
    try:
        rest = await asyncio.wait_for(reader.read(), within)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return rest == b""


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- the cap -------------------------------------------------------------------------


async def test_over_the_cap_with_every_slot_busy_is_refused_at_once_with_503(
    serve: ServeFactory,
) -> None:
    served = await serve(max_connections=3)
    busy = []
    for _ in range(3):
        reader, writer = await served.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        busy.append((reader, writer))
    await eventually(
        lambda: served.guard.open_connections == 3 and not served.guard.waiting_for_headers
    )

    reader, writer = await served.connect()
    started = time.monotonic()
    status, body = await read_response(reader)
    assert (status, body) == (503, b"too many connections")
    assert await closed_by_server(reader, 1)
    assert time.monotonic() - started < 1
    assert served.refused("cap") == 1
    writer.close()

    # The busy ones were untouched and finish normally.
    served.release.set()
    for reader, writer in busy:
        assert await read_response(reader) == (200, b"slow")
        writer.close()
    await eventually(lambda: served.gauge() == 0)


async def test_at_the_cap_a_connection_still_sending_headers_gives_way_to_a_new_one(
    serve: ServeFactory,
) -> None:
    served = await serve(max_connections=3, header_timeout=30)
    stuck = []
    for _ in range(3):
        reader, writer = await served.connect()
        writer.write(PARTIAL)
        stuck.append((reader, writer))
    await eventually(lambda: served.guard.open_connections == 3)

    # A health probe gets through although every slot was taken by a slow client...
    reader, writer = await served.connect()
    writer.write(GET_HEALTHZ)
    assert await read_response(reader) == (200, b"ok")
    # ...at the cost of the one that had waited longest for its headers.
    assert await closed_by_server(stuck[0][0], 2)
    assert served.refused("evicted") == 1
    assert served.guard.open_connections == 3
    assert served.gauge() == 3
    for _, w in [*stuck, (reader, writer)]:
        w.close()


# --- the header deadline ----------------------------------------------------------------


async def test_a_connection_without_complete_headers_is_closed_at_the_deadline(
    serve: ServeFactory,
) -> None:
    served = await serve(header_timeout=0.5)
    # Before connecting: the server's deadline runs from its accept, which a
    # busy loop may report to this side well after it happened.
    opened = time.monotonic()
    reader, writer = await served.connect()
    # A trickle of bytes does not extend the deadline: it runs from the opening.
    for chunk in (b"GET /healthz", b" HTTP/1.1\r\n", b"Host: t\r\n"):
        writer.write(chunk)
        await asyncio.sleep(0.1)
    assert await closed_by_server(reader, 3)
    took = time.monotonic() - opened
    assert 0.45 <= took < 1.5, took
    assert served.refused("header_timeout") == 1
    await eventually(lambda: served.gauge() == 0)
    writer.close()


async def test_a_silent_connection_is_closed_at_the_deadline(serve: ServeFactory) -> None:
    served = await serve(header_timeout=0.3)
    reader, writer = await served.connect()
    assert await closed_by_server(reader, 3)
    assert served.refused("header_timeout") == 1
    writer.close()


async def test_keep_alive_serves_several_requests_and_idles_out_after_the_deadline(
    serve: ServeFactory,
) -> None:
    served = await serve(header_timeout=0.5)
    reader, writer = await served.connect()
    # Each request arrives well inside the deadline that restarts after each response;
    # together they take longer than one deadline.
    for _ in range(4):
        writer.write(GET_HEALTHZ)
        assert await read_response(reader) == (200, b"ok")
        await asyncio.sleep(0.2)
    assert served.guard.open_connections == 1
    assert served.refused("header_timeout") == 0

    # Idle after a response: closed once the deadline passes.
    assert await closed_by_server(reader, 3)
    assert served.refused("header_timeout") == 1
    writer.close()


async def test_a_slow_handler_is_not_cut_off_by_the_header_deadline(
    serve: ServeFactory,
) -> None:
    served = await serve(header_timeout=0.2)
    reader, writer = await served.connect()
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.6)  # three deadlines' worth while the handler runs
    served.release.set()
    assert await read_response(reader) == (200, b"slow")
    assert served.refused("header_timeout") == 0
    writer.close()


async def test_the_runner_cleanup_stops_the_site_and_its_connections(
    serve: ServeFactory,
) -> None:
    served = await serve(header_timeout=30)
    reader, writer = await served.connect()
    writer.write(PARTIAL)
    await eventually(lambda: served.guard.open_connections == 1)
    await served.runner.cleanup()
    assert await closed_by_server(reader, 3)
    with pytest.raises(OSError), socket.create_connection((served.host, served.port), 1):
        pass
    writer.close()


# --- the descriptor budget ---------------------------------------------------------------


class FakeLimits:
    def __init__(self, soft: int, hard: int, *, may_raise: bool = True) -> None:
        self.soft, self.hard, self.may_raise = soft, hard, may_raise
        self.set_calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.set_calls.append(limits)
        if not self.may_raise:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


@pytest.mark.parametrize(
    ("soft", "hard", "requested", "expected_cap", "expected_soft"),
    [
        (1024, 1024, 512, 512, 1024),  # `ulimit -n 1024`: half stays for the daemon
        (600, 600, 512, 300, 600),  # half of the soft limit
        (300, 300, 512, 44, 300),  # soft - 256: the reserve
        (100, 100, 512, 16, 100),  # a floor, however low the limit
        (1024, 4096, 512, 512, 4096),  # soft raised to the hard limit
        (1024, 4096, 5000, 2048, 4096),
        (1024, resource.RLIM_INFINITY, 512, 512, 1 << 16),  # unlimited: raised to 65536
    ],
)
def test_fd_budget_keeps_a_reserve_below_the_soft_limit(
    monkeypatch: pytest.MonkeyPatch,
    soft: int,
    hard: int,
    requested: int,
    expected_cap: int,
    expected_soft: int,
) -> None:
    limits = FakeLimits(soft, hard)
    monkeypatch.setattr(serving.budget.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(serving.budget.resource, "setrlimit", limits.setrlimit)
    with capture_logs() as logs:
        assert fd_budget(requested) == expected_cap
    assert limits.soft == expected_soft
    [event] = [e for e in logs if e["event"] == "inbound_connection_budget"]
    assert event["max_connections"] == expected_cap
    assert event["fd_soft_limit_before"] == soft


def test_fd_budget_works_with_the_limit_it_has_when_raising_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = FakeLimits(1024, 8192, may_raise=False)
    monkeypatch.setattr(serving.budget.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(serving.budget.resource, "setrlimit", limits.setrlimit)
    with capture_logs() as logs:
        assert fd_budget(2000) == 512
    assert limits.set_calls == [(8192, 8192)]
    assert any(e["event"] == "fd_limit_not_raised" for e in logs)


# --- accept() errors --------------------------------------------------------------------


def accept_error_context() -> dict[str, Any]:
    return {
        "message": ACCEPT_ERROR_MESSAGE,
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }


async def test_ten_thousand_accept_errors_make_a_few_log_lines() -> None:
    loop = asyncio.get_running_loop()
    previous: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: previous.append(context))
    limiter = install_accept_error_limiter(loop, interval=0.3)
    try:
        assert install_accept_error_limiter(loop) is limiter  # once per loop
        with capture_logs() as logs:
            for _ in range(10_000):
                loop.call_exception_handler(accept_error_context())
            # One line at once; the rest summed up when the interval ends.
            assert [e["event"] for e in logs] == ["accept_out_of_resources"]
            assert logs[0]["errno"] == errno.EMFILE
            await eventually(lambda: len(logs) == 2)
            assert logs[1]["event"] == "accept_out_of_resources_repeated"
            assert logs[1]["count"] == 9_999
            # A quiet interval later, the next error is logged at once again.
            await eventually(lambda: limiter._flush_handle is None)
            loop.call_exception_handler(accept_error_context())
            assert len(logs) == 3 and logs[2]["event"] == "accept_out_of_resources"
        assert limiter.total == 10_001
        assert previous == []  # none of these reached the previous handler

        # Anything else still goes to the previous handler.
        other = {"message": "Task exception was never retrieved"}
        loop.call_exception_handler(other)
        assert previous == [other]
    finally:
        limiter.uninstall()
        loop.set_exception_handler(None)
