"""The HTTP listener's defences: hostile or broken clients cost nothing that matters.

rollbackd's HTTP port faces whatever can reach it. Without limits, clients
that open connections and never finish their headers hold one file
descriptor each until the process runs out; then the executor's own
Kubernetes, Prometheus and pager clients fail with EMFILE (a rollback is lost,
its escalation page too) and asyncio logs every failed ``accept()``.
aiohttp's server has neither a connection cap nor a header timeout, so:

* ``fd_budget`` sizes the inbound cap from ``RLIMIT_NOFILE``, keeping a
  reserve of descriptors for everything else the daemon opens;
* ``start_site`` serves the app on a site whose connections are guarded:
  at most ``max_connections`` open; a connection that has not delivered
  complete request headers within ``header_timeout`` of opening (or of the
  end of its previous response) is closed; when every slot is taken, the
  connection that has waited longest for its headers gives its slot to the
  newcomer, so a health probe still gets through a slow-loris flood; only
  when every slot is busy with a real request is a newcomer refused (503);
* ``install_accept_error_limiter`` collapses asyncio's per-attempt
  "socket.accept() out of system resource" reports into one line per
  interval with a count.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from yarl import URL

from rollbackd.metrics import Metrics

__all__ = [
    "ACCEPT_ERROR_MESSAGE",
    "AcceptErrorLimiter",
    "ConnectionGuard",
    "GuardedSite",
    "fd_budget",
    "install_accept_error_limiter",
    "start_site",
]

log = structlog.get_logger("rollbackd.serving")

# Descriptors kept free for everything but inbound HTTP: Kubernetes watches and
# API calls, Prometheus queries, pager and chat deliveries, the journal.
FD_RESERVE = 256
MIN_CONNECTIONS = 16
# Raise the soft limit at most this far when the hard limit is unlimited.
_UNLIMITED_TARGET = 1 << 16

ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"

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


# --- the descriptor budget -----------------------------------------------------------


def fd_budget(requested_max_connections: int) -> int:
    """The inbound connection cap this process can afford; raises the soft fd limit if allowed.

    The cap is ``min(requested, soft // 2, soft - FD_RESERVE)``, never below
    ``MIN_CONNECTIONS``: at least half of the descriptors, and never fewer than
    the reserve, stay for the daemon's own clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _UNLIMITED_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_not_raised", soft_limit=soft, hard_limit=hard, error=str(exc))
    usable = soft if soft != resource.RLIM_INFINITY else _UNLIMITED_TARGET
    cap = max(MIN_CONNECTIONS, min(requested_max_connections, usable // 2, usable - FD_RESERVE))
    event = log.warning if cap < requested_max_connections else log.info
    event(
        "inbound_connection_budget",
        max_connections=cap,
        requested=requested_max_connections,
        fd_soft_limit=_limit(soft),
        fd_soft_limit_before=_limit(before),
        fd_hard_limit=_limit(hard),
        fd_reserve=FD_RESERVE,
    )
    return cap


def _limit(value: int) -> int | str:
    return "unlimited" if value == resource.RLIM_INFINITY else value


# --- guarded connections ---------------------------------------------------------------


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


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard``.

    Registered with the runner like aiohttp's own sites, so
    ``runner.cleanup()`` stops it and ``runner.addresses`` lists it.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout: float,
        metrics: Metrics | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._metrics = metrics
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host or "0.0.0.0", port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner that was not set up
        loop = asyncio.get_running_loop()
        self.guard = ConnectionGuard(
            server,
            max_connections=self._max_connections,
            header_timeout=self._header_timeout,
            metrics=self._metrics,
            loop=loop,
        )
        self._server = await loop.create_server(
            self.guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )

    async def stop(self) -> None:
        if self.guard is not None:
            self.guard.close()
        await super().stop()

    @property
    def bound(self) -> tuple[str, int]:
        """The (host, port) actually listened on (port 0 asks for a free one)."""
        if self._server is None:
            raise RuntimeError("site not started")
        sockets: list[Any] = list(getattr(self._server, "sockets", None) or [])
        host, port = sockets[0].getsockname()[:2]
        return str(host), int(port)


async def start_site(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    max_connections: int,
    header_timeout: float,
    metrics: Metrics | None = None,
) -> tuple[GuardedSite, str, int]:
    """Serve ``runner`` (already set up) on host:port with guarded connections."""
    site = GuardedSite(
        runner,
        host,
        port,
        max_connections=max_connections,
        header_timeout=header_timeout,
        metrics=metrics,
    )
    await site.start()
    bound_host, bound_port = site.bound
    log.info(
        "http_listening_guarded",
        host=bound_host,
        port=bound_port,
        max_connections=max_connections,
        header_timeout=header_timeout,
    )
    return site, bound_host, bound_port


# --- accept() errors --------------------------------------------------------------------

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLimiter:
    """The loop's exception handler: accept() resource errors logged at most once per interval.

    Out of descriptors, asyncio (3.11) reports every accept attempt, up to the
    listen backlog per wake-up, every second: hundreds of MB of identical log
    lines. The first report is logged at once; later ones within ``interval``
    are counted and summed up in one line when the interval ends. Anything
    else goes to the previous handler, or asyncio's default.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = 10.0,
        previous: ExceptionHandler | None = None,
    ) -> None:
        self._loop = loop
        self.interval = interval
        self._previous = previous
        self.total = 0
        self.suppressed = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        if self._flush_handle is not None:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.error(
            "accept_out_of_resources",
            error=str(exc) if exc is not None else None,
            errno=getattr(exc, "errno", None),
            hint="file descriptors exhausted: lower webhook.max_connections or raise the limit",
        )
        self._open_window()

    def _open_window(self) -> None:
        self._flush_handle = self._loop.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self.suppressed:
            return  # quiet interval: the next error is logged at once
        log.error("accept_out_of_resources_repeated", count=self.suppressed, seconds=self.interval)
        self.suppressed = 0
        self._open_window()

    def uninstall(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)


def install_accept_error_limiter(
    loop: asyncio.AbstractEventLoop, *, interval: float = 10.0
) -> AcceptErrorLimiter:
    """Install (once per loop) the rate-limited handler for accept() resource errors."""
    current = loop.get_exception_handler()
    if isinstance(current, AcceptErrorLimiter):
        return current
    limiter = AcceptErrorLimiter(loop, interval=interval, previous=current)
    loop.set_exception_handler(limiter)
    return limiter
