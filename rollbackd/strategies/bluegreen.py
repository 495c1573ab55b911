"""Blue-green rollback: the other colour scaled up and Ready, then the selector switched back.

The target is the live colour's Deployment (its signals breach). The writes,
each guarded by a resourceVersion precondition and each idempotent, so a
kill between any two is finished by :meth:`BlueGreenStrategy.resume`:

1. the target's annotations: the ROLLING_BACK state and the plan's record
   (``rollbackd.io/blue-green``: Service, colours, selector before/after,
   replicas), in one patch;
2. the previous colour scaled to the replicas it had (skipped when it has
   them), then waited for until Ready within the rollout timeout; not Ready:
   PlanError ``previous_color_not_ready``, nothing switched;
3. the Service's selector switched back (skipped when already switched);
   a selector that is neither colour's any more was changed by someone else:
   PlanError, nothing switched.

After ROLLBACK_COMPLETED, :meth:`cleanup` scales the bad colour to 0
(``rollbackd.io/cleanup: keep`` on the Service leaves it) and removes the
record in the same guarded patch, so "cleanup done" and "record gone" are one
fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from rollbackd.bluegreen import ANNOTATION_BLUEGREEN, BLUE_GREEN, BlueGreenFacts, bluegreen_facts
from rollbackd.kube.errors import ConflictError, NotFoundError
from rollbackd.kube.patch import annotation_ops, escape_pointer, precondition
from rollbackd.kube.rollout import deployment_status
from rollbackd.model import Target
from rollbackd.readiness import running_template_hash
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import gitops_owner, revision_of, strip_hash
from rollbackd.state import plan_record as recorded_plan
from rollbackd.state import recorded_owners, with_plan_record
from rollbackd.strategies import (
    Obj,
    Ops,
    PlanError,
    Restore,
    RolloutOutcome,
    RolloutWaiter,
    StrategyKube,
)

__all__ = ["BlueGreenStrategy", "plan_record", "recorded_gitops_owners"]

# Re-reads a guarded write of another object may take when only its status moved.
_ATTEMPTS = 8


def plan_record(deployment: Obj) -> dict[str, Any]:
    """The blue-green record of the rollback recorded on the target; {} when none."""
    return recorded_plan(deployment, ANNOTATION_BLUEGREEN)


def recorded_gitops_owners(deployment: Obj) -> list[dict[str, str]]:
    """GitOps owners beyond the target's that the recorded rollback paused.

    The Service's, and the previous colour's when the rollback scaled it up.
    """
    owned = [("service_owner", "Service", "service"), ("previous_owner", "Deployment", "previous")]
    return recorded_owners(deployment, ANNOTATION_BLUEGREEN, owned)


def _named(objects: Sequence[Obj], name: str) -> Obj:
    """The object of that name among ``objects``; {} when none."""
    return next((o for o in objects if (o.get("metadata") or {}).get("name") == name), {})


def _switchable(deployment: Obj, context: Obj) -> BlueGreenFacts:
    """The blue-green facts of a Deployment whose Service can be switched back; else PlanError."""
    facts = bluegreen_facts(deployment, context.get("services", ()), context.get("deployments", ()))
    if facts is None:
        raise PlanError(
            ReasonCode.STRATEGY_UNKNOWN, "no Service declares blue-green for this Deployment"
        )
    if facts.problem is not None:
        raise PlanError(*facts.problem)
    if not facts.live:
        raise PlanError(
            ReasonCode.NOT_LIVE_COLOR,
            f"Service {facts.service} no longer selects this colour; nothing was switched",
        )
    if facts.previous is None:
        raise PlanError(ReasonCode.NO_PREVIOUS_COLOR, f"{facts.no_previous}; nothing was switched")
    return facts


def _written_besides_target(
    facts: BlueGreenFacts, namespace: str, service: Obj, context: Obj
) -> tuple[dict[str, Obj], list[dict[str, Any]], Obj]:
    """The objects written besides the target, the previous colour's scaling, and that colour.

    Their owner's sync would undo the write: the Service (switched back) and
    the previous colour when it is scaled up ({} for it when it is not).
    """
    others: dict[str, Obj] = {f"Service {namespace}/{facts.service}": service} if service else {}
    scaled: list[dict[str, Any]] = []
    previous: Obj = {}
    if facts.previous_current_replicas < facts.previous_replicas:
        scaled.append(
            {
                "deployment": facts.previous,
                "from": facts.previous_current_replicas,
                "to": facts.previous_replicas,
            }
        )
        previous = _named(context.get("deployments", ()), str(facts.previous))
        if previous:
            others[f"Deployment {namespace}/{facts.previous}"] = previous
    return others, scaled, previous


def _summary(facts: BlueGreenFacts, scaled: Sequence[Mapping[str, Any]]) -> str:
    key = facts.color_label
    summary = f"switching Service {facts.service} selector {key}={facts.live_color} -> " + (
        f"{key}={facts.previous_color} ({facts.previous})"
    )
    if scaled:
        summary += f" after scaling {facts.previous} {scaled[0]['from']} -> {scaled[0]['to']}"
    return summary


class BlueGreenStrategy:
    """Switch a blue-green Service back to the colour that ran before."""

    name = BLUE_GREEN

    async def context(self, kube: StrategyKube, target: Target, deployment: Obj) -> Obj:
        """The namespace's Services and Deployments, read fresh: the plan is made on them."""
        ns = target.namespace
        services = await kube.list_items(f"/api/v1/namespaces/{ns}/services")
        deployments = await kube.list_items(f"/apis/apps/v1/namespaces/{ns}/deployments")
        return {"services": services, "deployments": deployments}

    def plan(
        self,
        deployment: Obj,
        replicasets: Sequence[Obj],
        to_revision: int | None,
        context: Obj | None = None,
        *,
        rollback_id: str = "",  # unused: its record names the state annotation's rollback
    ) -> Restore:
        """The other colour, the switch and the scaling; PlanError when it cannot be done."""
        context = context or {}
        facts = _switchable(deployment, context)
        meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
        target, namespace = meta.get("name", ""), str(meta.get("namespace"))
        services = context.get("services", ())
        service = _named(services, str(facts.service))
        template = spec.get("template") or {}
        key = facts.color_label
        after = {**facts.selector, key: str(facts.previous_color)}
        record = {
            "service": facts.service,
            "color_label": key,
            "from": facts.live_color,
            "to": facts.previous_color,
            "previous": facts.previous,
            "replicas": facts.previous_replicas,
            "cleanup": facts.cleanup,
        }
        others, scaled, previous = _written_besides_target(facts, namespace, service, context)
        # Named on the pages of a resumed rollback: they were paused before this record.
        owned_by = (("service_owner", service), ("previous_owner", previous))
        record.update({key: owner for key, obj in owned_by if (owner := gitops_owner(obj))})
        replicas = int(spec.get("replicas", 1) or 0)
        changes = {
            "strategy": BLUE_GREEN,
            "service": facts.service,
            "selector_before": dict(facts.selector),
            "selector_after": after,
            "replicas_scaled": scaled,
            "cleanup": {"deployment": target, "mode": facts.cleanup, "replicas": replicas},
        }
        return Restore(
            replicaset={"metadata": {"name": facts.previous}},
            to_revision=facts.previous_revision or 0,
            template=strip_hash(facts.previous_template),
            template_hash=running_template_hash(replicasets, template),
            predicted_revision=revision_of(deployment) or 0,
            kept_template=template,
            verify_target=Target(namespace, str(facts.previous)),
            changes={**changes, "record": record},
            summary=_summary(facts, scaled),
            gitops_objects=others,
        )

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """The target's annotations only: the state, the restored record and the plan's record.

        The target's template does not change, so no change-cause is written.
        """
        meta = deployment.get("metadata") or {}
        changes = with_plan_record(annotations, ANNOTATION_BLUEGREEN, restore.changes["record"])
        return [
            precondition(meta["resourceVersion"]),
            *annotation_ops(meta.get("annotations"), changes),
        ]

    async def apply(
        self, kube: StrategyKube, target: Target, patch: Ops, *, timeout: float = 600.0
    ) -> None:
        """The record (a conflict raises ConflictError: the executor re-plans), then the rest."""
        await kube.patch_deployment(target, patch)
        await self.resume(kube, target, await kube.read_deployment(target), timeout=timeout)

    async def resume(
        self, kube: StrategyKube, target: Target, deployment: Obj, *, timeout: float
    ) -> None:
        """Scale the previous colour up, wait until it is Ready, switch the selector back."""
        record = plan_record(deployment)
        if not record:
            raise PlanError(
                ReasonCode.TARGET_CHANGED, "the blue-green record of this rollback is gone"
            )
        previous = Target(target.namespace, str(record["previous"]))
        await self._scale_up(kube, previous, int(record["replicas"]))
        outcome = await kube.wait_rollout_complete(previous, timeout=timeout, status=self.status)
        if not outcome.complete:
            raise PlanError(
                ReasonCode.PREVIOUS_COLOR_NOT_READY,
                f"{previous} did not become Ready within the rollout timeout ({outcome.message}); "
                f"Service {record['service']} was not switched: manual rollback needed",
            )
        await self._switch(kube, target.namespace, record)

    async def _scale_up(self, kube: StrategyKube, previous: Target, replicas: int) -> None:
        for _ in range(_ATTEMPTS):
            current = await kube.read_deployment(previous)
            if int(current.get("spec", {}).get("replicas", 1) or 0) >= replicas:
                return
            ops = [
                precondition(current["metadata"]["resourceVersion"]),
                {"op": "replace", "path": "/spec/replicas", "value": replicas},
            ]
            try:
                await kube.patch_deployment(previous, ops)
                return
            except ConflictError:
                await asyncio.sleep(0.05)  # status churn: re-read and judge again
        raise PlanError(
            ReasonCode.WRITE_CONFLICTS, f"{previous} kept changing while rollbackd scaled it up"
        )

    async def _switch(self, kube: StrategyKube, namespace: str, record: Mapping[str, Any]) -> None:
        """Set the colour key back; only from the colour the plan saw, never over someone else's."""
        key, name = str(record["color_label"]), str(record["service"])
        for _ in range(_ATTEMPTS):
            try:
                service: dict[str, Any] | None = await kube.read_service(namespace, name)
            except NotFoundError:
                service = None
            selector = ((service or {}).get("spec") or {}).get("selector") or {}
            if service is not None and selector.get(key) == record["to"]:
                return  # switched already (a resumed rollback)
            if service is None or selector.get(key) != record["from"]:
                now = "gone" if service is None else f"{key}={selector.get(key)}"
                raise PlanError(
                    ReasonCode.TARGET_CHANGED,
                    f"Service {name} was changed by someone else (selector now {now}, rollbackd "
                    f"expected {key}={record['from']}): not switched, manual rollback needed",
                )
            ops = [
                precondition(service["metadata"]["resourceVersion"]),
                {
                    "op": "replace",
                    "path": f"/spec/selector/{escape_pointer(key)}",
                    "value": record["to"],
                },
            ]
            try:
                await kube.patch_service(namespace, name, ops)
                return
            except ConflictError:
                continue  # re-read: switched by someone else, or only its metadata moved
        raise PlanError(ReasonCode.WRITE_CONFLICTS, f"Service {name} kept changing: not switched")

    def verified(self, target: Target, deployment: Obj) -> Target:
        """The previous colour: its version now serves the Service."""
        record = plan_record(deployment)
        return Target(target.namespace, str(record.get("previous") or target.name))

    async def wait(self, kube: RolloutWaiter, target: Target, *, timeout: float) -> RolloutOutcome:
        """The previous colour (``target`` here) rolled out, like ``kubectl rollout status``."""
        return await kube.wait_rollout_complete(target, timeout=timeout, status=self.status)

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        return deployment_status(deployment)

    def cleanup_due(self, deployment: Obj) -> bool:
        return bool(plan_record(deployment))

    async def cleanup(self, kube: StrategyKube, target: Target) -> str:
        """The bad colour to 0 replicas (or kept) and the record removed, in one guarded patch."""
        for _ in range(_ATTEMPTS):
            deployment = await kube.read_deployment(target)
            record = plan_record(deployment)
            if not record:
                return ""
            meta = deployment["metadata"]
            replicas = int(deployment.get("spec", {}).get("replicas", 1) or 0)
            ops = [
                precondition(meta["resourceVersion"]),
                *annotation_ops(meta.get("annotations"), {ANNOTATION_BLUEGREEN: None}),
            ]
            done = f"kept {target} at {replicas} replicas (cleanup: keep)"
            if record.get("cleanup", "scale-down") == "scale-down":
                ops.append({"op": "replace", "path": "/spec/replicas", "value": 0})
                done = f"scaled {target} {replicas} -> 0"
            try:
                await kube.patch_deployment(target, ops)
                return done
            except ConflictError:
                await asyncio.sleep(0.05)
        raise PlanError(ReasonCode.WRITE_CONFLICTS, f"{target} kept changing: cleanup not done")
