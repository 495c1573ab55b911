"""The deployment controller's sync (sync.go): find or create the new ReplicaSet, scale, clean up.

rollbackd's decisions hinge on what this controller writes: the
``deployment.kubernetes.io/revision`` numbering, the reuse of an old
ReplicaSet on rollback (with its ``revision-history``), the Progressing and
Available conditions that ``kubectl rollout status`` reads, and the pace at
which a RollingUpdate trades old pods for new ones. ``sync`` routes a
Deployment to a scaling pass (``scaling``), a Recreate (``recreate``) or a
RollingUpdate (``rolling``) step; ``progress`` writes its status.
"""

from __future__ import annotations

import contextlib
import logging

from ..errors import ApiError
from ..store import Obj, clone
from .context import Context
from .objects import (
    DEPLOYMENTS,
    REPLICASETS,
    annotations_of,
    by_creation,
    get_condition,
    int_annotation,
    is_controlled_by,
    new_condition,
    owner_ref,
    set_condition,
    status_int,
)
from .podtemplate import HASH_LABEL, equal_ignore_hash, template_hash, without_hash_label
from .progress import (
    PROGRESSING,
    REASON_FOUND_RS,
    REASON_NEW_RS,
    REASON_PAUSED,
    REASON_RESUMED,
    REASON_TIMED_OUT,
    calculate_status,
)
from .recreate import rollout_recreate
from .replicas import (
    DEFAULT_REVISION_HISTORY_LIMIT,
    MAX_INT32,
    desired_replicas,
    max_surge,
    min_ready_seconds,
    new_rs_new_replicas,
    progress_deadline,
    rs_replicas,
)
from .revisions import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    REVISION,
    max_revision,
    revision_of,
    set_new_rs_annotations,
    set_replicas_annotations,
)
from .rolling import rollout_rolling
from .scaling import active_replica_sets, scale
from .workqueue import Requeue

log = logging.getLogger(__name__)


