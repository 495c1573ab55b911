"""Many Ready Deployments in a kubesim process, created over its REST API.

One replica each, Ready 10 ms after creation, serving kubesim's emulated
workload metrics (16 series per pod: two request counters and a latency
histogram), so a Prometheus scraping kubesim holds what a fleet of that size
would give rollbackd's queries.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from _servers import KubeSimProcess, deployment_manifest

CONCURRENCY = 16


def fleet_deployment(name: str) -> dict[str, Any]:
    # One pod that is Ready at once: the fleet is about numbers, not rollouts.
    return deployment_manifest(
        name,
        "registry.local/app:1.0",
        replicas=1,
        pod_annotations={"kubesim.rollbackd.io/ready-after": "10ms"},
    )


async def create_fleet(sim: KubeSimProcess, namespace: str, names: list[str]) -> None:
    """POST every Deployment, ``CONCURRENCY`` at a time; any error but 409 (exists) fails."""
    url = f"{sim.url}/apis/apps/v1/namespaces/{namespace}/deployments"
    headers = {"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"}
    pending = iter(names)
    async with aiohttp.ClientSession(
        headers=headers,
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:

        async def worker() -> None:
            for name in pending:
                body = json.dumps(fleet_deployment(name))
                async with session.post(url, data=body) as response:
                    if response.status not in (201, 409):
                        text = await response.text()
                        raise RuntimeError(f"create {name}: {response.status} {text[:300]}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
