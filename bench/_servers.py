"""The servers the webhook bench talks to, each its own process on 127.0.0.1.

- kubesim with a handful of Deployments that the alerts name, each with a
  fresh rollout (v1 -> v2), as during a real incident;
- the real daemon, ``python -m rollbackd run --config FILE``: dry-run
  everywhere (it never rolls anything back, we measure intake), leader
  election off, bearer auth on the webhook, a journal in the work directory
  and a Prometheus URL where nothing listens (the scrape interval is set, so
  start-up never asks Prometheus; the poller failing does not matter);
- the baseline, a bare aiohttp JSON handler (``_baseline_server.py``).

Each binds port 0 and the address is read back from its output.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import Child, Children, wait_until

HERE = Path(__file__).resolve().parent
WEBHOOK_PATH = "/api/v1/alerts"
START_TIMEOUT_SECONDS = 60.0
# Port 9 (discard) on loopback: nothing listens, connections are refused at once.
DEAD_PROMETHEUS = "http://127.0.0.1:9"


def _clean_env() -> dict[str, str]:
    # ROLLBACKD__* overrides in the caller's environment would change the config under test.
    return {k: v for k, v in os.environ.items() if not k.startswith("ROLLBACKD")}


def _key_value(prefix: str) -> Any:
    def match(line: str) -> str | None:
        return line.removeprefix(prefix).strip() if line.startswith(prefix) else None

    return match


@dataclass(frozen=True)
class KubeSimProcess:
    url: str
    kubeconfig: Path
    token: str
    metrics_url: str = ""  # the workload /metrics a Prometheus scrapes


def start_kubesim(children: Children, workdir: Path) -> KubeSimProcess:
    kubeconfig = workdir / "kubeconfig"
    child = children.start(
        "kubesim",
        [
            sys.executable,
            "-m",
            "rollbackd.testing.kubesim",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--pod-ready-delay",
            "0.05",
        ],
        env=_clean_env(),
    )
    child.wait_for_line(_key_value("kubeconfig="), timeout=START_TIMEOUT_SECONDS)
    metrics_url = child.wait_for_line(_key_value("metrics_url="), timeout=START_TIMEOUT_SECONDS)
    document = yaml.safe_load(kubeconfig.read_text())
    return KubeSimProcess(
        url=document["clusters"][0]["cluster"]["server"],
        kubeconfig=kubeconfig,
        token=document["users"][0]["user"]["token"],
        metrics_url=str(metrics_url),
    )


def _kube(sim: KubeSimProcess, method: str, path: str, body: Any = None) -> Any:
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = urllib.request.Request(
        sim.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {sim.token}", "Content-Type": content_type},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def deployment_manifest(
    name: str,
    image: str,
    *,
    replicas: int = 2,
    pod_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A minimal Deployment labelled ``app: <name>``, as the benches create them."""
    labels = {"app": name}
    pod_metadata: dict[str, Any] = {"labels": labels}
    if pod_annotations:
        pod_metadata["annotations"] = dict(pod_annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": pod_metadata,
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def _rolled_out(sim: KubeSimProcess, namespace: str, name: str) -> bool | None:
    found = _kube(sim, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    status, spec = found.get("status") or {}, found["spec"]
    done = (
        status.get("observedGeneration", 0) >= found["metadata"].get("generation", 0)
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
    )
    return True if done else None


def _wait_rolled_out(sim: KubeSimProcess, namespace: str, name: str, version: str) -> None:
    def probe() -> bool | None:
        return _rolled_out(sim, namespace, name)

    wait_until(probe, timeout=30, what=f"{name} {version} rolled out")


def create_deployments(sim: KubeSimProcess, namespace: str, names: Sequence[str]) -> None:
    """Each Deployment at v1, then a rollout to v2: the recent change the alerts blame."""
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    for name in names:
        _kube(sim, "POST", base, deployment_manifest(name, f"registry.local/shop/{name}:1.0.0"))
    for name in names:
        _wait_rolled_out(sim, namespace, name, "v1")
        patch = deployment_manifest(name, f"registry.local/shop/{name}:1.1.0")
        _kube(sim, "PATCH", f"{base}/{name}", {"spec": patch["spec"]})
    for name in names:
        _wait_rolled_out(sim, namespace, name, "v2")


@dataclass(frozen=True)
class Rollbackd:
    child: Child
    url: str
    token: str
    journal: Path


def rollbackd_config(
    sim: KubeSimProcess, workdir: Path, token_file: Path, log_level: str
) -> dict[str, Any]:
    return {
        "cluster": {"kubeconfig": str(sim.kubeconfig)},
        "prometheus": {
            "url": DEAD_PROMETHEUS,
            "scrape_interval": "15s",
            "poll_interval": "15s",
            "timeout": "1s",
            "attempts": 1,
        },
        "webhook": {"listen": "127.0.0.1:0", "bearer_token_file": str(token_file)},
        # A v1 that ran for any time counts as stable, so the decision is a
        # (dry-run) rollback of the fresh v2: the path a real incident takes.
        "policy": {"dry_run": True, "min_stable": "0s"},
        "journal": {"path": str(workdir / "journal.sqlite")},
        "leader_election": {"enabled": False},
        "logging": {"level": log_level, "format": "json"},
    }


def _listening_url(line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if isinstance(event, dict) and event.get("event") == "listening":
        return str(event["url"])
    return None


class _Readiness:
    """Polls /readyz; remembers the last answer for the error message."""

    def __init__(self, url: str) -> None:
        self.url = url + "/readyz"
        self.last = "no answer yet"

    def __call__(self) -> bool | None:
        try:
            with urllib.request.urlopen(self.url, timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            self.last = f"{exc.code} {exc.read()[:300].decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            self.last = str(exc)
        return None


def start_rollbackd(
    children: Children,
    sim: KubeSimProcess,
    workdir: Path,
    *,
    log_level: str = "info",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Rollbackd:
    """``overrides`` update whole config sections, e.g. a real Prometheus for the poll bench."""
    token = secrets.token_urlsafe(24)
    token_file = workdir / "webhook-token"
    token_file.write_text(token + "\n")
    config = workdir / "rollbackd.yaml"
    settings = rollbackd_config(sim, workdir, token_file, log_level)
    for section, values in (overrides or {}).items():
        settings.setdefault(section, {}).update(values)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    child = children.start(
        "rollbackd",
        [sys.executable, "-m", "rollbackd", "run", "--config", str(config)],
        env=_clean_env(),
    )
    url = child.wait_for_line(_listening_url, timeout=START_TIMEOUT_SECONDS)
    ready = _Readiness(url)
    try:
        wait_until(ready, timeout=START_TIMEOUT_SECONDS, what="rollbackd /readyz")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last answer: {ready.last}\n{child.tail()}") from None
    return Rollbackd(child, url, token, Path(settings["journal"]["path"]))


def start_baseline(children: Children) -> str:
    child = children.start(
        "baseline", [sys.executable, str(HERE / "_baseline_server.py")], env=_clean_env()
    )
    return str(child.wait_for_line(_key_value("url="), timeout=START_TIMEOUT_SECONDS))
