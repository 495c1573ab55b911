"""Canary rollback: the canary taken out of traffic, the stable Deployment verified.

The target is the canary Deployment (``rollbackd.io/canary-of: <stable>``,
its signals breach). Nothing is restored: the stable version keeps running
and is what is waited for and verified. Each write is guarded by a
resourceVersion precondition:

- by replicas (both behind one Service): one patch of the canary carries the
  ROLLING_BACK state, the plan's record (``rollbackd.io/canary``), the
  replicas it had (``rollbackd.io/canary-replicas``, for the human who
  restores them) and ``spec.replicas: 0``. One write, so no kill can leave
  the record without the scale-down, and a resume has nothing to redo.
- by an HTTPRoute (``rollbackd.io/canary-route``): the canary's patch carries
  the state and the record (the weights before and after); then the route's
  canary backendRefs get weight 0 and the stable one the rule's total
  (:meth:`CanaryStrategy.resume`, skipped when already set; weights someone
  else changed since the plan: PlanError, nothing written).

There is no cleanup: the canary stays out of traffic until a human acts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from rollbackd.canary import (
    ANNOTATION_CANARY,
    ANNOTATION_CANARY_REPLICAS,
    CANARY,
    CanaryFacts,
    canary_facts,
    route_shift,
    weight_of,
    weight_ops,
)
from rollbackd.kube.errors import ConflictError, NotFoundError
from rollbackd.kube.patch import annotation_ops, precondition
from rollbackd.kube.rollout import deployment_status
from rollbackd.model import Target
from rollbackd.readiness import running_template_hash
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import gitops_owner, revision_of, strip_hash
from rollbackd.state import plan_record as recorded_plan
from rollbackd.state import recorded_owners, with_plan_record
from rollbackd.strategies import Obj, Ops, PlanError, Restore, RolloutOutcome, RolloutWaiter

__all__ = ["CanaryStrategy", "plan_record", "recorded_gitops_owners"]

# Re-reads a guarded route write may take when only its status moved.
_ATTEMPTS = 8


def plan_record(deployment: Obj) -> dict[str, Any]:
    """The canary record of the rollback recorded on the target; {} when none (or another's)."""
    return recorded_plan(deployment, ANNOTATION_CANARY)


def recorded_gitops_owners(deployment: Obj) -> list[dict[str, str]]:
    """The HTTPRoute's GitOps owner the recorded rollback paused, when not the canary's."""
    return recorded_owners(deployment, ANNOTATION_CANARY, [("route_owner", "HTTPRoute", "route")])


def _weights(route: Obj, positions: Sequence[Sequence[int]]) -> list[list[int]]:
    """[rule, backendRef, weight] of the route at the recorded positions (-1: no such ref)."""
    rules = (route.get("spec") or {}).get("rules") or []
    found = []
    for i, j, _ in positions:
        refs = rules[i].get("backendRefs") or [] if i < len(rules) else []
        found.append([i, j, weight_of(refs[j]) if j < len(refs) else -1])
    return found


def _serving(canary: Obj, stable: Obj) -> dict[str, Any]:
    """The canary's template with the stable's images: what the guard and the pages see.

    No template is written, so the guard's field allow-list has nothing to
    judge (a canary may differ from the stable in labels or resources); the
    images are what serves afterwards, and a mutable one is still refused.
    """
    images = {
        c.get("name"): c.get("image") for c in (stable.get("spec") or {}).get("containers") or []
    }
    serving = copy.deepcopy(dict(strip_hash(canary)))
    for container in (serving.get("spec") or {}).get("containers") or []:
        container["image"] = images.get(container.get("name"), container.get("image"))
    return serving


def _canary_and_stable(deployment: Obj, deployments: Sequence[Obj]) -> tuple[CanaryFacts, Obj]:
    """The canary's facts and its stable Deployment; PlanError when it is no valid canary."""
    facts = canary_facts(deployment, deployments)
    if facts is None:
        raise PlanError(ReasonCode.CANARY_OF_INVALID, "this Deployment is not a canary")
    if facts.problem is not None:
        raise PlanError(*facts.problem)
    stable = next(d for d in deployments if (d.get("metadata") or {}).get("name") == facts.stable)
    return facts, stable


def _route_change(facts: CanaryFacts, record: Mapping[str, Any], changes: dict[str, Any]) -> str:
    """The weight shift into ``changes``; its summary."""
    changes["route"] = record["route"]
    changes["weights_before"], changes["weights_after"] = record["before"], record["after"]
    return (
        f"setting canary {facts.canary}'s weight to 0 in HTTPRoute {facts.route} "
        f"(Service {record['canary_service']} -> 0, {record['stable_service']} the total)"
    )


def _scale_down_change(facts: CanaryFacts, changes: dict[str, Any]) -> str:
    """The scale-down into ``changes``; its summary (PlanError when already at 0)."""
    if facts.replicas == 0:
        raise PlanError(
            ReasonCode.CANARY_OUT_OF_TRAFFIC,
            f"canary {facts.canary} is scaled to 0 already; its recorded replicas are kept",
        )
    changes["replicas_scaled"] = [{"deployment": facts.canary, "from": facts.replicas, "to": 0}]
    return (
        f"scaling canary {facts.canary} {facts.replicas} -> 0 (stable {facts.stable} "
        f"serves; the count is kept in {ANNOTATION_CANARY_REPLICAS} to restore it)"
    )


class CanaryStrategy:
    """Take a breaching canary out of traffic; the stable Deployment serves."""

    name = CANARY

    async def context(self, kube: Any, target: Target, deployment: Obj) -> Obj:
        """The namespace's Deployments, and with a route its Services and the route, fresh."""
        ns = target.namespace
        deployments = await kube.list_items(f"/apis/apps/v1/namespaces/{ns}/deployments")
        facts = canary_facts(deployment, deployments)
        if facts is None or not facts.route:
            return {"deployments": deployments}
        services = await kube.list_items(f"/api/v1/namespaces/{ns}/services")
        try:
            route: dict[str, Any] | None = await kube.read_httproute(ns, facts.route)
        except NotFoundError:
            route = None
        return {"deployments": deployments, "services": services, "route": route}

    def plan(
        self,
        deployment: Obj,
        replicasets: Sequence[Obj],
        to_revision: int | None,
        context: Obj | None = None,
        *,
        rollback_id: str = "",  # unused: its record names the state annotation's rollback
    ) -> Restore:
        """The scale-down or the weight shift; PlanError on bad input (nothing written)."""
        context = context or {}
        facts, stable = _canary_and_stable(deployment, context.get("deployments", ()))
        meta = deployment.get("metadata") or {}
        record: dict[str, Any] = {"stable": facts.stable, "replicas": facts.replicas}
        changes: dict[str, Any] = {"strategy": CANARY, "stable": facts.stable}
        others: dict[str, Obj] = {}  # a sync of the route's owner would put the weight back
        if facts.route:
            record.update(self._route_record(facts.route, context, deployment, stable))
            others[f"HTTPRoute {meta.get('namespace')}/{facts.route}"] = context["route"]
            if route_owner := gitops_owner(context["route"]):
                record["route_owner"] = route_owner  # named on a resumed rollback's pages
            summary = _route_change(facts, record, changes)
        else:
            summary = _scale_down_change(facts, changes)
        template = (deployment.get("spec") or {}).get("template") or {}
        serving = _serving(template, (stable.get("spec") or {}).get("template") or {})
        return Restore(
            replicaset={"metadata": {"name": facts.stable}},
            to_revision=revision_of(stable) or 1,
            template=serving,
            template_hash=running_template_hash(replicasets, template),
            predicted_revision=revision_of(deployment) or 0,
            kept_template=template,
            verify_target=Target(str(meta.get("namespace")), facts.stable),
            changes={**changes, "record": record},
            summary=summary,
            gitops_objects=others,
        )

    @staticmethod
    def _route_record(route_name: str, context: Obj, canary: Obj, stable: Obj) -> dict[str, Any]:
        route = context.get("route")
        if route is None:
            raise PlanError(
                ReasonCode.CANARY_ROUTE_INVALID, f"HTTPRoute {route_name} does not exist"
            )
        shift = route_shift(route, context.get("services", ()), canary, stable)
        if isinstance(shift, str):
            raise PlanError(ReasonCode.CANARY_ROUTE_INVALID, shift)
        return {
            "route": shift.route,
            "canary_service": shift.canary_service,
            "stable_service": shift.stable_service,
            "before": [list(w) for w in shift.before],
            "after": [list(w) for w in shift.after],
        }

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """State and record on the canary; by replicas also the recorded count and the scale-down."""
        meta = deployment.get("metadata") or {}
        record = restore.changes["record"]
        changes = with_plan_record(annotations, ANNOTATION_CANARY, record)
        ops = [precondition(meta["resourceVersion"])]
        if "route" not in record:
            changes[ANNOTATION_CANARY_REPLICAS] = str(record["replicas"])
            ops.append({"op": "replace", "path": "/spec/replicas", "value": 0})
        return [ops[0], *annotation_ops(meta.get("annotations"), changes), *ops[1:]]

    async def apply(self, kube: Any, target: Target, patch: Ops, *, timeout: float = 600.0) -> None:
        """The canary's patch (a conflict raises ConflictError: the executor re-plans), then the route."""
        await kube.patch_deployment(target, patch)
        await self.resume(kube, target, await kube.read_deployment(target), timeout=timeout)

    async def resume(self, kube: Any, target: Target, deployment: Obj, *, timeout: float) -> None:
        """The route's weights, when the record names a route (by replicas: nothing left)."""
        record = plan_record(deployment)
        if not record:
            raise PlanError(ReasonCode.TARGET_CHANGED, "the canary record of this rollback is gone")
        if "route" in record:
            await self._reweight(kube, target.namespace, record)

    async def _reweight(self, kube: Any, namespace: str, record: Mapping[str, Any]) -> None:
        """Set the recorded weights; only over the weights the plan saw, never someone else's."""
        name = str(record["route"])
        for _ in range(_ATTEMPTS):
            try:
                route = await kube.read_httproute(namespace, name)
            except NotFoundError:
                route = None
            now = _weights(route, record["after"]) if route is not None else None
            if now == record["after"]:
                return  # already shifted (a resumed rollback)
            if route is None or now != record["before"]:
                raise PlanError(
                    ReasonCode.TARGET_CHANGED,
                    f"HTTPRoute {name} was changed by someone else (weights now "
                    f"{'gone' if now is None else now}, rollbackd expected {record['before']}): "
                    "not re-weighted, manual rollback needed",
                )
            ops = [
                precondition(route["metadata"]["resourceVersion"]),
                *weight_ops(record["after"]),
            ]
            try:
                await kube.patch_httproute(namespace, name, ops)
                return
            except ConflictError:
                continue  # re-read: re-weighted by someone else, or only its status moved
        raise PlanError(
            ReasonCode.WRITE_CONFLICTS, f"HTTPRoute {name} kept changing: not re-weighted"
        )

    def verified(self, target: Target, deployment: Obj) -> Target:
        """The stable Deployment: it serves the canary's share now."""
        return Target(target.namespace, str(plan_record(deployment).get("stable") or target.name))

    async def wait(self, kube: RolloutWaiter, target: Target, *, timeout: float) -> RolloutOutcome:
        """The stable Deployment (``target`` here) rolled out and Ready."""
        return await kube.wait_rollout_complete(target, timeout=timeout, status=self.status)

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        return deployment_status(deployment)

    def cleanup_due(self, deployment: Obj) -> bool:
        return False

    async def cleanup(self, kube: Any, target: Target) -> str:
        return ""
