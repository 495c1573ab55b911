"""A Lease that cannot be used is a clear error at start, and /readyz says why.

`rollbackd run` as a real process against kubesim, with the Lease in a
namespace that does not exist, or with the API server refusing the Lease
(403). The operator must see the config key to fix in the log, once (no
traceback every retry period), and the readiness probe must say the same,
instead of "standby: not the leader" forever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def config(sim: KubeSim, workdir: Path, namespace: str) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    token = workdir / "webhook.token"
    token.write_text("misconfigured-test-token-0123456789\n")
    return {
        "cluster": {"kubeconfig": str(sim.kubeconfig)},
        "prometheus": {"url": "http://127.0.0.1:9", "scrape_interval": "1s", "poll_interval": "5s"},
        "webhook": {"listen": "127.0.0.1:0", "bearer_token_file": str(token)},
        "journal": {"path": str(workdir / "journal.sqlite")},
        "leader_election": {
            "namespace": namespace,
            "lease_name": "rollbackd",
            "identity": "replica-a",
            "lease_duration": "4s",
            "renew_deadline": "3s",
            "retry_period": "500ms",
        },
        "logging": {"level": "info", "format": "json"},
    }


async def readyz(daemon: DaemonProcess) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{daemon.url}/readyz") as resp,
    ):
        return resp.status, (await resp.json())["reason"]


async def healthz(daemon: DaemonProcess) -> int:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{daemon.url}/healthz") as resp,
    ):
        return resp.status


def misconfigured_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    found = []
    for line in daemon.stderr_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "leader_election_misconfigured":
            found.append(event)
    return found


async def unready_because(daemon: DaemonProcess) -> str:
    async def reason() -> str | None:
        status, text = await readyz(daemon)
        return text if status == 503 and "leader election" in text else None

    return await wait_for(reason, 20, "/readyz to say why leader election cannot work")


async def test_a_missing_lease_namespace_names_the_key_in_the_log_and_in_readyz(
    kubesim: KubeSim, tmp_path: Path
) -> None:
    async with DaemonProcess(
        config(kubesim, tmp_path / "a", "rollbackd-system"), tmp_path / "a"
    ) as a:
        reason = await unready_because(a)
        assert "leader_election.namespace" in reason
        assert 'namespace "rollbackd-system" does not exist' in reason
        assert await healthz(a) == 200  # alive, so not restarted in a loop: only unready

        async def retried() -> bool:
            return lease_creations(kubesim) >= 3

        await wait_for(retried, 20, "several attempts to create the Lease")
        (event,) = misconfigured_events(a)  # said once, however often it retried
        assert event["key"] == "leader_election.namespace"
        assert event["level"] == "error"
        assert "Traceback" not in a.stderr_text()

        # Fixed in the cluster: it recovers by itself and leads.
        kubesim.store.create("v1/namespaces", {"metadata": {"name": "rollbackd-system"}})

        async def leads() -> bool:
            return await readyz(a) == (200, "ok: leader")

        await wait_for(leads, 45, "the daemon to lead once the namespace exists")


async def test_a_forbidden_lease_names_the_key_and_what_to_grant(
    kubesim: KubeSim, tmp_path: Path
) -> None:
    kubesim.faults.fail("*", r"/leases", 403, count=100_000)
    async with DaemonProcess(config(kubesim, tmp_path / "a", "default"), tmp_path / "a") as a:
        reason = await unready_because(a)
        assert "leader_election.namespace" in reason
        assert "refuses to get the Lease default/rollbackd" in reason
        assert "get, create and update on leases" in reason
        (event,) = misconfigured_events(a)
        assert event["key"] == "leader_election.namespace"


def lease_creations(sim: KubeSim) -> int:
    """Attempts to create the Lease, from kubesim's request log (each retry makes one)."""
    return sum(1 for r in sim.requests if r.method == "POST" and r.path.endswith("/leases"))
