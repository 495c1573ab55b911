"""The chart's HA installs: rendered by the real helm, applied to kubesim by the real kubectl.

Two replicas must both be Ready (a synced standby answers /readyz 200), or by
the Deployment controller's arithmetic the Deployment is never Available, a
rolling upgrade with maxSurge 1 / maxUnavailable 0 never scales an old pod
down, the PDB allows no disruption and ``helm install --wait`` hangs. The
webhook Service selects the pod the leader labels, so Alertmanager reaches
the leader, and follows it when the leader dies.

The second test binds two real ``rollbackd run`` processes to the chart's two
pods (POD_NAME/POD_NAMESPACE, as the chart's downward API sets them) and
plays the kubelet: each pod's Ready condition is its daemon's /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.kube.leader_label import LEADER_LABEL
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.process import DaemonProcess
from tests.kubesim.kubectl_helpers import GO_SHORT_LIVED, Kubectl, make_kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollbackd"
HELM = REPO / ".tools" / "bin" / "helm"
RELEASE = "rollbackd"
NAMESPACE = "rollbackd"
PODS = "v1/pods"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
# kubesim's own readiness simulation stays out: only the daemons make pods Ready.
DAEMON_READINESS = {"podAnnotations": {"kubesim.rollbackd.io/ready": "false"}}

T = TypeVar("T")


# --- helm and kubectl -----------------------------------------------------------------


def render(tmp: Path, values: Mapping[str, Any] | None = None) -> str:
    """``helm template`` of the chart into the release namespace."""
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"helm not found at {HELM.relative_to(REPO)}: run scripts/setup.sh")
    home = tmp / "helm-home"
    env = {
        **os.environ,
        **GO_SHORT_LIVED,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    argv = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values:
        values_file = tmp / f"values-{len(list(tmp.glob('values-*')))}.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        argv += ["-f", str(values_file)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered_config(manifest: str) -> dict[str, Any]:
    (configmap,) = [
        doc for doc in yaml.safe_load_all(manifest) if doc and doc["kind"] == "ConfigMap"
    ]
    loaded: dict[str, Any] = yaml.safe_load(configmap["data"]["rollbackd.yaml"])
    return loaded


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: Path) -> Kubectl:
    found = await make_kubectl(kubesim.kubeconfig, tmp_path / "kubectl-cache")
    await found.run("create", "namespace", NAMESPACE)
    return found


async def install(kubectl: Kubectl, manifest: str) -> None:
    """What ``helm install`` sends: every rendered object, applied."""
    await kubectl.run("apply", "-n", NAMESPACE, "-f", "-", stdin=manifest)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def jsonpath(kubectl: Kubectl, *args: str) -> str:
    return (await kubectl.run("get", "-n", NAMESPACE, *args)).stdout


async def pod_names(kubectl: Kubectl) -> list[str]:
    listing = await kubectl.json("get", "pods", "-n", NAMESPACE, "-l", SELECTOR)
    return sorted(p["metadata"]["name"] for p in listing["items"])


@pytest_asyncio.fixture
async def core(kubesim: KubeSim) -> AsyncIterator[client.CoreV1Api]:
    api = await config.new_client_from_config(config_file=str(kubesim.kubeconfig))
    async with api:
        yield client.CoreV1Api(api)


async def evict(core: client.CoreV1Api, pod: str) -> int:
    """One pod of a node drain; 0 when evicted, else the HTTP status (429: the PDB says no)."""
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=NAMESPACE))
    try:
        await core.create_namespaced_pod_eviction(pod, NAMESPACE, eviction)
    except ApiException as exc:
        return int(exc.status or 0)
    return 0


# --- what the chart renders --------------------------------------------------------------


def test_the_webhook_service_selects_the_leader_label_the_pod_can_set(tmp_path: Path) -> None:
    objects = [doc for doc in yaml.safe_load_all(render(tmp_path)) if doc]
    (service,) = [o for o in objects if o["kind"] == "Service"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    selector = service["spec"]["selector"]
    assert selector.pop(LEADER_LABEL) == "true"
    assert selector == template["metadata"]["labels"]  # the release's pods, and only the leader
    (container,) = template["spec"]["containers"]
    downward = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1


# --- the chart's arithmetic ---------------------------------------------------------------


async def test_the_chart_installs_upgrades_and_allows_a_drain(
    kubesim: KubeSim, kubectl: Kubectl, core: client.CoreV1Api, tmp_path: Path
) -> None:
    await install(kubectl, render(tmp_path))
    # helm install --wait: every replica Ready, the Deployment Available.
    await kubectl.run("rollout", "status", "-n", NAMESPACE, "deployment/rollbackd", "--timeout=30s")
    await kubectl.run(
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Available",
        "deployment/rollbackd",
        "--timeout=30s",
    )
    assert (
        await jsonpath(kubectl, "deployment/rollbackd", "-o", "jsonpath={.status.readyReplicas}")
        == "2"
    )

    # The PDB (maxUnavailable 1) allows one disruption with both replicas Ready.
    async def one_disruption() -> bool:
        allowed = "jsonpath={.status.disruptionsAllowed}"
        return await jsonpath(kubectl, "pdb/rollbackd", "-o", allowed) == "1"

    await eventually(one_disruption, 10, "the PDB to allow one disruption")

    # A rolling upgrade (a changed pod template) completes: maxSurge 1 brings a
    # new pod up, and it being Ready lets an old one go.
    await install(kubectl, render(tmp_path, {"podAnnotations": {"example.com/upgrade": "2"}}))
    await kubectl.run("rollout", "status", "-n", NAMESPACE, "deployment/rollbackd", "--timeout=30s")
    history = await jsonpath(kubectl, "rs", "-l", SELECTOR, "-o", "json")
    replicasets = json.loads(history)["items"]
    assert len(replicasets) == 2
    assert sorted(rs["spec"]["replicas"] for rs in replicasets) == [0, 2]

    # A drain: the first eviction goes through, a second at once would leave
    # no replica and is refused until the replacement is Ready.
    await eventually(one_disruption, 10, "the PDB to allow one disruption after the upgrade")
    first, second = await pod_names(kubectl)
    assert await evict(core, first) == 0
    assert await evict(core, second) == 429
    await eventually(one_disruption, 15, "the replacement to be Ready")
    assert await evict(core, second) == 0


# --- two real daemons behind the chart's pods ------------------------------------------------


def replica_config(
    sim: KubeSim, workdir: Path, pod: str, chart_config: Mapping[str, Any]
) -> dict[str, Any]:
    """rollbackd.yaml for one replica: the chart's Lease, loopback everything else."""
    token = workdir / "webhook.token"
    workdir.mkdir(parents=True, exist_ok=True)
    token.write_text("ha-test-token-0123456789abcdef\n")
    election = chart_config["leader_election"]
    return {
        "cluster": {"kubeconfig": str(sim.kubeconfig)},
        # Nobody listens there: the poller fails quietly, leadership does not care.
        "prometheus": {"url": "http://127.0.0.1:9", "scrape_interval": "1s", "poll_interval": "5s"},
        "webhook": {"listen": "127.0.0.1:0", "bearer_token_file": str(token)},
        "journal": {"path": str(workdir / "journal.sqlite")},
        "leader_election": {
            **election,
            # The chart leaves identity to the host name, which is the pod name.
            "identity": pod,
            "lease_duration": "4s",
            "renew_deadline": "3s",
            "retry_period": "1s",
        },
        "logging": {"level": "info", "format": "json"},
    }


