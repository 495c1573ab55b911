"""Revision bookkeeping on ReplicaSets: the annotations the deployment controller writes.

``deployment.kubernetes.io/revision`` numbers rollouts; a ReplicaSet reused
by a rollback takes the next number and remembers the old ones in
``revision-history``; ``desired-replicas``/``max-replicas`` record the
Deployment's size for proportional scaling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..store import Obj
from .objects import annotations_of
from .replicas import desired_replicas, max_surge

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
DEPRECATED_ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Deployment annotations that are never copied to (or back from) ReplicaSets.
ANNOTATIONS_TO_SKIP = frozenset(
    {
        LAST_APPLIED,
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        DEPRECATED_ROLLBACK_TO,
    }
)
# The upstream controller caps revision-history at this many characters.
MAX_REVISION_HISTORY_CHARS = 2000


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The revision annotation as an int; 0 when absent, None when unparseable."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def max_revision(replica_sets: Iterable[Mapping[str, Any]]) -> int:
    revisions = [revision_of(rs) for rs in replica_sets]
    return max([r for r in revisions if r is not None], default=0)


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy annotations, raise the revision, keep the history."""
    changed = False
    rs_annotations = annotations_of(rs)
    for key, value in ((d["metadata"].get("annotations")) or {}).items():
        if key in ANNOTATIONS_TO_SKIP or rs_annotations.get(key) == value:
            continue
        rs_annotations[key] = value
        changed = True
    had_revision = REVISION in rs_annotations
    old_text = rs_annotations.get(REVISION, "")
    try:
        old_revision = int(old_text) if old_text else 0
    except ValueError:
        old_revision = 0
    if old_revision < new_revision:
        rs_annotations[REVISION] = str(new_revision)
        changed = True
        if had_revision:
            append_revision_history(rs_annotations, old_text)
    if not exists:
        desired = desired_replicas(d)
        if set_replicas_annotations(rs, desired, desired + max_surge(d)):
            changed = True
    return changed


def append_revision_history(annotations: dict[str, str], old_revision: str) -> None:
    history = annotations.get(REVISION_HISTORY, "")
    if not history:
        annotations[REVISION_HISTORY] = old_revision
        return
    entries = history.split(",")
    total = len(history) + len(old_revision) + 1
    start = 0
    while total > MAX_REVISION_HISTORY_CHARS and start < len(entries):
        total -= len(entries[start]) + 1
        start += 1
    if total <= MAX_REVISION_HISTORY_CHARS:
        annotations[REVISION_HISTORY] = ",".join([*entries[start:], old_revision])


def set_replicas_annotations(rs: Obj, desired: int, max_replicas: int) -> bool:
    annotations = annotations_of(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed
