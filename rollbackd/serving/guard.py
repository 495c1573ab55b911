"""Guarded connections: a cap, a header deadline, eviction of the longest-waiting."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from weakref import WeakKeyDictionary

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from rollbackd.metrics import Metrics

# What a refused connection reads before the close.
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 20\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many connections"
)

Reason = str  # "cap" | "evicted" | "header_timeout"


class _Connection(asyncio.Protocol):
    """aiohttp's per-connection RequestHandler behind a guard that can close it."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.deadline: float | None = None  # set while waiting for request headers
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.closed:  # evicted before the transport existed
            transport.abort()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._forget(self)
        if self.transport is not None and self.inner.transport is not None:
            self.inner.connection_lost(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Refusal(asyncio.Protocol):
    """A connection over the cap: a short 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Hooks:
    """Per aiohttp Server: which guard connection each RequestHandler belongs to.

    ``Server.request_factory`` is called once a request's headers are parsed and
    ``Server.request_handler`` runs the app; both are public attributes that
    each new RequestHandler copies, so wrapping them before the first
    connection tells the guard when headers arrived and when a response is done.
    """

    def __init__(self, server: web.Server) -> None:
        # RequestHandler has __slots__ without __weakref__: a plain dict, emptied by the guard.
        self.owner: dict[RequestHandler, _Connection] = {}
        factory = server.request_factory
        handler = server.request_handler

        def request_factory(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            conn = self.owner.get(protocol)
            if conn is not None:
                conn.guard._headers_received(conn)
            return factory(message, payload, protocol, writer, task)

        async def request_handler(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handler(request)
            finally:
                conn = self.owner.get(request.protocol)
                if conn is not None:
                    conn.guard._response_done(conn)

        server.request_factory = request_factory
        server.request_handler = request_handler


_HOOKS: WeakKeyDictionary[web.Server, _Hooks] = WeakKeyDictionary()


class ConnectionGuard:
    """The protocol factory of a guarded site: cap, eviction and header deadline.

    Connections waiting for request headers are kept in deadline order (the
    timeout is fixed, so arrival order is deadline order); one timer handle
    points at the earliest deadline.
    """

    def __init__(
        self,
        server: web.Server,
        *,
        max_connections: int,
        header_timeout: float,
        metrics: Metrics | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if header_timeout <= 0:
            raise ValueError("header_timeout must be positive")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._server = server
        self._metrics = metrics
        self._loop = loop or asyncio.get_running_loop()
        hooks = _HOOKS.get(server)
        if hooks is None:
            hooks = _HOOKS[server] = _Hooks(server)
        self._hooks = hooks
        self._open: set[_Connection] = set()
        self._waiting: OrderedDict[_Connection, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self.refused: dict[Reason, int] = {"cap": 0, "evicted": 0, "header_timeout": 0}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def waiting_for_headers(self) -> int:
        """Open connections that have not delivered a request's headers yet."""
        return len(self._waiting)

    def __call__(self) -> asyncio.Protocol:
        """A protocol for a just-accepted connection (asyncio's protocol_factory)."""
        if len(self._open) >= self.max_connections:
            victim = next(iter(self._waiting), None)
            if victim is None:
                self._count("cap")
                return _Refusal()
            self._close(victim, "evicted")
        conn = _Connection(self, self._server())
        self._hooks.owner[conn.inner] = conn
        self._open.add(conn)
        if self._metrics is not None:
            self._metrics.inbound_connections.inc()
        self._wait_for_headers(conn)
        return conn

    def close(self) -> None:
        """Stop the timer; open connections are left to the runner's shutdown."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- connection states --------------------------------------------------------------

    def _wait_for_headers(self, conn: _Connection) -> None:
        conn.deadline = self._loop.time() + self.header_timeout
        self._waiting[conn] = conn.deadline
        if self._timer is None:
            self._timer = self._loop.call_at(conn.deadline, self._expire)

    def _headers_received(self, conn: _Connection) -> None:
        conn.deadline = None
        self._waiting.pop(conn, None)

    def _response_done(self, conn: _Connection) -> None:
        # Keep-alive: the next request's headers are due within the timeout too.
        if not conn.closed and conn in self._open:
            self._wait_for_headers(conn)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._waiting:
            conn, deadline = next(iter(self._waiting.items()))
            if deadline > now:
                self._timer = self._loop.call_at(deadline, self._expire)
                return
            self._close(conn, "header_timeout")

    def _close(self, conn: _Connection, reason: Reason) -> None:
        self._count(reason)
        self._forget(conn)
        conn.abort()

    def _forget(self, conn: _Connection) -> None:
        self._waiting.pop(conn, None)
        self._hooks.owner.pop(conn.inner, None)
        if conn in self._open:
            self._open.discard(conn)
            if self._metrics is not None:
                self._metrics.inbound_connections.dec()

    def _count(self, reason: Reason) -> None:
        self.refused[reason] += 1
        if self._metrics is not None:
            self._metrics.inbound_connections_refused_total.labels(reason=reason).inc()
