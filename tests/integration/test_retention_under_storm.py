"""Retention pruning the journal every second while an alert storm writes to it.

A real `rollbackd run` with a tiny retention (max_age 1 s, every 1 s) rolls
back a bad rollout while unique alerts pour in; meanwhile a second pruner in
the test process works on the same file through its own connection. What
must hold: no client ever sees a 503 or "database is locked"; every accepted
signal is decided (retention deletes only decided ones); and the history the
next decision needs (the finished rollback: its cooldown) survives, so a
human's bad deploy inside the cooldown is not rolled back a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.journal import Journal
from rollbackd.model import Phase, Target
from rollbackd.retention import prune
from rollbackd.state import RollbackState
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import API_HEADERS, Stack, deployment_manifest, knobs, wait_for
from tests.integration._replicas import recorded_state
from tests.integration._storm import Senders, accepted_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
V3 = "registry.example/shop:1.6.0"
MIN_STABLE_SECONDS = 3.5
TINY_RETENTION = {"max_age": "1s", "max_bytes": 1024 * 1024, "interval": "1s"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    overrides = {"journal": {"retention": TINY_RETENTION}}
    async with Stack(tmp_path / "stack", with_daemon=False, overrides=overrides) as started:
        yield started


def alert(fingerprint: str, deployment: str, starts_at: datetime) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {
            "alertname": "DeploymentHighErrorRatio",
            "namespace": "default",
            "deployment": deployment,
        },
        "startsAt": starts_at.isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


class Storm(Senders):
    """Unique alerts for the bad Deployment (and some for one that does not exist)."""

    def __init__(self, url: str, senders: int = 4) -> None:
        super().__init__(senders, timeout=10)
        self.url = f"{url}/api/v1/alerts"
        self.acknowledged: set[str] = set()
        self.failures: list[str] = []

    async def _send(self) -> None:
        while True:
            starts_at = datetime.now(UTC) - timedelta(seconds=1)
            fps = self.fingerprints(5)
            alerts = [alert(fp, SHOP.name, starts_at) for fp in fps[:4]]
            alerts.append(alert(fps[4], "no-such-deployment", starts_at))
            body = {"version": "4", "status": "firing", "receiver": "rollbackd", "alerts": alerts}
            async with self._session.post(self.url, json=body, headers=API_HEADERS) as resp:
                text = await resp.text()
                if resp.status == 200:
                    self.acknowledged.update(fps[:4])
                else:
                    self.failures.append(f"{resp.status}: {text}")
            await asyncio.sleep(0.01)


async def external_pruner(journal_path: Path, passes: list[int]) -> None:
    """Another connection pruning the same file, as tightly as the daemon's own pass."""
    async with await Journal.open(journal_path) as journal:
        while True:
            await prune(
                journal,
                now=datetime.now(UTC),
                max_age=timedelta(seconds=1),
                max_bytes=1024 * 1024,
                min_age=timedelta(seconds=1),
            )
            passes.append(1)
            await asyncio.sleep(0.3)


def log_events(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.stderr_text().splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and parsed.get("event") == event:
                found.append(parsed)
    return found


def signals(journal: Path) -> dict[str, bool]:
    """fingerprint -> decided, for the accepted signals still in the journal."""
    return dict(accepted_rows(journal))


async def test_retention_during_a_storm_prunes_nothing_the_next_decision_needs(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.daemon_config()
    journal = Path(config["journal"]["path"])
    daemon = DaemonProcess(config, tmp_path / "daemon")
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=2)
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # v1 must have been stable for min_stable
    external_passes: list[int] = []
    async with daemon:
        pruner = asyncio.create_task(external_pruner(journal, external_passes))
        try:
            async with Storm(daemon.url) as storm:
                await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))

                async def completed() -> RollbackState | None:
                    state = recorded_state(stack, SHOP)
                    return state if state is not None and state.phase.terminal else None

                final = await wait_for(completed, 60, "the rollback to finish")
                assert final.phase is Phase.ROLLBACK_COMPLETED, final
                pruned_at_completion = len(log_events(daemon, "journal_pruned"))

                async def pruned_since() -> bool:
                    later = len(log_events(daemon, "journal_pruned")) - pruned_at_completion
                    return later >= 3 and len(external_passes) >= 3

                # The storm goes on through three of the daemon's passes after the rollback.
                await wait_for(pruned_since, 30, "three retention passes after the rollback")
            acknowledged = set(storm.acknowledged)
            assert storm.failures == []
            assert len(acknowledged) > 200
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner

        # A human deploys v3, bad too, inside the cooldown: the finished rollback
        # must still be remembered, or rollbackd rolls back again at once.
        await stack.wait_rollout_complete(SHOP.name)
        await stack.roll_out(SHOP.name, image=V3, behaviour=knobs(rps=20, error_rate=0.5))
        await stack.wait_rollout_complete(SHOP.name)
        decided_before = len(log_events(daemon, "decision"))
        late = {
            "version": "4",
            "status": "firing",
            "receiver": "rollbackd",
            "alerts": [alert("ffffffffffffff01", SHOP.name, datetime.now(UTC))],
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{daemon.url}/api/v1/alerts", json=late, headers=API_HEADERS) as resp,
        ):
            assert resp.status == 200 and (await resp.json())["accepted"] == 1

        async def everything_decided() -> list[dict[str, Any]] | None:
            found = signals(journal)
            if not all(found.values()) or found.get("ffffffffffffff01") is False:
                return None
            decisions = log_events(daemon, "decision")[decided_before:]
            return decisions or None

        decisions = await wait_for(everything_decided, 30, "every accepted signal decided")
        # The poller may decide too meanwhile (v1's recovery resolving its breach,
        # v3's breach): nothing rolls back, and a firing signal meets the cooldown.
        assert all(d["action"] != "rollback" for d in decisions), decisions
        assert any(d["reason_code"] == "cooldown" for d in decisions), decisions
        assert log_events(daemon, "journal_prune_failed") == []
        assert "database is locked" not in daemon.stderr_text()

    # One rollback (v2 -> v1, revision 3); the human's v3 (revision 4) left alone.
    deployment = await stack.deployment(SHOP.name)
    assert await stack.revision(SHOP.name) == 4
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == V3
