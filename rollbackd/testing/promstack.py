"""Real Prometheus and Alertmanager on loopback, for tests and the demo.

rollbackd's promise is that it reads what a real Prometheus computes and what
a real Alertmanager sends, so the end-to-end tests start the real binaries
(Debian's ``prometheus`` and ``prometheus-alertmanager``) instead of faking
their HTTP APIs. Each server runs in its own working directory on a free
127.0.0.1 port with 1 s scrape/evaluation intervals (Alertmanager: group_wait
0s, group_interval 1s) so a test sees the effect of a change within seconds.

Lifecycle is explicit: ``async with PrometheusServer(...) as prom`` or
``await prom.start()`` / ``await prom.stop()``. ``restart()`` keeps the port
and the data directory, which is what an outage test needs: the poller keeps
its URL and Prometheus comes back with its history.

The pytest fixtures that start these servers per test live in the tests'
plugin (tests/plugins/rollbackd_fixtures.py): this module is runtime code for
the demo and must import no test framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web

from .lifecycle import StartStop

__all__ = [
    "AlertmanagerConfig",
    "AlertmanagerFactory",
    "AlertmanagerServer",
    "BinaryNotFoundError",
    "MetricsEndpoint",
    "PrometheusConfig",
    "PrometheusFactory",
    "PrometheusServer",
    "ServerStartError",
    "find_binary",
    "free_port",
    "instant_query",
    "poll_until",
]

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40

T = TypeVar("T")


class BinaryNotFoundError(RuntimeError):
    """The server binary is not installed: the test cannot run as written."""


class ServerStartError(RuntimeError):
    """The server did not become ready; the message carries its log tail."""


def find_binary(names: Sequence[str], env_var: str) -> str:
    """Locate a binary by an explicit env override first, then on PATH."""
    override = os.environ.get(env_var)
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return override
        raise BinaryNotFoundError(f"{env_var}={override!r} is not an executable file")
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise BinaryNotFoundError(
        f"none of {', '.join(names)} found on PATH (set {env_var} to override); "
        "install the Debian package (scripts/setup.sh does it)"
    )


# Ports handed out for a server to bind later are picked below the kernel's
# ephemeral range: an outgoing connection (thousands of them in a busy test
# run) takes its local port from that range, and could take one handed out
# here in the seconds before its server binds it ("address already in use").
_PICK_FLOOR = 10_000
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
# Two processes picking at random from the same range could hand out the same
# port before either binds it (a dozen test workers start several servers a
# second; one lost that race in a full run). A pick is recorded as a file
# here, created exclusively, and no process picks it again for a while.
_PICKED_DIR = Path(tempfile.gettempdir()) / "rollbackd-picked-ports"
_PICK_HELD_SECONDS = 600.0


def _ephemeral_low() -> int:
    try:
        with open(_EPHEMERAL_RANGE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A currently free loopback port for a server to bind soon after.

    Chosen at random below the ephemeral range (where only explicit binds
    compete); where that range cannot be read, or nothing below it is free,
    the kernel's own pick.
    """
    low = _ephemeral_low()
    if low > _PICK_FLOOR:
        for _ in range(50):
            port = random.randrange(_PICK_FLOOR, low)
            if not _claim(port):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _claim(port: int) -> bool:
    """True if no process on this machine picked ``port`` in the last few minutes."""
    path = _PICKED_DIR / str(port)
    try:
        _PICKED_DIR.mkdir(exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        try:
            if time.time() - path.stat().st_mtime < _PICK_HELD_SECONDS:
                return False
            os.utime(path)  # an old pick: the port's server has bound it, or never will
            return True
        except OSError:
            return False
    except OSError:
        return True  # nowhere to record picks: the bind check below still applies


async def poll_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``probe`` until it returns something other than None, or fail at the deadline.

    Probe exceptions count as "not yet": servers refuse connections while
    starting, and that is exactly what we are waiting out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: BaseException | None = None
    while True:
        try:
            result = await probe()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            last_error = exc
            result = None
        if result is not None:
            return result
        if loop.time() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{message} not reached within {within:.0f}s{detail}")
        await asyncio.sleep(interval)


async def instant_query(url: str, expr: str) -> list[dict[str, Any]]:
    """Run a PromQL instant query straight against the HTTP API (test helper)."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/api/v1/query", params={"query": expr}) as resp,
    ):
        body = await resp.json()
        if resp.status != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: HTTP {resp.status} {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _host_port(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"expected a URL like http://127.0.0.1:9093, got {url!r}")
    return parts.scheme or "http", f"{parts.hostname}:{parts.port}"


@dataclass(frozen=True)
class PrometheusConfig:
    """What a test controls about Prometheus: what it scrapes and which rules it runs."""

    targets: tuple[str, ...] = ()  # "127.0.0.1:PORT" of /metrics endpoints
    rules: str | None = None  # a rule file's text (groups: ...)
    alertmanager_url: str | None = None
    scrape_interval: str = "1s"
    evaluation_interval: str = "1s"
    job_name: str = "workload"

    def render(self, rules_path: Path) -> str:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                # The default 10s timeout exceeds a 1s interval, which Prometheus rejects.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job_name,
                    "static_configs": [{"targets": list(self.targets)}],
                }
            ],
        }
        if self.rules is not None:
            config["rule_files"] = [str(rules_path)]
        if self.alertmanager_url:
            scheme, host_port = _host_port(self.alertmanager_url)
            config["alerting"] = {
                "alertmanagers": [{"scheme": scheme, "static_configs": [{"targets": [host_port]}]}]
            }
        return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class AlertmanagerConfig:
    """One route to one webhook receiver, tuned so notifications arrive within seconds."""

    webhook_url: str
    bearer_token: str | None = None
    group_by: tuple[str, ...] = ("alertname",)
    group_wait: str = "0s"
    group_interval: str = "1s"
    repeat_interval: str = "1h"
    send_resolved: bool = True
    receiver_name: str = "rollbackd"

    def render(self) -> str:
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": self.send_resolved}
        if self.bearer_token is not None:
            webhook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": self.bearer_token}
            }
        config = {
            "route": {
                "receiver": self.receiver_name,
                "group_by": list(self.group_by),
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [{"name": self.receiver_name, "webhook_configs": [webhook]}],
        }
        return yaml.safe_dump(config, sort_keys=False)


class _ServerProcess(StartStop):
    """A binary on a loopback port: start, wait ready, stop, restart, reload."""

    name = "server"

    def __init__(self, binary: str, workdir: Path | None) -> None:
        self._binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.port = 0  # chosen at first start, then kept so restarts keep the URL
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self.name} has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _write_config(self) -> None:
        raise NotImplementedError

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        """Start and wait for ``/-/ready``; a fresh port is tried if the first was taken."""
        if self.running:
            return
        self._write_config()
        keep_port = bool(self.port)
        attempts = 1 if keep_port else 3
        for attempt in range(attempts):
            if not keep_port:
                self.port = free_port()
            try:
                await self._spawn_and_wait()
                return
            except ServerStartError:
                in_use = "address already in use" in self.log_tail().lower()
                if not in_use or attempt == attempts - 1:
                    raise

    async def _spawn_and_wait(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                self._binary,
                *self._args(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, not here
            )
        proc = self._proc

        async def ready() -> bool | None:
            if proc.returncode is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"log tail:\n{self.log_tail()}"
                )
            timeout = aiohttp.ClientTimeout(total=1)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.url}/-/ready") as resp,
            ):
                return True if resp.status == 200 else None

        try:
            await poll_until(ready, within=START_TIMEOUT, message=f"{self.name} ready")
        except TimeoutError as exc:
            await self.stop()
            raise ServerStartError(f"{exc}; log tail:\n{self.log_tail()}") from exc
        except ServerStartError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period. Keeps the working directory."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        await self.stop()
        await self.start()

    async def _post_reload(self) -> None:
        self._write_config()
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.url}/-/reload") as resp,
        ):
            if resp.status != 200:
                text = await resp.text()
                raise RuntimeError(f"{self.name} rejected the new config: {resp.status} {text}")

    async def close(self) -> None:
        """Stop and remove the working directory if this object created it."""
        await self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()  # the working directory goes too


class PrometheusServer(_ServerProcess):
    """The real Prometheus with ``--web.enable-lifecycle`` (so ``reload`` works)."""

    name = "prometheus"

    def __init__(
        self,
        config: PrometheusConfig | None = None,
        *,
        workdir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(binary or find_binary(PROMETHEUS_BINARIES, "PROMETHEUS_BIN"), workdir)
        self.config = config or PrometheusConfig()

    def _write_config(self) -> None:
        rules_path = self.workdir / "rules.yml"
        if self.config.rules is not None:
            rules_path.write_text(self.config.rules)
        (self.workdir / "prometheus.yml").write_text(self.config.render(rules_path))

    def _args(self) -> list[str]:
        return [
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            # Tests watch alerts resolve; the 1m default would hide that for a minute.
            "--rules.alert.resend-delay=1s",
        ]

    async def reload(self, config: PrometheusConfig) -> None:
        """Swap the scrape targets/rules/alerting and apply them without a restart."""
        self.config = config
        await self._post_reload()


class AlertmanagerServer(_ServerProcess):
    """The real Alertmanager, standalone (no gossip), posting to one webhook."""

    name = "alertmanager"

    def __init__(
        self,
        config: AlertmanagerConfig,
        *,
        workdir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(binary or find_binary(ALERTMANAGER_BINARIES, "ALERTMANAGER_BIN"), workdir)
        self.config = config

    def _write_config(self) -> None:
        (self.workdir / "alertmanager.yml").write_text(self.config.render())

    def _args(self) -> list[str]:
        return [
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # empty: no gossip port, no HA peers
        ]

    async def reload(self, config: AlertmanagerConfig) -> None:
        self.config = config
        await self._post_reload()

    async def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Push alerts as Prometheus would (``POST /api/v2/alerts``)."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.url}/api/v2/alerts", json=list(alerts)) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(
                    f"alertmanager refused alerts: {resp.status} {await resp.text()}"
                )


class MetricsEndpoint(StartStop):
    """A tiny ``/metrics`` HTTP server whose exposition text the test controls.

    ``render`` is called on every scrape, so a test changes what Prometheus
    sees by changing the state ``render`` reads. ``scrapes`` counts requests.
    """

    def __init__(self, render: Callable[[], str]) -> None:
        self._render = render
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.scrapes = 0

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self._render(), content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


# The signatures of the ``prometheus_factory`` and ``alertmanager_factory``
# fixtures (tests/plugins/rollbackd_fixtures.py), for test annotations.
PrometheusFactory = Callable[..., Awaitable[PrometheusServer]]
AlertmanagerFactory = Callable[..., Awaitable[AlertmanagerServer]]
