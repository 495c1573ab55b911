"""Leader election over coordination.k8s.io Leases with kubernetes-asyncio's LeaseLock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

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


class CountingLeaseLock(LeaseLock):
    """A LeaseLock that counts reads, so a test can tell a candidate has tried."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reads = 0
        self.read_event = asyncio.Event()

    async def get(self, name: str, namespace: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        self.read_event.set()
        return await super().get(name, namespace)


def candidate(
    api: client.ApiClient, identity: str, leading: asyncio.Event
) -> tuple[leaderelection.LeaderElection, CountingLeaseLock]:
    lock = CountingLeaseLock("rollbackd", NS, identity, api)

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
    return election, lock


async def wait_reads(lock: CountingLeaseLock, count: int) -> None:
    while lock.reads < count:
        lock.read_event.clear()
        await lock.read_event.wait()


async def test_one_candidate_leads_and_the_other_takes_over_when_it_stops(
    api_client: client.ApiClient,
) -> None:
    a_leading, b_leading = asyncio.Event(), asyncio.Event()
    election_a, _ = candidate(api_client, "a", a_leading)
    election_b, lock_b = candidate(api_client, "b", b_leading)
    task_a = asyncio.create_task(election_a.run())
    task_b: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(a_leading.wait(), DEADLINE)
        task_b = asyncio.create_task(election_b.run())
        await asyncio.wait_for(wait_reads(lock_b, 2), DEADLINE)
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
