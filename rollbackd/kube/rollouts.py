"""Argo Rollouts through the API server: discovery, fresh reads, the guarded record, the abort.

The abort is what ``kubectl argo rollouts abort`` sends: the merge patch
``{"status":{"abort":true}}`` on the status subresource. It is idempotent
(setting true twice is one abort), so a retried 5xx cannot abort twice; the
guard that matters (the canary is still the one planned) is taken on the
fresh read just before it, by the strategy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import structlog

from rollbackd.kube.errors import KubeError, NotFoundError
from rollbackd.kube.writes import DeploymentWrites
from rollbackd.model import FIELD_MANAGER, Target
from rollbackd.readiness import ReadinessReport, pod_ready, selecting_services

__all__ = ["ABORT_PATCH", "API_GROUP_VERSION", "RolloutWrites", "rollout_path"]

log = structlog.get_logger(__name__)

API_GROUP_VERSION = "argoproj.io/v1alpha1"
ABORT_PATCH = {"status": {"abort": True}}  # pkg/kubectl-argo-rollouts/cmd/abort


def rollout_path(target: Target) -> str:
    return (
        f"/apis/{API_GROUP_VERSION}/namespaces/{quote(target.namespace)}"
        f"/rollouts/{quote(target.name)}"
    )


class RolloutWrites(DeploymentWrites):
    """Reads and writes of ``argoproj.io/v1alpha1`` Rollouts."""

    _rollouts_absent_logged = False  # "not served" is logged once per adapter

    async def rollouts_served(self) -> bool:
        """Whether the API server serves Rollouts (the CRD is installed); logged once when not."""
        try:
            group = await self.request("GET", f"/apis/{API_GROUP_VERSION}")
        except NotFoundError:
            group = {}
        except KubeError as exc:  # discovery down: Deployments must still be watched
            log.warning("argo_rollouts_discovery_failed", error=str(exc))
            group = {}
        served = any(r.get("name") == "rollouts" for r in group.get("resources") or ())
        if not served and not self._rollouts_absent_logged:
            self._rollouts_absent_logged = True
            log.info("argo_rollouts_not_served", group_version=API_GROUP_VERSION)
        return served

    async def read_rollout(self, target: Target) -> dict[str, Any]:
        """A fresh GET of the Rollout (NotFoundError when it or its CRD is gone)."""
        return await self.request("GET", rollout_path(target))

    async def rollout_replicasets(self, target: Target) -> list[dict[str, Any]]:
        """The namespace's ReplicaSets with a Rollouts hash label (ownership: argo.rollout_facts)."""
        path = f"/apis/apps/v1/namespaces/{quote(target.namespace)}/replicasets"
        listing = await self.request(
            "GET", path, query=[("labelSelector", "rollouts-pod-template-hash")]
        )
        return list(listing.get("items") or [])

    async def patch_rollout(self, target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """A guarded JSON patch of the Rollout (its ``test`` failing raises ConflictError)."""
        return await self._guarded_patch(
            rollout_path(target), ops, f"rollout {target}", query=[("fieldManager", FIELD_MANAGER)]
        )

    async def abort_rollout(self, target: Target) -> dict[str, Any]:
        """``kubectl argo rollouts abort``: the merge patch on the status subresource."""
        return await self.request(
            "PATCH",
            f"{rollout_path(target)}/status",
            query=[("fieldManager", FIELD_MANAGER)],
            body=ABORT_PATCH,
            content_type="application/merge-patch+json",
        )

    async def rollout_readiness(self, target: Target) -> ReadinessReport:
        """The stable version's Ready pods vs ``spec.replicas``; endpoints of selecting Services.

        After an abort the Rollout's template is still the canary's, so the
        pods counted are the stable hash's, not the template's.
        """
        rollout = await self.read_rollout(target)
        stable = str((rollout.get("status") or {}).get("stableRS") or "")
        ns = quote(target.namespace)
        pods = await self.request(
            "GET",
            f"/api/v1/namespaces/{ns}/pods",
            query=[("labelSelector", f"rollouts-pod-template-hash={stable}")],
        )
        services = await self.list_items(f"/api/v1/namespaces/{ns}/services")
        endpoints = await self.list_items(f"/api/v1/namespaces/{ns}/endpoints")
        spec = rollout.get("spec") or {}
        return ReadinessReport(
            desired=int(spec.get("replicas", 1) or 0),
            ready=sum(1 for pod in pods.get("items") or () if pod_ready(pod)),
            services=selecting_services(rollout, services, endpoints),
        )