async def daemon_ready(session: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    if not daemon.running:
        return False
    try:
        async with session.get(f"{daemon.url}/readyz") as resp:
            return resp.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


def set_ready(sim: KubeSim, pod: str, ready: bool) -> None:
    """What the kubelet writes after a readiness probe: the pod's Ready conditions."""
    stored = sim.store.peek(PODS, NAMESPACE, pod)
    if stored is None:
        return
    conditions = [dict(c) for c in (stored.get("status") or {}).get("conditions") or []]
    value = "True" if ready else "False"
    if all(
        c.get("status") == value for c in conditions if c["type"] in ("Ready", "ContainersReady")
    ):
        if any(c["type"] == "Ready" for c in conditions):
            return
    now = sim.store.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [c for c in conditions if c["type"] not in ("Ready", "ContainersReady")]
    for kind in ("ContainersReady", "Ready"):
        conditions.append(
            {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now}
        )
    pod_obj = json.loads(json.dumps(stored))
    pod_obj["status"]["conditions"] = conditions
    for container in pod_obj["status"].get("containerStatuses") or []:
        container["ready"] = ready
    sim.store.update(PODS, pod_obj, subresource="status")


async def kubelet(sim: KubeSim, bound: Mapping[str, DaemonProcess]) -> None:
    """Probe each pod's daemon on /readyz every 0.3 s and record the answer on the pod."""
    timeout = aiohttp.ClientTimeout(total=1)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            for pod, daemon in bound.items():
                set_ready(sim, pod, await daemon_ready(session, daemon))
            await asyncio.sleep(0.3)


def pod_ready(sim: KubeSim, pod: str) -> bool:
    stored = sim.store.peek(PODS, NAMESPACE, pod) or {}
    conditions = (stored.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def endpoint_pods(sim: KubeSim) -> list[str]:
    """Pods behind the chart's webhook Service (ready addresses only)."""
    endpoints = sim.store.peek("v1/endpoints", NAMESPACE, RELEASE) or {}
    return sorted(
        address["targetRef"]["name"]
        for subset in endpoints.get("subsets") or []
        for address in subset.get("addresses") or []
    )


def labelled(sim: KubeSim) -> list[str]:
    return sorted(
        pod["metadata"]["name"]
        for pod in sim.store.list(PODS, NAMESPACE)
        if (pod["metadata"].get("labels") or {}).get(LEADER_LABEL) == "true"
    )


def lease_holder(sim: KubeSim) -> str | None:
    lease = sim.store.peek("coordination.k8s.io/v1/leases", NAMESPACE, RELEASE)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


async def test_standbys_are_ready_and_the_webhook_service_follows_the_leader(
    kubesim: KubeSim, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = render(tmp_path, DAEMON_READINESS)
    chart_config = rendered_config(manifest)
    await install(kubectl, manifest)

    async def two_pods() -> list[str] | None:
        names = await pod_names(kubectl)
        return names if len(names) == 2 else None

    pods = await eventually(two_pods, 20, "the chart's two pods")
    assert not any(pod_ready(kubesim, pod) for pod in pods)  # nobody answers /readyz yet

    daemons = {
        pod: DaemonProcess(
            replica_config(kubesim, tmp_path / pod, pod, chart_config),
            tmp_path / pod,
            env={"POD_NAME": pod, "POD_NAMESPACE": NAMESPACE},
        )
        for pod in pods
    }
    probing: asyncio.Task[None] | None = None
    try:
        for daemon in daemons.values():
            await daemon.start()
        probing = asyncio.create_task(kubelet(kubesim, daemons))

        async def leader_behind_the_service() -> str | None:
            holder = lease_holder(kubesim)
            ready = all(pod_ready(kubesim, pod) for pod in pods)
            return holder if ready and holder and endpoint_pods(kubesim) == [holder] else None

        leader = await eventually(leader_behind_the_service, 30, "both Ready, leader behind it")
        (standby,) = [pod for pod in pods if pod != leader]
        assert labelled(kubesim) == [leader]
        # Both Ready, standby included: Available, and the PDB allows a drain.
        await kubectl.run(
            "wait",
            "-n",
            NAMESPACE,
            "--for=condition=Available",
            "deployment/rollbackd",
            "--timeout=20s",
        )

        async def one_disruption() -> bool:
            allowed = "jsonpath={.status.disruptionsAllowed}"
            return await jsonpath(kubectl, "pdb/rollbackd", "-o", allowed) == "1"

        await eventually(one_disruption, 10, "the PDB to allow one disruption")

        # The leader dies. Its pod keeps the label (nobody is left to remove it)
        # until the new leader takes it off; the Service then has only the new one.
        await daemons[leader].kill()

        async def moved() -> bool:
            return endpoint_pods(kubesim) == [standby] and labelled(kubesim) == [standby]

        await eventually(moved, 30, "the webhook Service to follow the new leader")
        assert lease_holder(kubesim) == standby
        assert not pod_ready(kubesim, leader)
    finally:
        if probing is not None:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        for daemon in daemons.values():
            await daemon.stop()
