"""How kubesim copes with many Deployments: creation rate, readiness, memory.

Starts KubeSim in this process, creates N ConfigMaps (a baseline with no
controller work) and then N Deployments (1 replica each) over HTTP with
kubernetes-asyncio at bounded concurrency, waits until the controller has
made every Deployment's pod Ready, and prints rates, their ratio (noisy
machines make absolute rates meaningless on their own) and RSS per
Deployment.

    python bench/kubesim_scale.py [--count 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from kubernetes_asyncio import client, config

from rollbackd.testing.kubesim import KubeSim

NS = "default"


def rss_mib() -> float:
    """Resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def deployment(index: int) -> client.V1Deployment:
    labels = {"app": f"app-{index}"}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=f"app-{index}"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels=labels, annotations={"kubesim.rollbackd.io/ready-after": "10ms"}
                ),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="main", image="registry.local/app:1.0")]
                ),
            ),
        ),
    )


async def run_bounded(
    count: int, concurrency: int, make: Callable[[int], Awaitable[object]]
) -> float:
    """Run ``make(i)`` for i < count, ``concurrency`` at a time; returns elapsed seconds."""
    queue = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for index in queue:
            await make(index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def ready_deployments(sim: KubeSim) -> int:
    return sum(
        1
        for obj in sim.store.list("apps/v1/deployments", NS, copy=False)
        if (obj.get("status") or {}).get("readyReplicas") == 1
    )


async def wait_all_ready(sim: KubeSim, count: int, timeout: float) -> float:
    started = time.perf_counter()
    while True:  # polling the store: readiness is the controller's business
        ready = ready_deployments(sim)
        if ready >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"only {ready}/{count} Deployments Ready after {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def main(count: int, concurrency: int, timeout: float) -> None:
    rss_start = rss_mib()
    async with KubeSim(pod_ready_delay=0.01) as sim:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(sim.kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = concurrency
        async with client.ApiClient(configuration=configuration) as api:
            core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

            async def make_configmap(index: int) -> object:
                body = client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=f"cm-{index}"), data={"k": "v"}
                )
                return await core.create_namespaced_config_map(NS, body)

            async def make_deployment(index: int) -> object:
                return await apps.create_namespaced_deployment(NS, deployment(index))

            baseline_seconds = await run_bounded(count, concurrency, make_configmap)
            rss_before = rss_mib()
            create_seconds = await run_bounded(count, concurrency, make_deployment)
            ready_seconds = await wait_all_ready(sim, count, timeout)
            rss_after = rss_mib()
        pods = len(sim.store.list("v1/pods", NS, copy=False))

    configmap_rate = count / baseline_seconds
    deployment_rate = count / create_seconds
    print(f"count                         {count}")
    print(f"configmaps created/s          {configmap_rate:10.1f}   (baseline, no controller work)")
    print(f"deployments created/s         {deployment_rate:10.1f}")
    print(f"ratio deployments/configmaps  {deployment_rate / configmap_rate:10.2f}")
    print(f"all Ready after creation      {ready_seconds:10.1f} s   ({pods} pods)")
    print(f"RSS start / before / after    {rss_start:.0f} / {rss_before:.0f} / {rss_after:.0f} MiB")
    per_deployment = (rss_after - rss_before) * 1024 / count
    print(
        f"RSS per Deployment            {per_deployment:10.1f} KiB (Deployment + ReplicaSet + Pod)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    asyncio.run(main(arguments.count, arguments.concurrency, arguments.timeout))
