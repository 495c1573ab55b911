"""The aiohttp site whose connections the guard watches, and how the daemon starts it."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from yarl import URL

from rollbackd.metrics import Metrics
from rollbackd.serving.guard import ConnectionGuard

log = structlog.get_logger("rollbackd.serving")


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
