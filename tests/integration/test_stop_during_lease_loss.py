"""SIGTERM while the Lease is lost and won back: the real process still exits, promptly, with 0.

``rollbackd run`` as an operator runs it (a child process), against kubesim
in this process (no Prometheus is needed: its URL answers nothing, the
poller only logs). The Lease is taken from it by the API server failing the
Lease requests past the renew deadline, then given back by the faults
ending, and SIGTERM arrives at a chosen moment of that: as leadership is
lost (the elector stopping the leader's work), while it campaigns as a
standby, and as it wins the Lease back. Each time the process must exit 0
within the stop bounds of ``rollbackd/supervision.py`` with no task it had
to leave behind (``task_would_not_stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from rollbackd.kube import Kube
from rollbackd.supervision import STOP_TIMEOUT
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.process import DaemonProcess, settings_to_config
from rollbackd.testing.promstack import free_port
from rollbackd.testing.sink import HttpSink
from rollbackd.testing.stack import stack_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LEASES = "coordination.k8s.io/v1/leases"
LEASE_PATH = r"/leases/rollbackd$"


def events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    found = []
    for line in daemon.stderr_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def count(daemon: DaemonProcess, name: str) -> int:
    return sum(1 for e in events(daemon) if e.get("event") == name)


@pytest_asyncio.fixture
async def daemon(
    kubesim: KubeSim, pager_sink: HttpSink, tmp_path: Path
) -> AsyncIterator[DaemonProcess]:
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = stack_settings(
        kubeconfig=kubesim.kubeconfig,
        prometheus_url=nowhere,
        alertmanager_url=nowhere,
        sink_url=pager_sink.url,
        listen="127.0.0.1:0",
        workdir=tmp_path,
        # No Prometheus to read the scrape interval from: say it.
        overrides={"prometheus": {"scrape_interval": "1s"}},
    )
    process = DaemonProcess(settings_to_config(settings), tmp_path / "daemon")
    async with process:
        yield process


async def leading(kubesim: KubeSim, daemon: DaemonProcess) -> None:
    async def held() -> bool:
        lease = kubesim.store.peek(LEASES, "default", "rollbackd") or {}
        return (lease.get("spec") or {}).get("holderIdentity") == "rollbackd-test" and count(
            daemon, "leadership_acquired"
        ) >= 1

    await wait_for(held, 20, "the daemon to lead", interval=0.05)


async def logged(daemon: DaemonProcess, name: str, times: int = 1, timeout: float = 20) -> None:
    async def seen() -> bool:
        return count(daemon, name) >= times

    await wait_for(seen, timeout, f"{name} x{times} in the log", interval=0.01)


async def stop_at(kubesim: KubeSim, daemon: DaemonProcess, moment: str) -> None:
    """Take the Lease away (and give it back), SIGTERM at ``moment``; check the exit."""
    await leading(kubesim, daemon)
    kubesim.faults.fail_for("*", LEASE_PATH, 503, duration=60)
    await logged(daemon, "leadership_lost")
    if moment == "standby":
        await logged(daemon, "leadership_released")
    if moment == "won_back":
        kubesim.faults.clear()
        await logged(daemon, "lease_acquired", times=2)

    started = time.monotonic()
    code = await daemon.terminate(timeout=STOP_TIMEOUT + 10)
    took = time.monotonic() - started

    assert code == 0, daemon.log_tail()
    assert count(daemon, "task_would_not_stop") == 0, daemon.log_tail(60)
    # Well inside the supervisor's stop bound: nothing waited for it.
    assert took < STOP_TIMEOUT / 2, f"took {took:.1f}s to stop\n{daemon.log_tail(60)}"
    assert count(daemon, "shutting_down") == 1


@pytest.mark.parametrize("moment", ["lost", "standby", "won_back"])
async def test_sigterm_while_the_lease_is_lost_and_won_back_exits_0_in_bounds(
    kubesim: KubeSim, daemon: DaemonProcess, moment: str
) -> None:
    await stop_at(kubesim, daemon, moment)


@contextlib.contextmanager
def cpu_burners() -> Iterator[None]:
    """One busy process per CPU, as on a CI machine running ten test workers."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.mark.heavy
async def test_on_a_loaded_machine_sigterm_as_the_lease_is_lost_still_exits_0_in_bounds(
    kubesim: KubeSim, daemon: DaemonProcess
) -> None:
    with cpu_burners():
        await stop_at(kubesim, daemon, "lost")


# --- the elector alone: a stop that lands while it stops the lost leadership's work -------


class SlowToStop:
    """A leader's work and stop that take a moment to unwind, as the daemon's do.

    The daemon's ``_become_leader`` and ``_lose_leadership`` await other
    tasks as they end (a rollback finishing a shielded journal write, a
    notifier lane); the elector awaits them in turn. ``in_stopping`` is set
    while it does.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.started = 0
        self.in_stopping = asyncio.Event()

    async def _unwind(self) -> None:
        self.in_stopping.set()
        # What the daemon's stop helpers do with a task they cancelled.
        helper = asyncio.create_task(asyncio.sleep(0.5))
        with contextlib.suppress(asyncio.CancelledError):
            await helper

    async def on_started(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        finally:
            if self.where == "work":
                await self._unwind()

    async def on_stopped(self) -> None:
        if self.where == "on_stopped":
            await self._unwind()


@pytest.mark.parametrize("where", ["work", "on_stopped"])
async def test_a_stop_while_the_lost_leaderships_work_unwinds_ends_the_campaign(
    kubesim: KubeSim, where: str
) -> None:
    leader = SlowToStop(where)
    async with await Kube.connect(kubeconfig=str(kubesim.kubeconfig)) as kube:
        campaign = asyncio.create_task(
            kube.run_leader_election(
                namespace="default",
                lease_name="rollbackd",
                identity="rollbackd-test",
                lease_duration=2,
                renew_deadline=1.0,
                retry_period=0.2,
                on_started=leader.on_started,
                on_stopped=leader.on_stopped,
            )
        )
        try:

            async def leading() -> bool:
                return leader.started == 1

            await wait_for(leading, 10, "the Lease", interval=0.02)
            # Lost: the API server fails the renewals past the renew deadline ...
            kubesim.faults.fail_for("*", LEASE_PATH, 503, duration=60)
            await asyncio.wait_for(leader.in_stopping.wait(), 10)
            # ... SIGTERM lands while the elector stops the lost leadership's work ...
            campaign.cancel()
            # ... and the API server answers again: the Lease could be won back.
            kubesim.faults.clear()

            done, _ = await asyncio.wait({campaign}, timeout=5)

            assert done, "the campaign swallowed its cancellation and went on campaigning"
            assert campaign.cancelled()
            assert leader.started == 1, "a stopped campaign started leading again"
        finally:
            campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await campaign
