"""The whole loop on loopback: kubesim, real Prometheus, real Alertmanager, a pager sink, rollbackd.

Shared by ``rollbackd demo`` and the end-to-end tests so that what the demo
shows is exactly what the tests prove. Start order follows the data flow
backwards: the pager sink and the cluster first, then Alertmanager (it needs
rollbackd's webhook address, reserved up front), then Prometheus (it needs
Alertmanager), then rollbackd itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from rollbackd.config import Settings
from rollbackd.daemon import Daemon
from rollbackd.model import ANNOTATION_REVISION, Rollback, Target
from rollbackd.signals import DEFAULT_SIGNALS
from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.promstack import (
    AlertmanagerConfig,
    AlertmanagerServer,
    PrometheusConfig,
    PrometheusServer,
    free_port,
)
from rollbackd.testing.sink import HttpSink

T = TypeVar("T")

# Real alert rules, as an SRE would write them, with short windows for 1 s scrapes.
ALERT_RULES = """
groups:
  - name: workload
    interval: 1s
    rules:
      - alert: DeploymentHighErrorRatio
        expr: |
          sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[10s]))
            /
          sum by (namespace, deployment) (rate(http_requests_total[10s]))
            > 0.1
          and on (namespace, deployment)
          sum by (namespace, deployment) (rate(http_requests_total[10s])) * 10 >= 10
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.namespace }}/{{ $labels.deployment }} error ratio {{ $value }}"
      - alert: DeploymentHighLatencyP99
        expr: |
          histogram_quantile(0.99,
            sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[10s])))
            > 0.5
          and on (namespace, deployment)
          sum by (namespace, deployment) (rate(http_request_duration_seconds_count[10s])) * 10 >= 10
        for: 2s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.namespace }}/{{ $labels.deployment }} p99 {{ $value }}s"
"""

PAGERDUTY_PATH = "/v2/enqueue"
SLACK_PATH = "/slack"
ROUTING_KEY = "test-routing-key-0123456789abcdef"
# The stack runs secure by default like a real install: Alertmanager's token
# posts alerts and reads, a separate operator token starts manual rollbacks.
WEBHOOK_TOKEN = "stack-alertmanager-token-0123456789"
OPERATOR_TOKEN = "stack-operator-token-0123456789"
API_HEADERS = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
OPERATOR_HEADERS = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def knobs(
    *,
    error_rate: float = 0.0,
    latency_ms: float = 40,
    rps: float = 20,
    ready: bool = True,
    ready_after: str | None = None,
) -> dict[str, str]:
    """kubesim's behaviour annotations for a pod template."""
    found = {
        "kubesim.rollbackd.io/error-rate": str(error_rate),
        "kubesim.rollbackd.io/latency-ms": str(latency_ms),
        "kubesim.rollbackd.io/rps": str(rps),
    }
    if not ready:
        found["kubesim.rollbackd.io/ready"] = "false"
    if ready_after:
        found["kubesim.rollbackd.io/ready-after"] = ready_after
    return found


def deployment_manifest(
    name: str,
    *,
    image: str,
    behaviour: Mapping[str, str],
    replicas: int = 2,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "progressDeadlineSeconds": 30,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": dict(behaviour)},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
                    ]
                },
            },
        },
    }


