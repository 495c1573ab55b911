"""Argo Rollouts, pure: what a Rollout and its ReplicaSets say about its release.

A basic-canary Rollout keeps two ReplicaSets told apart by the
``rollouts-pod-template-hash`` label: ``status.stableRS`` names the stable
one's hash, ``status.currentPodHash`` the current template's. They differ
while an update is in progress (a canary exists); the release started when
the canary's ReplicaSet was created. Plain JSON in, :class:`RolloutFacts` out;
anything malformed is a ``problem`` (reason code, sentence), never an
exception, so a hostile object escalates with a clear reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollbackd.kube.rollouts import API_GROUP_VERSION
from rollbackd.model import RevisionInfo
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import parse_time

__all__ = [
    "ANNOTATION_ARGO_ABORT",
    "API_GROUP_VERSION",
    "HASH_LABEL",
    "RolloutFacts",
    "abort_record",
    "moved_since",
    "replicaset_counts",
    "replicasets_by_name",
    "rollout_facts",
    "serving_replicaset",
]

HASH_LABEL = "rollouts-pod-template-hash"
# rollbackd's record of an abort it planned, on the Rollout (resume finds it).
ANNOTATION_ARGO_ABORT = "rollbackd.io/argo-abort"


@dataclass(frozen=True)
class RolloutFacts:
    """One Rollout's release, as the decision and the abort read it."""

    namespace: str
    name: str
    resource_version: str = ""
    replicas: int = 0
    stable_hash: str = ""
    canary_hash: str = ""
    aborted: bool = False
    # spec.paused: a human's ``kubectl argo rollouts pause`` (the controller's own
    # step pauses are status.pauseConditions and do not count).
    paused: bool = False
    phase: str = ""
    stable_rs: str | None = None  # the ReplicaSets' names (None: not found)
    canary_rs: str | None = None
    canary_started_at: datetime | None = None  # the canary ReplicaSet's creation
    stable_uid: str = ""  # the ReplicaSets' uids (their pods' controller), "" when not found
    canary_uid: str = ""
    # Malformed input: (reason code, sentence); the other fields are not to be trusted.
    problem: tuple[ReasonCode, str] | None = None

    @property
    def updating(self) -> bool:
        """An update is in progress: the current template is not the stable one."""
        return bool(self.canary_hash) and self.canary_hash != self.stable_hash


def _hash_of(rs: Mapping[str, Any]) -> str:
    labels = (rs.get("metadata") or {}).get("labels") or {}
    return str(labels.get(HASH_LABEL, "")) if isinstance(labels, Mapping) else ""


def _owned(rs: Mapping[str, Any], uid: str) -> bool:
    refs = (rs.get("metadata") or {}).get("ownerReferences") or ()
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs) if uid else True


def _malformed(rollout: Mapping[str, Any]) -> tuple[ReasonCode, str] | None:
    """Why ``rollout`` cannot be judged: no status, a spec the controller refused."""
    spec, status = rollout.get("spec"), rollout.get("status")
    replicas = spec.get("replicas", 1) if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(replicas, int) or replicas < 0:
        return ReasonCode.ROLLOUT_SPEC_INVALID, "its spec is malformed (spec.replicas)"
    if not isinstance(spec.get("paused", False), bool):
        return ReasonCode.ROLLOUT_SPEC_INVALID, "its spec is malformed (spec.paused)"
    # The controller's own verdict first: a refused spec may never get a stable RS.
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, Mapping) and condition.get("type") == "InvalidSpec":
            detail = condition.get("message", "")
            return ReasonCode.ROLLOUT_SPEC_INVALID, f"the controller refused its spec: {detail}"
    if not isinstance(status, Mapping) or not status.get("stableRS"):
        return (
            ReasonCode.ROLLOUT_STATUS_MISSING,
            "it has no status.stableRS: the Argo Rollouts controller has not judged it "
            "(is the controller running?)",
        )
    return None


def replicasets_by_name(replicasets: Sequence[Any]) -> dict[Any, Mapping[str, Any]]:
    """A Rollout's ReplicaSets by name; an entry that is not an object is left out."""
    return {
        (rs.get("metadata") or {}).get("name"): rs for rs in replicasets if isinstance(rs, Mapping)
    }