class DeploymentController:
    """Reconciles one Deployment at a time against its ReplicaSets."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> Context:
        return self._ctx

    def sync(self, namespace: str, name: str) -> None:
        stored = self._ctx.store.peek(DEPLOYMENTS, namespace, name)
        if stored is None:
            return
        d = clone(stored)
        if not isinstance(d.get("status"), dict):
            d["status"] = {}
        spec = d.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
            # The real API server rejects this at admission; never crash on it here.
            log.warning(
                "kubesim controller: deployment %s/%s has no spec.template", namespace, name
            )
            return
        rs_list = self._owned_replicasets(d)
        selector = spec.get("selector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            self._ctx.record_event(
                d,
                "Warning",
                "SelectorOverride",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            if int(d["status"].get("observedGeneration") or 0) < int(d["metadata"]["generation"]):
                d["status"]["observedGeneration"] = d["metadata"]["generation"]
                self._ctx.save(DEPLOYMENTS, d, status=True)
            return
        self._check_paused_conditions(d)
        if d["spec"].get("paused"):
            self._sync_scale(d, rs_list)
        elif self._is_scaling_event(d, rs_list):
            self._sync_scale(d, rs_list)
        elif ((d["spec"].get("strategy") or {}).get("type")) == "Recreate":
            rollout_recreate(self, d, rs_list)
        else:
            rollout_rolling(self, d, rs_list)

    def _check_paused_conditions(self, d: Obj) -> None:
        if progress_deadline(d) is None:
            return
        condition = get_condition(d["status"], PROGRESSING)
        if condition is not None and condition.get("reason") == REASON_TIMED_OUT:
            return
        paused_exists = condition is not None and condition.get("reason") == REASON_PAUSED
        if d["spec"].get("paused") and not paused_exists:
            reason, message = REASON_PAUSED, "Deployment is paused"
        elif not d["spec"].get("paused") and paused_exists:
            reason, message = REASON_RESUMED, "Deployment is resumed"
        else:
            return
        set_condition(
            d["status"], new_condition(PROGRESSING, "Unknown", reason, message, self._ctx.now())
        )
        self._ctx.save(DEPLOYMENTS, d, status=True)

    def _owned_replicasets(self, d: Obj) -> list[Obj]:
        namespace = d["metadata"]["namespace"]
        uid = d["metadata"]["uid"]
        result = []
        for rs_name in sorted(
            self._ctx.index.rs_by_deployment.get((namespace, d["metadata"]["name"]), ())
        ):
            rs = self._ctx.store.peek(REPLICASETS, namespace, rs_name)
            if rs is not None and is_controlled_by(rs, uid):
                result.append(clone(rs))
        return result

    def save_deployment(self, d: Obj) -> None:
        """Metadata (revision annotation) and status; the real controller does both via UpdateStatus."""
        self._ctx.save(DEPLOYMENTS, d)
        self._ctx.save(DEPLOYMENTS, d, status=True)

    def _find_new_rs(self, d: Obj, rs_list: list[Obj]) -> Obj | None:
        """The oldest ReplicaSet whose template equals the Deployment's (FindNewReplicaSet)."""
        template = without_hash_label(d["spec"].get("template") or {})
        for rs in sorted(rs_list, key=by_creation):
            if without_hash_label(rs["spec"].get("template") or {}) == template:
                return rs
        return None

    def get_all_rss(self, d: Obj, rs_list: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        """getAllReplicaSetsAndSyncRevision: the new RS (maybe created) and all old ones."""
        existing = self._find_new_rs(d, rs_list)
        old = [rs for rs in rs_list if rs is not existing]
        return self._get_new_rs(d, rs_list, old, existing, create), old

    def _get_new_rs(
        self, d: Obj, rs_list: list[Obj], old: list[Obj], existing: Obj | None, create: bool
    ) -> Obj | None:
        new_revision = max_revision(old) + 1
        if existing is not None:
            changed = set_new_rs_annotations(d, existing, new_revision, exists=True)
            min_ready = min_ready_seconds(d)
            if changed or min_ready_seconds(existing) != min_ready:
                if min_ready:
                    existing["spec"]["minReadySeconds"] = min_ready
                else:
                    existing["spec"].pop("minReadySeconds", None)
                self._ctx.save(REPLICASETS, existing)
                return existing
            found = None
            if progress_deadline(d) is not None and get_condition(d["status"], PROGRESSING) is None:
                found = (REASON_FOUND_RS, f'Found new replica set "{existing["metadata"]["name"]}"')
            self._adopt_revision(d, annotations_of(existing).get(REVISION, ""), found)
            return existing
        if not create:
            return None
        return self._create_new_rs(d, rs_list, old, new_revision)

    def _create_new_rs(self, d: Obj, rs_list: list[Obj], old: list[Obj], new_revision: int) -> Obj:
        meta = d["metadata"]
        template = clone(d["spec"]["template"])
        collision_count = d["status"].get("collisionCount")
        pod_hash = template_hash(template, collision_count)
        template.setdefault("metadata", {})
        labels = dict(template["metadata"].get("labels") or {})
        labels[HASH_LABEL] = pod_hash
        template["metadata"]["labels"] = labels
        selector = clone(d["spec"]["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": dict(labels),
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if min_ready_seconds(d):
            rs["spec"]["minReadySeconds"] = min_ready_seconds(d)
        rs["spec"]["replicas"] = new_rs_new_replicas(d, [*old, rs], rs)
        set_new_rs_annotations(d, rs, new_revision, exists=False)
        already_exists = False
        try:
            created = self._ctx.store.create(REPLICASETS, rs)
        except ApiError as error:
            if error.reason != "AlreadyExists":
                raise
            clash = self._ctx.store.get(REPLICASETS, meta["namespace"], rs["metadata"]["name"])
            if is_controlled_by(clash, meta["uid"]) and equal_ignore_hash(
                clash["spec"].get("template"), d["spec"]["template"]
            ):
                created, already_exists = clash, True
            else:
                # A hash collision: bump collisionCount so the next hash differs.
                d["status"]["collisionCount"] = int(collision_count or 0) + 1
                self._ctx.save(DEPLOYMENTS, d, status=True)
                raise Requeue() from error
        replicas = rs_replicas(created)
        if not already_exists and replicas > 0:
            self._ctx.record_event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
            )
        created_now = None
        if not already_exists and progress_deadline(d) is not None:
            created_now = (
                REASON_NEW_RS,
                f'Created new replica set "{created["metadata"]["name"]}"',
            )
        self._adopt_revision(d, str(new_revision), created_now)
        rs_list.append(created)
        return created

    def _adopt_revision(self, d: Obj, revision: str, progressing: tuple[str, str] | None) -> None:
        """Put the new ReplicaSet's revision on the Deployment, and a Progressing (reason,
        message) when given; saved only when something changed."""
        needs_update = annotations_of(d).get(REVISION) != revision
        annotations_of(d)[REVISION] = revision
        if progressing is not None:
            reason, message = progressing
            set_condition(
                d["status"], new_condition(PROGRESSING, "True", reason, message, self._ctx.now())
            )
            needs_update = True
        if needs_update:
            self.save_deployment(d)

    def scale_rs_and_record(self, d: Obj, rs: Obj, new_scale: int) -> bool:
        if rs_replicas(rs) == new_scale:
            return False
        operation = "up" if rs_replicas(rs) < new_scale else "down"
        return self.scale_rs(d, rs, new_scale, operation)

    def scale_rs(self, d: Obj, rs: Obj, new_scale: int, operation: str) -> bool:
        size_changes = rs_replicas(rs) != new_scale
        desired = desired_replicas(d)
        max_replicas = desired + max_surge(d)
        annotations = (rs["metadata"].get("annotations")) or {}
        annotations_change = annotations.get(DESIRED_REPLICAS) != str(desired) or annotations.get(
            MAX_REPLICAS
        ) != str(max_replicas)
        if not (size_changes or annotations_change):
            return False
        old_scale = rs_replicas(rs)
        rs["spec"]["replicas"] = new_scale
        set_replicas_annotations(rs, desired, max_replicas)
        self._ctx.save(REPLICASETS, rs)
        if size_changes:
            self._ctx.record_event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {operation} replica set {rs['metadata']['name']} from {old_scale} to {new_scale}",
            )
        return size_changes

    def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        new_rs, old = self.get_all_rss(d, rs_list, create=False)
        for rs in active_replica_sets([*old, new_rs]):
            desired = int_annotation(rs, DESIRED_REPLICAS)
            if desired is not None and desired != desired_replicas(d):
                return True
        return False

    def _sync_scale(self, d: Obj, rs_list: list[Obj]) -> None:
        """sync(): scaling events and paused Deployments; no rollout progress."""
        new_rs, old = self.get_all_rss(d, rs_list, create=False)
        scale(self, d, new_rs, old)
        if d["spec"].get("paused"):
            self.cleanup(d, old)
        all_rss = [*old, new_rs] if new_rs is not None else old
        status = calculate_status(self._ctx, all_rss, new_rs, d)
        if status != d["status"]:
            d["status"] = status
            self._ctx.save(DEPLOYMENTS, d, status=True)

    def cleanup(self, d: Obj, old: list[Obj]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = d["spec"].get("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
        if limit is None or int(limit) == MAX_INT32:
            return
        cleanable = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        diff = len(cleanable) - int(limit)
        if diff <= 0:
            return
        cleanable.sort(key=lambda rs: (revision_of(rs) or 0, by_creation(rs)))
        for rs in cleanable[:diff]:
            if (
                status_int(rs, "replicas") != 0
                or rs_replicas(rs) != 0
                or int(rs["metadata"].get("generation") or 0) > status_int(rs, "observedGeneration")
            ):
                continue
            with contextlib.suppress(ApiError):
                self._ctx.store.delete(
                    REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"]
                )
