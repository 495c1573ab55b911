"""Leader election over coordination.k8s.io Leases with kubernetes-asyncio's LeaseLock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection

from rollbackd.testing.kubesim import KubeSim

NS = "default"
DEADLINE = 15.0


@pytest.fixture
async def api_client(kubesim: KubeSim) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubesim.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration=configuration) as api:
        yield api


@dataclass
class Reads:
    """How often a candidate's LeaseLock read the Lease, so a test can tell it has tried."""

    count: int = 0
    happened: asyncio.Event = field(default_factory=asyncio.Event)


def candidate(
    api: client.ApiClient, identity: str, leading: asyncio.Event
) -> tuple[leaderelection.LeaderElection, Reads]:
    # Imported here: LeaseLock's module loads the generated models, which only
    # this module's tests need (not every worker that collects it).
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    lock = LeaseLock("rollbackd", NS, identity, api)
    reads = Reads()
    read = lock.get

    async def counted_get(name: str, namespace: str) -> Any:
        reads.count += 1
        reads.happened.set()
        return await read(name, namespace)

    lock.get = counted_get  # type: ignore[method-assign]

    async def on_started() -> None:
        leading.set()

    async def on_stopped() -> None:
        leading.clear()

    election = leaderelection.LeaderElection(
        electionconfig.Config(
            lock,
            lease_duration=3,
            renew_deadline=2,
            retry_period=1,
            onstarted_leading=on_started,
            onstopped_leading=on_stopped,
        )
    )
    return election, reads


async def wait_reads(reads: Reads, count: int) -> None:
    while reads.count < count:
        reads.happened.clear()
        await reads.happened.wait()


async def test_one_candidate_leads_and_the_other_takes_over_when_it_stops(
    api_client: client.ApiClient,
) -> None:
    a_leading, b_leading = asyncio.Event(), asyncio.Event()
    election_a, _ = candidate(api_client, "a", a_leading)
    election_b, reads_b = candidate(api_client, "b", b_leading)
    task_a = asyncio.create_task(election_a.run())
    task_b: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(a_leading.wait(), DEADLINE)
        task_b = asyncio.create_task(election_b.run())
        await asyncio.wait_for(wait_reads(reads_b, 2), DEADLINE)
        assert not b_leading.is_set()
        lease = await client.CoordinationV1Api(api_client).read_namespaced_lease("rollbackd", NS)
        assert lease.spec.holder_identity == "a"

        task_a.cancel()  # a stops renewing; b acquires once the lease expires
        with contextlib.suppress(asyncio.CancelledError):
            await task_a
        await asyncio.wait_for(b_leading.wait(), DEADLINE)
        lease = await client.CoordinationV1Api(api_client).read_namespaced_lease("rollbackd", NS)
        assert lease.spec.holder_identity == "b"
    finally:
        for task in (task_a, task_b):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_lease_replace_with_stale_resource_version_conflicts(
    api_client: client.ApiClient,
) -> None:
    leases = client.CoordinationV1Api(api_client)
    created = await leases.create_namespaced_lease(
        NS,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="lock"),
            spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=10),
        ),
    )
    created.spec.holder_identity = "b"
    replaced = await leases.replace_namespaced_lease("lock", NS, created)
    assert replaced.spec.holder_identity == "b"
    created.spec.holder_identity = "c"
    with pytest.raises(client.exceptions.ApiException) as raised:
        await leases.replace_namespaced_lease("lock", NS, created)
    assert raised.value.status == 409
