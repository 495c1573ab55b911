"""`rollbackd run` as a real subprocess against the loopback stack.

The stack (kubesim, real Prometheus and Alertmanager, the pager sink) starts
without its in-process daemon; ``DaemonProcess`` runs the command an operator
runs, with the config the stack would have used.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.process import DaemonProcess, DaemonStartError
from rollbackd.testing.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


async def status_of(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status


def log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    events = []
    for line in daemon.stderr_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_serves_health_and_readiness_then_exits_0_on_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    daemon = DaemonProcess(stack.daemon_config(), tmp_path / "daemon")
    async with daemon:
        # It listens where Alertmanager was told to post.
        assert stack.webhook_url.startswith(daemon.url)
        assert await status_of(f"{daemon.url}/healthz") == 200

        async def ready() -> bool:
            return await status_of(f"{daemon.url}/readyz") == 200

        # Ready once the watches are synced and it holds the Lease.
        await wait_for(ready, 20, "/readyz to answer 200")

        started = time.monotonic()
        code = await daemon.terminate(timeout=10)
        took = time.monotonic() - started

    assert code == 0, daemon.log_tail()
    assert took < 5, f"graceful shutdown took {took:.1f}s"
    assert '"shutting_down"' in daemon.stderr_text()
    # The operator's command loads kubernetes-asyncio without its generated models.
    imports = [e for e in log_events(daemon) if e.get("event") == "kubernetes_client_import"]
    assert [e.get("mode") for e in imports] == ["lean"]


async def test_sigkill_then_restart_on_the_same_url_and_nothing_left_behind(
    stack: Stack, tmp_path: Path
) -> None:
    daemon = DaemonProcess(stack.daemon_config(), tmp_path / "daemon")
    async with daemon:
        first_pid = daemon.pid
        assert await daemon.kill() == -9
        assert not alive(first_pid)

        await daemon.start()  # same config, port and journal
        assert daemon.pid != first_pid
        assert await status_of(f"{daemon.url}/healthz") == 200
        second_pid = daemon.pid
    # Leaving the context ended it.
    assert daemon.returncode is not None
    assert not alive(second_pid)


async def test_a_daemon_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    # prometheus.url is required: `rollbackd run` refuses the config with exit code 2.
    daemon = DaemonProcess({"prometheus": {}}, tmp_path / "daemon", start_timeout=30)
    started = time.monotonic()
    with pytest.raises(DaemonStartError, match=r"exited with code 2(.|\n)*prometheus\.url"):
        await daemon.start()
    assert time.monotonic() - started < 10
    assert not daemon.running


async def test_a_start_that_fails_half_way_closes_what_it_opened_and_exits(
    stack: Stack, tmp_path: Path
) -> None:
    # The journal opens (a worker thread), then the kubeconfig is missing: the
    # process must still exit, not hang on what it had already opened.
    config = stack.daemon_config(cluster={"kubeconfig": str(tmp_path / "missing-kubeconfig")})
    daemon = DaemonProcess(config, tmp_path / "daemon", start_timeout=30)
    started = time.monotonic()
    with pytest.raises(DaemonStartError, match=r"exited with code 1"):
        await daemon.start()
    assert time.monotonic() - started < 15
    assert (tmp_path / "stack" / "journal.sqlite").exists()  # it had got that far