def stack_settings(
    *,
    kubeconfig: Path,
    prometheus_url: str,
    alertmanager_url: str,
    sink_url: str,
    listen: str,
    workdir: Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """rollbackd's configuration for the loopback stack, tuned for 1 s scrapes."""
    key_file = workdir / "pagerduty.key"
    key_file.write_text(ROUTING_KEY + "\n")
    slack_file = workdir / "slack.url"
    slack_file.write_text(f"{sink_url}{SLACK_PATH}\n")
    webhook_token_file = workdir / "webhook.token"
    webhook_token_file.write_text(WEBHOOK_TOKEN + "\n")
    operator_token_file = workdir / "operator.token"
    operator_token_file.write_text(OPERATOR_TOKEN + "\n")
    signals = [{**asdict(spec), "window": "10s", "for_count": 2} for spec in DEFAULT_SIGNALS]
    raw: dict[str, dict[str, Any]] = {
        "cluster": {"kubeconfig": str(kubeconfig), "exclude_namespaces": ["kube-system"]},
        "prometheus": {
            "url": prometheus_url,
            "poll_interval": "1s",
            "timeout": "3s",
            "attempts": 2,
            "signals": signals,
        },
        "webhook": {
            "listen": listen,
            "bearer_token_file": str(webhook_token_file),
            "operator_token_file": str(operator_token_file),
        },
        "policy": {"change_window": "10m", "min_stable": "3s", "cooldown": "10m"},
        "rollout": {"timeout": "60s"},
        "verify": {"intervals": 3, "timeout": "60s"},
        "notify": {
            "pagerduty": {
                "url": f"{sink_url}{PAGERDUTY_PATH}",
                "routing_key_file": str(key_file),
            },
            "alertmanager": {"url": alertmanager_url},
            "slack": {"webhook_url_file": str(slack_file)},
        },
        "journal": {"path": str(workdir / "journal.sqlite")},
        "leader_election": {
            "enabled": True,
            "namespace": "default",
            "lease_name": "rollbackd",
            "identity": "rollbackd-test",
            "lease_duration": "4s",
            "renew_deadline": "3s",
            "retry_period": "1s",
        },
        "logging": {"level": "info", "format": "json"},
    }
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return Settings.model_validate(raw)


class Stack:
    """Everything started, in order; ``stop`` tears down in reverse, always."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        pod_ready_delay: float = 0.3,
        with_daemon: bool = True,
        alert_rules: str = ALERT_RULES,
        workload_label: str = "deployment",
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rollbackd-stack-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self._overrides = overrides
        self._pod_ready_delay = pod_ready_delay
        self._with_daemon = with_daemon
        self._alert_rules = alert_rules
        self._workload_label = workload_label  # kubesim's metric label naming the workload
        self._stack = contextlib.AsyncExitStack()
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        enter = self._stack.enter_async_context
        self.sink = await enter(HttpSink())
        self.sim = await enter(
            KubeSim(
                pod_ready_delay=self._pod_ready_delay,
                kubeconfig_path=self.workdir / "kubeconfig",
                workload_label=self._workload_label,
            )
        )
        self.rollbackd_port = free_port()
        self.webhook_url = f"http://127.0.0.1:{self.rollbackd_port}/api/v1/alerts"
        self.alertmanager = await enter(
            AlertmanagerServer(
                AlertmanagerConfig(
                    webhook_url=self.webhook_url,
                    bearer_token=WEBHOOK_TOKEN,
                    group_by=("alertname", "namespace", "deployment"),
                ),
                workdir=self._subdir("alertmanager"),
            )
        )
        metrics_target = self.sim.metrics_url.removeprefix("http://")
        self.prometheus = await enter(
            PrometheusServer(
                PrometheusConfig(
                    targets=(metrics_target,),
                    rules=self._alert_rules,
                    alertmanager_url=self.alertmanager.url,
                ),
                workdir=self._subdir("prometheus"),
            )
        )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.settings = stack_settings(
            kubeconfig=self.sim.kubeconfig,
            prometheus_url=self.prometheus.url,
            alertmanager_url=self.alertmanager.url,
            sink_url=self.sink.url,
            listen=f"127.0.0.1:{self.rollbackd_port}",
            workdir=self.workdir,
            overrides=self._overrides,
        )
        if self._with_daemon:
            await self.start_daemon()

    async def start_daemon(self) -> Daemon:
        self.daemon = Daemon(self.settings)
        await self.daemon.start()
        return self.daemon

    def daemon_config(self, **overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The in-process daemon's settings as a config dict for a ``DaemonProcess``.

        Same port (Alertmanager posts there), journal, kubeconfig, Prometheus
        and sink; ``overrides`` update whole sections, e.g.
        ``webhook={"max_connections": 64}``. Start the stack with
        ``with_daemon=False`` so the two do not compete for the port.
        """
        from rollbackd.testing.process import settings_to_config

        return settings_to_config(self.settings, overrides)

    async def stop_daemon(self) -> None:
        daemon = getattr(self, "daemon", None)
        if daemon is not None:
            self.daemon = None  # type: ignore[assignment]
            await daemon.stop()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_daemon()
        if self._http is not None:
            await self._http.close()
        await self._stack.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- driving the cluster through its REST API, as a human's kubectl would -----------

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        assert self._http is not None
        async with self._http.request(
            method,
            f"{self.sim.url}{path}",
            json=body,
            headers={"Content-Type": content_type},
        ) as resp:
            found: dict[str, Any] = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {found.get('message')}")
            return found

    @staticmethod
    def _path(namespace: str, name: str | None = None) -> str:
        base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        return f"{base}/{name}" if name else base

    async def create_deployment(
        self, manifest: Mapping[str, Any], namespace: str = "default"
    ) -> None:
        await self._request("POST", self._path(namespace), dict(manifest))

    async def roll_out(
        self,
        name: str,
        *,
        image: str,
        behaviour: Mapping[str, str],
        namespace: str = "default",
        change_cause: str | None = None,
    ) -> None:
        """What ``kubectl set image`` plus an annotation edit does: a strategic merge patch."""
        patch: dict[str, Any] = {
            "spec": {
                "template": {
                    "metadata": {"annotations": dict(behaviour)},
                    "spec": {"containers": [{"name": "app", "image": image}]},
                }
            }
        }
        if change_cause:
            patch["metadata"] = {"annotations": {"kubernetes.io/change-cause": change_cause}}
        await self._request(
            "PATCH",
            self._path(namespace, name),
            patch,
            content_type="application/strategic-merge-patch+json",
        )

    async def deployment(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return await self._request("GET", self._path(namespace, name))

    async def wait_rollout_complete(
        self, name: str, namespace: str = "default", timeout: float = 30
    ) -> dict[str, Any]:
        async def complete() -> dict[str, Any] | None:
            dep = await self.deployment(name, namespace)
            spec, status = dep["spec"], dep.get("status", {})
            done = (
                status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
                and status.get("updatedReplicas") == spec["replicas"]
                and status.get("replicas") == spec["replicas"]
                and status.get("availableReplicas") == spec["replicas"]
            )
            return dep if done else None

        return await wait_for(complete, timeout, f"rollout of {namespace}/{name} to complete")

    async def revision(self, name: str, namespace: str = "default") -> int:
        dep = await self.deployment(name, namespace)
        return int(dep["metadata"].get("annotations", {}).get(ANNOTATION_REVISION, "0"))

    async def wait_rollback(
        self,
        target: Target,
        *,
        phases: tuple[str, ...],
        timeout: float = 90,
    ) -> Rollback:
        """Wait until the journal shows a rollback of ``target`` in one of ``phases``."""

        async def finished() -> Rollback | None:
            for rollback in await self.daemon.journal.list_rollbacks(target=target, limit=5):
                if str(rollback.phase) in phases:
                    return rollback
            return None

        return await wait_for(finished, timeout, f"a rollback of {target} in {phases}")


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until it returns something, or fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
