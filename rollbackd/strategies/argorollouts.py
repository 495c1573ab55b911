"""Argo Rollouts rollback: abort the canary, as ``kubectl argo rollouts abort`` does.

The target is the Rollout whose name the breaching metrics carry as
``deployment``. The steps, each idempotent, so a kill between any two is
finished by :meth:`ArgoRolloutsStrategy.resume`:

1. :meth:`plan` (pure, on a fresh read): the canary and stable ReplicaSets;
   already aborted, no canary, no stable ReplicaSet or a malformed Rollout
   is a PlanError with its reason, nothing written;
2. the plan's record (``rollbackd.io/argo-abort``: rollback id, canary and
   stable hashes) on the Rollout, guarded by the read's resourceVersion;
3. a fresh re-read: the canary must still be the planned one (a human who
   promoted or deployed again took over: PlanError ``target_changed``, not
   aborted); then the abort patch, unless ``status.abort`` is already set;
4. :meth:`wait` until the canary ReplicaSet is at 0 and the stable one has
   ``spec.replicas`` Ready pods (:meth:`status`, pure).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from rollbackd.argo import (
    ANNOTATION_ARGO_ABORT,
    RolloutFacts,
    abort_record,
    moved_since,
    replicaset_counts,
    replicasets_by_name,
    rollout_facts,
)
from rollbackd.kube.patch import annotation_ops, precondition
from rollbackd.model import Target
from rollbackd.reasons import ReasonCode
from rollbackd.strategies import Obj, Ops, PlanError, RolloutOutcome, RolloutStatus

__all__ = ["AbortPlan", "ArgoRolloutsKube", "ArgoRolloutsStrategy", "check_approved"]

ARGO_ROLLOUTS = "argo-rollouts"
_POLL = 0.2


class ArgoRolloutsKube(Protocol):
    """The adapter as the abort uses it (:class:`rollbackd.kube.rollouts.RolloutWrites`)."""

    async def read_rollout(self, target: Target) -> dict[str, Any]: ...

    async def rollout_replicasets(self, target: Target) -> list[dict[str, Any]]: ...

    async def patch_rollout(self, target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def abort_rollout(self, target: Target) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AbortPlan:
    """What will be aborted: the journal's ``changes`` and the Rollout's record."""

    rollback_id: str
    rollout: str
    canary_hash: str
    stable_hash: str
    canary_rs: str
    stable_rs: str
    replicas: int

    @property
    def summary(self) -> str:
        return (
            f"aborting Rollout {self.rollout}: canary {self.canary_rs} to 0, "
            f"stable {self.stable_rs} to {self.replicas}"
        )

    @property
    def proposal(self) -> str:
        """What an approval would do, in the words of the approval page."""
        return (
            f"abort Rollout {self.rollout}: canary {self.canary_hash} to 0, "
            f"stable {self.stable_hash} keeps serving"
        )

    def changes(self) -> dict[str, Any]:
        return {"strategy": ARGO_ROLLOUTS, **asdict(self)}

    def record(self) -> str:
        """The Rollout's ``rollbackd.io/argo-abort`` annotation."""
        return json.dumps(asdict(self), sort_keys=True)


def _refuse(facts: RolloutFacts) -> PlanError | None:
    """Why nothing is to be aborted, as the PlanError the executor ends with."""
    where = f"Rollout {facts.namespace}/{facts.name}"
    if facts.problem is not None:
        return PlanError(
            facts.problem[0], f"{where} cannot be judged: {facts.problem[1]}; nothing was aborted"
        )
    if facts.aborted:
        return PlanError(ReasonCode.ROLLOUT_ALREADY_ABORTED, f"{where} is already aborted")
    if facts.paused:
        return PlanError(ReasonCode.PAUSED, f"{where} was paused by a human: not aborted")
    if not facts.updating or facts.canary_rs is None:
        return PlanError(ReasonCode.ROLLOUT_NOT_UPDATING, f"{where} has no canary to abort")
    if facts.stable_rs is None:
        return PlanError(
            ReasonCode.ROLLOUT_NO_STABLE,
            f"{where} has no stable ReplicaSet to fall back to: manual rollback needed",
        )
    return None


def check_approved(rollout: Obj, rollback_id: str) -> None:
    """PlanError when ``rollout`` moved from the abort its record of this rollback names.

    That record (an approved proposal) names the canary a human approved:
    another one is not aborted. No record of this rollback: nothing to check.
    """
    proposed = abort_record(rollout, rollback_id)
    moved = moved_since(rollout, proposed) if proposed else None
    if moved is not None:
        meta = rollout.get("metadata") or {}
        raise PlanError(
            moved[0],
            f"Rollout {meta.get('namespace')}/{meta.get('name')} changed since the approved "
            f"proposal: {moved[1]}",
        )


