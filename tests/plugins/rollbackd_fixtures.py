"""pytest plugin: real servers on loopback, started per test and stopped after.

The servers themselves (kubesim, the Prometheus/Alertmanager harness, the
pager sink) live in ``rollbackd.testing``, which the demo imports too and so
must not import pytest; only the fixtures that wrap them live here.

- ``kubesim``: a running ``KubeSim`` (namespaces ``default`` and
  ``kube-system`` exist); ``kubesim_kubeconfig`` is the path of its
  kubeconfig, for tests that hand it to kubectl or kubernetes-asyncio.
- ``pager_sink``: a started ``HttpSink`` (PagerDuty-like 202 answers);
  ``http_sink_factory``: ``await http_sink_factory(**options)`` for more.
- ``prometheus_factory`` / ``alertmanager_factory``: start real servers on
  demand. A missing binary fails the test with a clear message; it is never a
  silent skip.

``rollbackd run`` children (``DaemonProcess``) are forked from a fork server
that has imported the package once (``rollbackd.testing.forkclient``): the
suite starts some sixty daemons on two cores, each otherwise a second of CPU
spent importing. ``ROLLBACKD_TEST_FORK=0`` execs every one instead.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import pytest
import pytest_asyncio

from rollbackd import leanimport
from rollbackd.testing import forkclient
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.promstack import (
    AlertmanagerConfig,
    AlertmanagerFactory,
    AlertmanagerServer,
    BinaryNotFoundError,
    PrometheusConfig,
    PrometheusFactory,
    PrometheusServer,
)
from rollbackd.testing.sink import HttpSink

_Server = TypeVar("_Server", PrometheusServer, AlertmanagerServer)


def pytest_configure(config: pytest.Config) -> None:
    forkclient.enable(os.environ.get("ROLLBACKD_TEST_FORK", "1") != "0")
    # As ``rollbackd run`` loads it: the tests run against the client the daemon
    # uses, and each worker skips the generated models (0.6 s of CPU) unless a
    # test asks for one.
    leanimport.install()


@pytest_asyncio.fixture
async def kubesim(tmp_path: pathlib.Path) -> AsyncIterator[KubeSim]:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig", pod_ready_delay=0.2) as sim:
        yield sim


@pytest_asyncio.fixture
async def kubesim_kubeconfig(kubesim: KubeSim) -> pathlib.Path:
    return kubesim.kubeconfig


@pytest_asyncio.fixture
async def pager_sink() -> AsyncIterator[HttpSink]:
    """A started ``HttpSink`` (PagerDuty-like 202 answers), stopped after the test."""
    async with HttpSink() as sink:
        yield sink


@pytest_asyncio.fixture
async def http_sink_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start more sinks in one test: ``sink = await http_sink_factory()``; all stopped after."""
    sinks: list[HttpSink] = []

    async def make(**kwargs: Any) -> HttpSink:
        sink = await HttpSink(**kwargs).start()
        sinks.append(sink)
        return sink

    yield make
    for sink in reversed(sinks):
        await sink.stop()


class _Started:
    """Servers a fixture started, stopped in reverse order at teardown."""

    def __init__(self) -> None:
        self.servers: list[PrometheusServer | AlertmanagerServer] = []

    async def start(self, make: Callable[[], _Server]) -> _Server:
        """Build, track (so teardown stops it even if start fails) and start a server."""
        try:
            server = make()
        except BinaryNotFoundError as exc:
            _fail_on_missing_binary(exc)
        self.servers.append(server)
        await server.start()
        return server

    async def close_all(self) -> None:
        for server in reversed(self.servers):
            await server.close()


def _fail_on_missing_binary(exc: BinaryNotFoundError) -> NoReturn:
    pytest.fail(f"required binary missing: {exc}", pytrace=False)


@pytest_asyncio.fixture
async def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[PrometheusFactory]:
    """``await prometheus_factory(targets=[...], rules=..., alertmanager_url=...)`` -> started server."""
    started = _Started()

    async def make(
        targets: Sequence[str] = (),
        rules: str | None = None,
        alertmanager_url: str | None = None,
        **options: Any,
    ) -> PrometheusServer:
        config = PrometheusConfig(
            targets=tuple(targets), rules=rules, alertmanager_url=alertmanager_url, **options
        )
        return await started.start(
            lambda: PrometheusServer(config, workdir=tmp_path_factory.mktemp("prometheus"))
        )

    try:
        yield make
    finally:
        await started.close_all()


@pytest_asyncio.fixture
async def alertmanager_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[AlertmanagerFactory]:
    """``await alertmanager_factory(webhook_url, bearer_token=None, ...)`` -> started server."""
    started = _Started()

    async def make(webhook_url: str, **options: Any) -> AlertmanagerServer:
        config = AlertmanagerConfig(webhook_url=webhook_url, **options)
        return await started.start(
            lambda: AlertmanagerServer(config, workdir=tmp_path_factory.mktemp("alertmanager"))
        )

    try:
        yield make
    finally:
        await started.close_all()