def rollout_facts(rollout: Mapping[str, Any], replicasets: Sequence[Any]) -> RolloutFacts:
    """The facts of ``rollout`` given the namespace's ReplicaSets (others are ignored)."""
    raw = rollout.get("metadata")
    meta: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    base = RolloutFacts(str(meta.get("namespace", "")), str(meta.get("name", "")))
    problem = _malformed(rollout)
    if problem is not None:
        return RolloutFacts(base.namespace, base.name, problem=problem)
    status, spec = rollout["status"], rollout["spec"]
    uid = str(meta.get("uid", ""))
    owned = {_hash_of(rs): rs for rs in replicasets if isinstance(rs, Mapping) and _owned(rs, uid)}
    stable_hash = str(status["stableRS"])
    canary_hash = str(status.get("currentPodHash") or stable_hash)
    stable, canary = owned.get(stable_hash), owned.get(canary_hash)
    return RolloutFacts(
        namespace=base.namespace,
        name=base.name,
        resource_version=str(meta.get("resourceVersion", "")),
        replicas=int(spec.get("replicas", 1)),
        stable_hash=stable_hash,
        canary_hash=canary_hash,
        aborted=bool(status.get("abort")),
        paused=spec.get("paused") is True,
        phase=str(status.get("phase", "")),
        stable_rs=_rs_name(stable),
        canary_rs=_rs_name(canary),
        canary_started_at=_created_at(canary),
        stable_uid=_rs_uid(stable),
        canary_uid=_rs_uid(canary),
    )


def _rs_name(rs: Mapping[str, Any] | None) -> str | None:
    return rs["metadata"].get("name") if rs else None


def _rs_uid(rs: Mapping[str, Any] | None) -> str:
    return str(rs["metadata"].get("uid") or "") if rs else ""


def _created_at(rs: Mapping[str, Any] | None) -> datetime | None:
    """When ``rs`` was created; None when it is unknown or its timestamp is not one."""
    created = (rs or {}).get("metadata", {}).get("creationTimestamp")
    try:
        return parse_time(created) if isinstance(created, str) else None
    except ValueError:
        return None


def replicaset_counts(rs: Mapping[str, Any] | None) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of a ReplicaSet; (0, 0) when it is gone."""
    if not rs:
        return 0, 0
    spec = int((rs.get("spec") or {}).get("replicas", 0) or 0)
    return spec, int((rs.get("status") or {}).get("readyReplicas", 0) or 0)


def abort_record(rollout: Mapping[str, Any], rollback_id: str) -> dict[str, Any]:
    """The abort record of rollback ``rollback_id`` on ``rollout``; {} when none is its own."""
    annotations = (rollout.get("metadata") or {}).get("annotations") or {}
    try:
        record = json.loads(annotations.get(ANNOTATION_ARGO_ABORT) or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    if not isinstance(record, dict) or record.get("rollback_id") != rollback_id:
        return {}
    return record


def moved_since(
    rollout: Mapping[str, Any], record: Mapping[str, Any]
) -> tuple[ReasonCode, str] | None:
    """How ``rollout`` moved from the canary ``record`` planned to abort; None: it did not.

    Read from the Rollout alone (no ReplicaSets needed): aborted by someone
    else, paused by a human, promoted (no canary any more), a new canary or
    stable version, or a Rollout that cannot be judged any more.
    """
    facts = rollout_facts(rollout, ())
    if facts.problem is not None:
        return facts.problem
    if facts.aborted:
        return ReasonCode.ROLLOUT_ALREADY_ABORTED, "it was aborted by someone else"
    if facts.paused:
        return ReasonCode.PAUSED, "a human paused it (spec.paused) and is in control"
    if not facts.updating:
        return (
            ReasonCode.ROLLOUT_NOT_UPDATING,
            f"it has no canary any more (promoted or undone: stable is {facts.stable_hash})",
        )
    planned = (record.get("canary_hash"), record.get("stable_hash"))
    if (facts.canary_hash, facts.stable_hash) != planned:
        return (
            ReasonCode.TARGET_CHANGED,
            f"its canary is now {facts.canary_hash} over stable {facts.stable_hash}, "
            f"not the proposed {planned[0]} over {planned[1]}",
        )
    return None


def serving_replicaset(facts: RolloutFacts) -> RevisionInfo | None:
    """The ReplicaSet whose pods ``pod_health`` judges: the canary while it runs.

    Once aborted it is the stable one (the canary has no pods left), so a
    streak on the canary resolves when its ReplicaSet stops being current,
    as a Deployment's does after a rollback. None: nothing to judge (no
    release in progress, or a Rollout that cannot be judged).
    """
    if facts.problem is not None or facts.canary_started_at is None or not facts.updating:
        return None
    name, uid = (
        (facts.stable_rs, facts.stable_uid)
        if facts.aborted
        else (facts.canary_rs, facts.canary_uid)
    )
    if not name or not uid:
        return None
    return RevisionInfo(0, name, uid, facts.canary_started_at, {}, ())
