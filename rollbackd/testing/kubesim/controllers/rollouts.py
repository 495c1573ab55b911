"""The Argo Rollouts controller for basic canaries (rollout/canary.go), enough to prove an abort.

One Rollout at a time, as upstream:

* the ReplicaSet of the current template (``<rollout>-<hash>``, labelled and
  selected by ``rollouts-pod-template-hash``, owned by the Rollout, revision in
  ``rollout.argoproj.io/revision``) is the canary; ``status.stableRS`` names the
  hash of the stable one. The first template is stable at once ("Initial
  deploy"). A new template resets the steps (``currentStepIndex`` 0, abort and
  pauses cleared); going back to the stable template skips them.
* ``spec.strategy.canary.steps``: ``setWeight`` scales canary and stable to
  the replica counts that best approximate the weight (``canary.py``) and
  completes when they are there and available; ``pause`` adds the
  ``CanaryPauseStep`` pause condition and waits for its duration, or, without
  one, for a promotion (``kubectl argo rollouts promote``: the pause
  conditions cleared on the status subresource; ``promote --full`` sets
  ``status.promoteFull`` and skips every step). Past the last step with the
  canary fully available, the canary becomes stable and the old ReplicaSet
  goes to 0.
* ``status.abort: true`` (what ``kubectl argo rollouts abort`` sends: a merge
  patch ``{"status":{"abort":true}}`` on the status subresource) sets the
  weight to 0: the canary is scaled to 0 and the stable ReplicaSet to
  ``spec.replicas``, ``currentStepIndex`` goes back to 0, ``abortedAt`` is
  set, the Progressing condition is False ``RolloutAborted``, and the phase is
  ``Degraded`` with ``RolloutAborted: Rollout aborted update to revision N``.
  Clearing it (``retry``) starts the steps again.
* a spec the controller refuses (``rolloutspec.py``) is reported as the
  ``InvalidSpec`` condition and nothing is scaled.

Limits: scaling jumps to the desired counts (no maxSurge/maxUnavailable
pacing), and blue-green, analysis, experiments, traffic routing, the scale
subresource and progress deadlines are not simulated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..resources import REGISTRY, apply_defaults
from ..selectors import label_selector_string
from ..store import Obj, clone
from . import canary
from .context import Context
from .objects import (
    REPLICASETS,
    by_creation,
    is_controlled_by,
    new_condition,
    owner_ref,
    parse_time,
    remove_condition,
    set_condition,
    status_int,
)
from .podtemplate import template_hash
from .replicas import rs_replicas
from .rolloutspec import duration_seconds, invalid_spec

log = logging.getLogger(__name__)

ROLLOUTS = "argoproj.io/v1alpha1/rollouts"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
PROGRESSING = "Progressing"


def _hash_of(rs: Obj) -> str:
    return str((rs["metadata"].get("labels") or {}).get(HASH_LABEL, ""))


def _revision(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


class RolloutController:
    """Reconciles one Rollout against the ReplicaSets it owns."""

    def __init__(self, ctx: Context, replica_sets_of: Callable[[str, str], list[str]]) -> None:
        self._ctx = ctx
        self._replica_sets_of = replica_sets_of  # the owner index (custom.py)

    def sync(self, namespace: str, name: str) -> None:
        stored = self._ctx.store.peek(ROLLOUTS, namespace, name)
        if stored is None:
            return
        ro = clone(stored)
        if not isinstance(ro.get("status"), dict):
            ro["status"] = {}
        status: Obj = clone(ro["status"])
        error = invalid_spec(ro)
        if error is not None:
            self._invalid(ro, status, f'The Rollout "{name}" is invalid: {error}')
            return
        remove_condition(status, canary.REASON_INVALID_SPEC)
        if "canary" not in ro["spec"]["strategy"]:
            log.debug("kubesim rollouts: %s/%s is blue-green, not simulated", namespace, name)
            return
        owned = self._owned(ro)
        new_rs = self._new_rs(ro, owned)
        pod_hash = _hash_of(new_rs)
        self._reset_on_new_template(ro, status, pod_hash)
        ro["status"] = status
        stable = next(
            (rs for rs in owned if _hash_of(rs) == status["stableRS"] and rs is not new_rs), None
        )
        self._scale(ro, new_rs, stable, owned)
        if stable is not None:
            self._advance(ro, status, new_rs)
        self._write_status(ro, status, new_rs, owned)

    # ----------------------------------------------------------- the steps

    def _reset_on_new_template(self, ro: Obj, status: Obj, pod_hash: str) -> None:
        """A new template restarts the steps; the first one, or the stable one, skips them."""
        steps = len(canary.steps_of(ro))
        if not status.get("stableRS"):
            status["stableRS"] = pod_hash  # "Initial deploy"
        if status.get("currentPodHash") != pod_hash:
            for field in ("abort", "abortedAt", "pauseConditions", "controllerPause"):
                status.pop(field, None)
            status["currentStepIndex"] = steps if pod_hash == status["stableRS"] else 0
            status["currentPodHash"] = pod_hash
        if status.get("promoteFull"):  # promote --full: past every step, abort or not
            for field in ("abort", "pauseConditions", "controllerPause"):
                status.pop(field, None)
            status["currentStepIndex"] = steps
        if status.get("abort"):
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            if status["stableRS"] != pod_hash:
                status["currentStepIndex"] = 0
        elif status.get("stableRS") == pod_hash:
            status["currentStepIndex"] = steps

    def _advance(self, ro: Obj, status: Obj, new_rs: Obj) -> None:
        """Complete the current step when it is done; promote when every step is."""
        if status.get("abort") or ro["spec"].get("paused"):
            return
        steps = canary.steps_of(ro)
        index = canary.step_index(ro)
        if index < len(steps):
            if self._step_done(ro, status, steps[index], new_rs):
                status["currentStepIndex"] = index + 1
                self._ctx.record_event(
                    ro,
                    "Normal",
                    "RolloutStepCompleted",
                    f"Rollout step {index + 1}/{len(steps)} completed",
                )
            return
        if status_int(new_rs, "availableReplicas") >= canary.replicas_of(ro):
            status["stableRS"] = _hash_of(new_rs)
            status.pop("promoteFull", None)
            self._ctx.record_event(
                ro,
                "Normal",
                "RolloutCompleted",
                f"Rollout completed update to revision {_revision(new_rs)}",
            )

    def _step_done(self, ro: Obj, status: Obj, step: dict[str, Any], new_rs: Obj) -> bool:
        if "setWeight" in step:
            return status_int(new_rs, "availableReplicas") == rs_replicas(new_rs)
        if "pause" not in step:
            return True  # analysis, experiments, plugins: not simulated, done at once
        pauses = status.get("pauseConditions") or []
        if not pauses:
            if status.get("controllerPause"):  # promoted: a human cleared the pause
                status.pop("controllerPause", None)
                return True
            status["pauseConditions"] = [
                {"reason": canary.PAUSE_STEP, "startTime": self._ctx.now()}
            ]
            status["controllerPause"] = True
            pauses = status["pauseConditions"]
        seconds = duration_seconds((step.get("pause") or {}).get("duration"))
        started = parse_time(pauses[0].get("startTime"))
        if seconds is None or started is None:
            return False  # an indefinite pause: waits for a promotion
        due = started + timedelta(seconds=seconds)
        if self._ctx.clock() >= due:
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            return True
        meta = ro["metadata"]
        self._ctx.schedule(due, ("rollout", meta["namespace"], meta["name"]))
        return False

    # ---------------------------------------------------- ReplicaSets

    def _owned(self, ro: Obj) -> list[Obj]:
        meta = ro["metadata"]
        owned = []
        for rs_name in self._replica_sets_of(meta["namespace"], meta["name"]):
            rs = self._ctx.store.peek(REPLICASETS, meta["namespace"], rs_name)
            if rs is not None and is_controlled_by(rs, meta["uid"]):
                owned.append(clone(rs))
        return owned

    def _new_rs(self, ro: Obj, owned: list[Obj]) -> Obj:
        """The ReplicaSet of the current template, created (with 0 replicas) when missing."""
        template = clone(ro["spec"]["template"])
        pod_hash = template_hash(template, ro["status"].get("collisionCount"))
        for existing in owned:
            if _hash_of(existing) == pod_hash:
                return existing
        meta = ro["metadata"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), HASH_LABEL: pod_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = clone(ro["spec"]["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        revision = max((_revision(rs) for rs in owned), default=0) + 1
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": dict(labels),
                "annotations": {REVISION: str(revision)},
                "ownerReferences": [owner_ref(ro)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        apply_defaults(REGISTRY[REPLICASETS], rs)  # as the API server does on the create
        created = self._ctx.store.create(REPLICASETS, rs)
        owned.append(created)
        if (meta.get("annotations") or {}).get(REVISION) != str(revision):
            meta.setdefault("annotations", {})[REVISION] = str(revision)
            self._ctx.save(ROLLOUTS, ro)
        return created

    def _scale(self, ro: Obj, new_rs: Obj, stable: Obj | None, owned: list[Obj]) -> None:
        replicas = canary.replicas_of(ro)
        if stable is None:
            wanted = {new_rs["metadata"]["name"]: replicas}
        else:
            weight = canary.current_weight(ro)
            canary_count, stable_count = canary.replica_counts(
                replicas, weight, canary.max_surge(ro)
            )
            wanted = {
                new_rs["metadata"]["name"]: canary_count,
                stable["metadata"]["name"]: stable_count,
            }
        for rs in sorted(owned, key=by_creation):
            target = wanted.get(rs["metadata"]["name"], 0)
            if rs_replicas(rs) != target:
                old = rs_replicas(rs)
                rs["spec"]["replicas"] = target
                self._ctx.save(REPLICASETS, rs)
                direction = "up" if target > old else "down"
                self._ctx.record_event(
                    ro,
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled {direction} ReplicaSet {rs['metadata']['name']} "
                    f"(revision {_revision(rs)}) from {old} to {target}",
                )

    # ------------------------------------------------------------- status

    def _write_status(self, ro: Obj, status: Obj, new_rs: Obj, owned: list[Obj]) -> None:
        status["replicas"] = sum(status_int(rs, "replicas") for rs in owned)
        status["updatedReplicas"] = status_int(new_rs, "replicas")
        status["readyReplicas"] = sum(status_int(rs, "readyReplicas") for rs in owned)
        status["availableReplicas"] = sum(status_int(rs, "availableReplicas") for rs in owned)
        status["HPAReplicas"] = status["replicas"]
        status["selector"] = label_selector_string(ro["spec"].get("selector"))
        status["observedGeneration"] = str(ro["metadata"].get("generation", 1))
        status.setdefault("canary", {})
        now = self._ctx.now()
        if status.get("abort"):
            status.setdefault("abortedAt", now)
            message = f"Rollout aborted update to revision {_revision(new_rs)}"
            condition = new_condition(PROGRESSING, "False", canary.REASON_ABORTED, message, now)
            if _set(status, condition):
                self._ctx.record_event(ro, "Warning", canary.REASON_ABORTED, message)
        else:
            status.pop("abortedAt", None)
            rs_name = new_rs["metadata"]["name"]
            message = f'ReplicaSet "{rs_name}" is progressing.'
            condition = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", message, now)
            if status["stableRS"] == status["currentPodHash"] and status["availableReplicas"] >= (
                canary.replicas_of(ro)
            ):
                message = f'ReplicaSet "{rs_name}" has successfully progressed.'
                condition = new_condition(
                    PROGRESSING, "True", "NewReplicaSetAvailable", message, now
                )
            _set(status, condition)
        status["phase"], status["message"] = canary.phase(ro, status)
        self._save_status(ro, status)

    def _invalid(self, ro: Obj, status: Obj, message: str) -> None:
        now = self._ctx.now()
        _set(
            status,
            new_condition(
                canary.REASON_INVALID_SPEC, "True", canary.REASON_INVALID_SPEC, message, now
            ),
        )
        status["observedGeneration"] = str(ro["metadata"].get("generation", 1))
        status["phase"], status["message"] = canary.phase(ro, status)
        self._save_status(ro, status)

    def _save_status(self, ro: Obj, status: Obj) -> None:
        stored = self._ctx.store.peek(ROLLOUTS, ro["metadata"]["namespace"], ro["metadata"]["name"])
        if stored is not None and stored.get("status") == status:
            return
        ro["status"] = status
        self._ctx.save(ROLLOUTS, ro, status=True)


def _set(status: Obj, condition: Obj) -> bool:
    """set_condition, and whether the condition changed (same type, status, reason and message: no)."""
    current = next(
        (c for c in status.get("conditions") or [] if c.get("type") == condition["type"]), None
    )
    if current is not None and all(
        current.get(key) == condition[key] for key in ("status", "reason", "message")
    ):
        return False
    if current is not None and current.get("reason") == condition["reason"]:
        remove_condition(status, condition["type"])  # a new message replaces the condition
    set_condition(status, condition)
    return True


__all__ = ["HASH_LABEL", "REVISION", "ROLLOUTS", "RolloutController"]
