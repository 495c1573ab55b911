"""The leader labels its own pod, so the webhook Service reaches the leader (the Patroni pattern).

All healthy replicas are Ready (a standby must not block rollouts, PDBs or
``helm install --wait``), so Service endpoints cannot tell the leader from a
standby. Instead the leader sets ``rollbackd.io/leader: "true"`` on its own
pod and the chart's webhook Service selects that label: Alertmanager always
reaches the replica that acts.

- On gaining leadership: label our pod, and take the label off any other pod
  of the same release that still carries it (a leader that froze or died
  without cleaning up), so the Service never has two leaders behind it.
- On losing leadership (or at start, for a label left by an earlier process
  in this pod): remove it, exempt from fencing (giving authority up is always
  safe) and only when it is there, so a deposed leader whose label the new
  leader already removed writes nothing at all.

All of it is best effort: a failure is logged, never fatal. The pod is named
by the downward API (``POD_NAME``, ``POD_NAMESPACE``, set by the chart);
without them there is no pod to label and this does nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from rollbackd.kube.errors import KubeError
from rollbackd.kube.fencing import Fence, FencedError

__all__ = ["LEADER_LABEL", "LeaderLabel"]

log = structlog.get_logger("rollbackd.kube.leader_label")

LEADER_LABEL = "rollbackd.io/leader"
# The pod labels that say which release a pod belongs to (the chart's selector).
_RELEASE_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")
_MERGE_PATCH = "application/merge-patch+json"
_ERRORS = (KubeError, aiohttp.ClientError, TimeoutError, OSError, ValueError)
# KubeClient.request: (method, path, *, query, body, content_type) -> the decoded JSON answer.
Request = Callable[..., Awaitable[dict[str, Any]]]


class LeaderLabel:
    """Sets and clears the leader label on this replica's pod."""

    def __init__(
        self,
        request: Request,
        fence: Fence,
        *,
        namespace: str | None,
        pod: str | None,
        timeout: float = 10.0,
    ) -> None:
        # The adapter's one call (typed errors; the fence hooks its REST client):
        # no generated CoreV1Api, whose import costs every process its models.
        self._request = request
        self._fence = fence
        self.namespace = namespace
        self.pod = pod
        self._timeout = timeout

    @classmethod
    def from_env(
        cls, request: Request, fence: Fence, environ: Mapping[str, str] = os.environ
    ) -> LeaderLabel:
        """The pod named by the downward API env POD_NAME / POD_NAMESPACE."""
        return cls(
            request,
            fence,
            namespace=environ.get("POD_NAMESPACE") or None,
            pod=environ.get("POD_NAME") or None,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.namespace and self.pod)

    async def claim(self) -> None:
        """Label our pod as the leader and unlabel any other pod of the release."""
        if not self.enabled:
            log.info("leader_label_skipped", reason="POD_NAME/POD_NAMESPACE not set")
            return
        assert self.namespace is not None and self.pod is not None
        try:
            pod = await self._patch_labels(self.pod, {LEADER_LABEL: "true"})
            log.info("leader_label_set", pod=f"{self.namespace}/{self.pod}")
            await self._unlabel_others(_labels(pod))
        except FencedError:
            return  # leadership already gone: release() follows
        except _ERRORS as exc:
            log.warning("leader_label_failed", pod=f"{self.namespace}/{self.pod}", error=str(exc))

    async def _unlabel_others(self, labels: Mapping[str, str]) -> None:
        assert self.namespace is not None
        selector = ",".join(
            [f"{LEADER_LABEL}=true"]
            + [f"{key}={labels[key]}" for key in _RELEASE_LABELS if key in labels]
        )
        pods = await self._call("GET", self._pods_path(), query=[("labelSelector", selector)])
        for other in pods.get("items") or []:
            name = (other.get("metadata") or {}).get("name")
            if not name or name == self.pod:
                continue
            await self._patch_labels(name, {LEADER_LABEL: None})
            log.warning("stale_leader_label_removed", pod=f"{self.namespace}/{name}")

    async def release(self) -> None:
        """Remove the label from our pod if it is there (no write otherwise)."""
        if not self.enabled:
            return
        assert self.namespace is not None and self.pod is not None
        try:
            pod = await self._call("GET", self._pods_path(self.pod))
            if LEADER_LABEL not in _labels(pod):
                return
            with self._fence.exempt("leader label release"):
                await self._patch_labels(self.pod, {LEADER_LABEL: None})
            log.info("leader_label_removed", pod=f"{self.namespace}/{self.pod}")
        except _ERRORS as exc:
            log.warning(
                "leader_label_release_failed", pod=f"{self.namespace}/{self.pod}", error=str(exc)
            )

    def _pods_path(self, name: str | None = None) -> str:
        assert self.namespace is not None
        path = f"/api/v1/namespaces/{quote(self.namespace)}/pods"
        return f"{path}/{quote(name)}" if name else path

    async def _patch_labels(self, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        """A merge patch of one pod's labels (None removes a label)."""
        body = {"metadata": {"labels": dict(labels)}}
        return await self._call("PATCH", self._pods_path(name), body=body)

    async def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        async with asyncio.timeout(self._timeout):
            return await self._request(method, path, content_type=_MERGE_PATCH, **options)


def _labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})
