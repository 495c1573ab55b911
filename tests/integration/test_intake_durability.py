"""Acknowledged means decided: a storm of unique alerts, then SIGKILL or SIGTERM, then restart.

`rollbackd run` is a real subprocess (DaemonProcess) against kubesim. Every
alert the daemon answered 2xx must end up with a decision in the journal,
counted from the journal file itself, whatever happened to the process in
between. A Lease held by another identity keeps the first process a
follower, so its acknowledged signals are certainly undecided when it dies:
the replay on becoming leader is what decides them.
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

from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import API_HEADERS, Stack, deployment_manifest, knobs, wait_for
from tests.integration._storm import Senders, accepted_fingerprints

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TARGETS = [f"svc-{i}" for i in range(8)]
ALERTS_PER_BODY = 10


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        for name in TARGETS:
            await started.create_deployment(
                deployment_manifest(name, image=f"{name}:1", behaviour=knobs(), replicas=1)
            )
        yield started


async def hold_lease(stack: Stack, holder: str) -> None:
    """Another replica holds rollbackd's Lease for the next hour."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await stack._request(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "rollbackd", "namespace": "default"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        },
    )


async def release_lease(stack: Stack) -> None:
    """The other replica is gone (its Lease deleted; a daemon that stopped may have freed it)."""
    with contextlib.suppress(RuntimeError):  # 404: nobody holds it
        await stack._request(
            "DELETE", "/apis/coordination.k8s.io/v1/namespaces/default/leases/rollbackd"
        )


def body(fingerprints: list[str], starts_at: str) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "DeploymentHighErrorRatio",
                "namespace": "default",
                "deployment": TARGETS[int(fp, 16) % len(TARGETS)],
                "severity": "page",
            },
            "annotations": {"summary": "error ratio high"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": fp,
        }
        for fp in fingerprints
    ]
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="DeploymentHighErrorRatio"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "rollbackd",
            "groupLabels": {"alertname": "DeploymentHighErrorRatio"},
            "commonLabels": {"alertname": "DeploymentHighErrorRatio"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": alerts,
        }
    ).encode()


class Storm(Senders):
    """Concurrent senders of unique alerts; remembers every fingerprint answered 2xx."""

    def __init__(self, url: str, senders: int = 16) -> None:
        super().__init__(senders, timeout=5)
        self.url = f"{url}/api/v1/alerts"
        self.acknowledged: set[str] = set()
        self.refused = 0
        self.failed = 0
        self._starts_at = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()

    async def _send(self) -> None:
        while True:
            fps = self.fingerprints(ALERTS_PER_BODY)
            try:
                async with self._session.post(
                    self.url,
                    data=body(fps, self._starts_at),
                    headers={"Content-Type": "application/json", **API_HEADERS},
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self.acknowledged.update(fps)
                    else:
                        self.refused += 1
            except (aiohttp.ClientError, TimeoutError):
                self.failed += 1  # the process died mid-request: not acknowledged
                await asyncio.sleep(0.05)


def journal_counts(path: Path, fingerprints: set[str]) -> dict[str, int]:
    """How many acknowledged fingerprints are journaled, and how many of them decided."""
    by_fp = accepted_fingerprints(path)
    journaled = [fp for fp in fingerprints if fp in by_fp]
    return {
        "acknowledged": len(fingerprints),
        "journaled": len(journaled),
        "decided": sum(1 for fp in journaled if by_fp[fp]),
    }


async def storm_then(stop: str, stack: Stack, tmp_path: Path, config: dict[str, Any]) -> None:
    journal = Path(config["journal"]["path"])
    first = DaemonProcess(config, tmp_path / "first")
    async with first:
        async with Storm(first.url) as storm:

            async def enough() -> bool:
                return len(storm.acknowledged) >= 3000

            await wait_for(enough, 60, "3 000 acknowledged alerts", interval=0.05)
            if stop == "kill":
                await first.kill()  # mid-storm, requests in flight
            else:
                assert await first.terminate(timeout=20) == 0
            await storm.stop()
        acknowledged = set(storm.acknowledged)

    counts = journal_counts(journal, acknowledged)
    assert counts["journaled"] == counts["acknowledged"], counts  # 2xx means committed
    await release_lease(stack)

    second = DaemonProcess(config, tmp_path / "second")
    async with second:

        async def all_decided() -> dict[str, int] | None:
            found = journal_counts(journal, acknowledged)
            return found if found["decided"] == found["acknowledged"] else None

        final = await wait_for(all_decided, 60, "every acknowledged alert to be decided")
    lost = final["acknowledged"] - final["decided"]
    assert lost == 0 and final["acknowledged"] >= 3000


async def test_sigkill_during_a_storm_then_restart_loses_no_acknowledged_alert(
    stack: Stack, tmp_path: Path
) -> None:
    await hold_lease(stack, "another-replica")
    await storm_then("kill", stack, tmp_path, stack.daemon_config())


async def test_sigterm_with_a_backlog_then_restart_loses_no_acknowledged_alert(
    stack: Stack, tmp_path: Path
) -> None:
    await hold_lease(stack, "another-replica")
    await storm_then("term", stack, tmp_path, stack.daemon_config())


async def test_sigkill_of_a_deciding_leader_mid_storm_loses_no_acknowledged_alert(
    stack: Stack, tmp_path: Path
) -> None:
    # No foreign Lease: the first process leads and decides while the storm runs.
    await storm_then("kill", stack, tmp_path, stack.daemon_config())
