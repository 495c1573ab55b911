"""A journal that runs out of space in the middle of an alert storm.

The disk fills portably, without root or a small mount: the daemon's SQLite
connection is capped with ``PRAGMA max_page_count`` through the test-only
environment knob ``ROLLBACKD_TEST_JOURNAL_MAX_PAGES``, so inserts fail with
SQLITE_FULL ("database or disk is full") exactly as on a full volume.
"Space returns" is a restart on the same journal without the cap.

The promise under test (safety rule 14): an alert answered 2xx is committed
and, once space returns, decided; an alert that could not be committed gets
503 (Alertmanager retries it), never 2xx. Meanwhile /healthz answers, the
process neither dies nor spins, and its log names the cause.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from rollbackd.journal import Journal
from rollbackd.journal.connection import MAX_PAGES_ENV
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import API_HEADERS, Stack, deployment_manifest, knobs, wait_for
from tests.integration._storm import Senders, accepted_fingerprints

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TARGETS = [f"web-{i}" for i in range(4)]
# Room for a few hundred alerts past the empty schema: full within seconds.
SPARE_PAGES = 60
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        for name in TARGETS:
            await started.create_deployment(
                deployment_manifest(name, image=f"{name}:1", behaviour=knobs(), replicas=1)
            )
        yield started


def alerts_body(fingerprints: list[str], starts_at: str) -> bytes:
    """An Alertmanager v4 notification, one firing alert per fingerprint."""
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "DeploymentHighErrorRatio",
                "namespace": "default",
                "deployment": TARGETS[int(fp, 16) % len(TARGETS)],
            },
            "annotations": {"summary": "error ratio high"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fp,
        }
        for fp in fingerprints
    ]
    return json.dumps(
        {"version": "4", "status": "firing", "receiver": "rollbackd", "alerts": alerts}
    ).encode()


class Storm(Senders):
    """Senders of unique alerts; keeps what was acknowledged and what was refused."""

    def __init__(self, url: str, senders: int = 8, per_body: int = 5) -> None:
        super().__init__(senders, timeout=10)
        self.url = f"{url}/api/v1/alerts"
        self.per_body = per_body
        self.acknowledged: set[str] = set()
        self.refused: list[list[str]] = []  # bodies answered 503, to re-send later
        self.other: list[int] = []  # any other status: never expected
        self.starts_at = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()

    async def post(self, fps: list[str]) -> int:
        async with self._session.post(
            self.url,
            data=alerts_body(fps, self.starts_at),
            headers={"Content-Type": "application/json", **API_HEADERS},
        ) as resp:
            await resp.read()
            return resp.status

    async def _send(self) -> None:
        while True:
            fps = self.fingerprints(self.per_body)
            status = await self.post(fps)
            if status == 200:
                self.acknowledged.update(fps)
            elif status == 503:
                self.refused.append(fps)
                await asyncio.sleep(0.02)  # Alertmanager backs off too
            else:
                self.other.append(status)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def healthz(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
        session.get(f"{url}/healthz") as resp,
    ):
        return resp.status


async def empty_journal_pages(path: Path) -> int:
    """Pages of a new journal (schema only), the floor the cap is set above."""
    journal = await Journal.open(path)
    try:
        rows = await journal.query("PRAGMA page_count")
        return int(rows[0][0])
    finally:
        await journal.close()


async def test_a_full_journal_refuses_with_503_and_loses_nothing_it_acknowledged(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.daemon_config()
    journal = Path(config["journal"]["path"])
    cap = await empty_journal_pages(journal) + SPARE_PAGES
    full = DaemonProcess(config, tmp_path / "full", env={MAX_PAGES_ENV: str(cap)})
    async with full:
        async with Storm(full.url) as storm:

            async def disk_full() -> bool:
                return len(storm.refused) >= 40

            await wait_for(disk_full, 30, "the journal to fill up (40 refused bodies)", 0.05)
            assert await healthz(full.url) == 200  # alive and saying so while full
            refused_before = len(storm.refused)

            async def still_refusing() -> bool:
                return len(storm.refused) >= refused_before + 40

            # Still full, still refusing: nothing it could not commit is acknowledged.
            await wait_for(still_refusing, 20, "40 more refusals", 0.05)
        acknowledged = set(storm.acknowledged)
        refused = [fps for fps in storm.refused if not set(fps) & acknowledged]
        assert storm.other == []
        assert acknowledged and len(refused) >= 80

        # Idle on a full disk: no crash, no busy loop, no log flood.
        log_size, cpu = full.stderr_size(), cpu_seconds(full.pid)
        started = time.monotonic()
        await asyncio.sleep(3)  # a window to measure, not a wait for a condition
        elapsed = time.monotonic() - started
        assert full.running
        assert (cpu_seconds(full.pid) - cpu) / elapsed < 0.3
        assert full.stderr_size() - log_size < 64_000
        assert await healthz(full.url) == 200

        by_fp = accepted_fingerprints(journal)
        assert acknowledged <= by_fp.keys()  # every 2xx is committed
        assert not any(fp in by_fp for fps in refused for fp in fps)  # no 503 was
        causes = [
            json.loads(line)
            for line in full.stderr_text().splitlines()
            if "webhook_not_accepted" in line
        ]
        assert causes and "database or disk is full" in causes[0]["error"]
        assert await full.terminate(timeout=15) == 0

    # Space returns: the same journal, no cap. The backlog is decided, and
    # Alertmanager's retries of the refused bodies are accepted this time.
    roomy = DaemonProcess(config, tmp_path / "roomy")
    async with roomy:
        retry = Storm(roomy.url, senders=0)
        async with retry:
            statuses = [await retry.post(fps) for fps in refused]
        assert set(statuses) == {200}
        retried = {fp for fps in refused for fp in fps}

        async def all_decided() -> bool:
            found = accepted_fingerprints(journal)
            wanted = acknowledged | retried
            return wanted <= found.keys() and all(found[fp] for fp in wanted)

        await wait_for(all_decided, 40, "every acknowledged and retried alert decided")
