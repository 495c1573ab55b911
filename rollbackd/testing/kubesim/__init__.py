"""kubesim: a faithful Kubernetes API server and deployment controller on loopback.

``KubeSim`` wires the pieces: a ``Store`` behind the aiohttp API server, the
controllers acting on the store (``controller.Controller`` runs those of
``controllers/``; ``disruption`` keeps PodDisruptionBudgets), and the
emulated workload's ``/metrics`` endpoint. Besides the built-in kinds it
serves two custom resources: Gateway API HTTPRoutes (``httproutes``: their
weights split the workload traffic) and Argo Rollouts (``controllers/rollouts``). Use it as an async context manager::

    async with KubeSim() as sim:
        ...  # sim.url, sim.kubeconfig, sim.store, sim.faults

or run ``python -m rollbackd.testing.kubesim --port 0 --kubeconfig PATH``.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from aiohttp import web

from ..lifecycle import StartStop
from .controller import Controller
from .disruption import DisruptionController
from .faults import FaultInjector
from .kubeconfig import write_kubeconfig
from .server import KubeApi, ensure_namespaces
from .store import DEFAULT_HISTORY, Store
from .workload import WorkloadMetrics

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")


class KubeSim(StartStop):
    """A started kubesim: API server, controller and workload metrics."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pod_ready_delay: float = 0.5,
        kubeconfig_path: str | os.PathLike[str] | None = None,
        metrics_port: int = 0,
        bookmark_interval: float = 1.0,
        watch_history: int = DEFAULT_HISTORY,
        workload_label: str = "deployment",
    ) -> None:
        self.host = host
        # The metric label naming a pod's Deployment or Rollout (WorkloadMetrics).
        self.workload_label = workload_label
        self.port = port
        self.pod_ready_delay = pod_ready_delay
        self.metrics_port = metrics_port
        self.store = Store(history=watch_history)
        self.faults = FaultInjector()
        self.api = KubeApi(self.store, self.faults, bookmark_interval=bookmark_interval)
        # Every API request with its client (User-Agent), arrival and answer.
        self.requests = self.api.requests
        self.controller: Controller | None = None
        self.disruption: DisruptionController | None = None
        self.workload: WorkloadMetrics | None = None
        self.url = ""
        self.metrics_url = ""
        self._kubeconfig_path = kubeconfig_path
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.kubeconfig = pathlib.Path()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("KubeSim already started")
        ensure_namespaces(self.store, INITIAL_NAMESPACES)
        runner = web.AppRunner(self.api.app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            bound_port = int(runner.addresses[0][1])
            self.url = f"http://{self.host}:{bound_port}"
            self.api.server_address = f"{self.host}:{bound_port}"
            await self._start_simulation()
            self.kubeconfig = write_kubeconfig(self._kubeconfig_file(), self.url)
        except BaseException:
            await self.stop()
            raise

    async def _start_simulation(self) -> None:
        """Start the controllers and the workload metrics."""
        self.controller = Controller(self.store, pod_ready_delay=self.pod_ready_delay)
        await self.controller.start()
        self.disruption = DisruptionController(self.store)
        await self.disruption.start()
        self.workload = WorkloadMetrics(self.store, workload_label=self.workload_label)
        self.metrics_url = await self.workload.start(self.host, self.metrics_port)
        self.api.proxy.knobs_of = self.workload.knobs_of

    def _kubeconfig_file(self) -> pathlib.Path:
        if self._kubeconfig_path is not None:
            return pathlib.Path(self._kubeconfig_path)
        self._tempdir = tempfile.TemporaryDirectory(prefix="kubesim-")
        return pathlib.Path(self._tempdir.name) / "kubeconfig"

    async def stop(self) -> None:
        """Stop everything that was started; safe to call twice."""
        if self.workload is not None:
            await self.workload.stop()
            self.workload = None
        if self.disruption is not None:
            await self.disruption.stop()
            self.disruption = None
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None


__all__ = ["FaultInjector", "KubeSim", "Store"]