class ArgoRolloutsStrategy:
    """Abort an Argo Rollouts canary and wait for the stable version to serve alone."""

    name = ARGO_ROLLOUTS

    def plan(self, rollout: Obj, replicasets: Sequence[Obj], rollback_id: str) -> AbortPlan:
        """The canary to abort, from a fresh read; PlanError (nothing written) when none."""
        facts = rollout_facts(rollout, replicasets)
        refused = _refuse(facts)
        if refused is not None:
            raise refused
        return AbortPlan(
            rollback_id=rollback_id,
            rollout=f"{facts.namespace}/{facts.name}",
            canary_hash=facts.canary_hash,
            stable_hash=facts.stable_hash,
            canary_rs=str(facts.canary_rs),
            stable_rs=str(facts.stable_rs),
            replicas=facts.replicas,
        )

    def record_ops(
        self, rollout: Obj, plan: AbortPlan, annotations: Mapping[str, str] | None = None
    ) -> Ops:
        """The plan's record (and ``annotations``: the executor's state) on the Rollout,
        guarded by the planning read's resourceVersion."""
        meta = rollout.get("metadata") or {}
        changes = {**(annotations or {}), ANNOTATION_ARGO_ABORT: plan.record()}
        return [
            precondition(meta.get("resourceVersion")),
            *annotation_ops(meta.get("annotations"), changes),
        ]

    async def resume(
        self, kube: ArgoRolloutsKube, target: Target, rollback_id: str, *, timeout: float
    ) -> None:
        """After the record: abort (once) the canary it names, then wait for the stable one."""
        rollout = await kube.read_rollout(target)
        record = abort_record(rollout, rollback_id)
        if not record:
            raise PlanError(ReasonCode.TARGET_CHANGED, f"the abort record of {target} is gone")
        facts = rollout_facts(rollout, await kube.rollout_replicasets(target))
        if facts.problem is not None or facts.canary_hash != record["canary_hash"]:
            now = facts.problem[1] if facts.problem else f"the current hash is {facts.canary_hash}"
            raise PlanError(
                ReasonCode.TARGET_CHANGED,
                f"Rollout {target} changed since the plan (canary {record['canary_hash']} "
                f"planned; {now}): not aborted, a human took over",
            )
        if facts.paused and not facts.aborted:  # a human paused it after the plan: theirs
            raise PlanError(
                ReasonCode.PAUSED,
                f"Rollout {target} was paused by a human since the plan: not aborted",
            )
        if not facts.aborted:
            await kube.abort_rollout(target)
        outcome = await self.wait(kube, target, record, timeout=timeout)
        if not outcome.complete:
            raise PlanError(
                ReasonCode.ROLLOUT_ABORT_NOT_DONE,
                f"Rollout {target} was aborted but {outcome.message} within {timeout:g}s: "
                "manual rollback needed",
            )

    async def wait(
        self,
        kube: ArgoRolloutsKube,
        target: Target,
        record: Mapping[str, Any],
        *,
        timeout: float,
    ) -> RolloutOutcome:
        """Until :meth:`status` says complete, or ``timeout`` (TIMEOUT with the last message)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            outcome = self.status(
                await kube.read_rollout(target), await kube.rollout_replicasets(target), record
            )
            if outcome.complete or loop.time() >= deadline:
                return outcome
            await asyncio.sleep(_POLL)

    def status(
        self, rollout: Obj, replicasets: Sequence[Obj], record: Mapping[str, Any]
    ) -> RolloutOutcome:
        """Complete when the planned canary is at 0 and the stable version is Ready."""
        facts = rollout_facts(rollout, replicasets)
        if facts.problem is not None:
            return RolloutOutcome(RolloutStatus.PROGRESSING, facts.problem[1])
        named = replicasets_by_name(replicasets)
        canary, _ = replicaset_counts(named.get(record.get("canary_rs")))
        _, ready = replicaset_counts(named.get(record.get("stable_rs")))
        if canary > 0:
            return RolloutOutcome(
                RolloutStatus.PROGRESSING, f"canary {record.get('canary_rs')} still has {canary}"
            )
        if ready < facts.replicas:
            return RolloutOutcome(
                RolloutStatus.PROGRESSING,
                f"stable {record.get('stable_rs')} has {ready} of {facts.replicas} pods Ready",
            )
        return RolloutOutcome(
            RolloutStatus.COMPLETE,
            f"canary {record.get('canary_rs')} scaled to 0, stable {record.get('stable_rs')} "
            f"{ready}/{facts.replicas} Ready",
        )
