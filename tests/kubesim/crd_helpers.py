"""Manifests and a kubectl watch reader for the HTTPRoute and Rollout tests."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Callable
from typing import Any

from .kubectl_helpers import Kubectl

HTTPROUTES = "gateway.networking.k8s.io/v1/httproutes"
ROLLOUTS = "argoproj.io/v1alpha1/rollouts"


def service_manifest(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def route_manifest(name: str, backends: list[tuple[str, Any]], **extra: Any) -> dict[str, Any]:
    """An HTTPRoute on Gateway ``gw`` whose one rule sends to (Service, weight) backends."""
    refs = [{"name": service, "port": 80, "weight": weight} for service, weight in backends]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["shop.example.com"],
            "rules": [{"backendRefs": refs}],
            **extra,
        },
    }


def rollout_manifest(
    name: str = "web",
    *,
    image: str = "example/app:1.0",
    replicas: int = 4,
    steps: list[dict[str, Any]] | None = None,
    template_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A basic-canary Rollout with one container named ``app``."""
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": steps if steps is not None else []}},
        },
    }


async def create(kubectl: Kubectl, tmp_path: pathlib.Path, manifest: dict[str, Any]) -> None:
    path = tmp_path / f"{manifest['kind']}-{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    await kubectl.run("create", "-f", str(path))


async def wait_for(
    read: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float = 20
) -> Any:
    """Poll ``read`` until ``predicate`` holds of its answer; the last answer in the failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = read()
        if asyncio.iscoroutine(value):
            value = await value
        if predicate(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


class KubectlWatch:
    """``kubectl get ... --watch -o json`` in the background; objects as they arrive."""

    def __init__(self, kubectl: Kubectl, *args: str) -> None:
        self._kubectl = kubectl
        self._args = args
        self._process: asyncio.subprocess.Process | None = None
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    async def __aenter__(self) -> KubectlWatch:
        k = self._kubectl
        self._process = await asyncio.create_subprocess_exec(
            str(k.binary),
            "--kubeconfig",
            str(k.kubeconfig),
            "--cache-dir",
            str(k.cache_dir),
            *self._args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def next_object(self, timeout: float = 20) -> dict[str, Any]:
        """The next JSON document kubectl printed (it prints them back to back, indented)."""
        assert self._process is not None and self._process.stdout is not None
        while True:
            stripped = self._buffer.lstrip()
            if stripped:
                try:
                    obj, end = self._decoder.raw_decode(stripped)
                except ValueError:
                    pass
                else:
                    self._buffer = stripped[end:]
                    return dict(obj)
            chunk = await asyncio.wait_for(self._process.stdout.read(4096), timeout)
            if not chunk:
                raise AssertionError("kubectl watch ended")
            self._buffer += chunk.decode()
