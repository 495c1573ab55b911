"""The deployment, replica-set and endpoints controllers of a real cluster, over a ``Store``.

rollbackd's decisions hinge on what the deployment controller writes: the
``deployment.kubernetes.io/revision`` numbering, the reuse of an old
ReplicaSet on rollback (with its ``revision-history``), the Progressing and
Available conditions that ``kubectl rollout status`` reads, and the pace at
which a RollingUpdate trades old pods for new ones. This module reproduces
that behaviour as the upstream controllers implement it (sync, rolling,
recreate and progress logic of ``pkg/controller/deployment``), on plain JSON
objects, so that kubectl and kubernetes-asyncio see the same answers they
would see from a cluster.

Work is event driven and proportional to change: the store's change stream
feeds a de-duplicating work queue, owner indexes map pods to ReplicaSets to
Deployments, and timers (pod readiness, minReadySeconds, progress deadlines)
re-enqueue single objects. Nothing ever walks the whole cluster after start.

Pod behaviour follows annotations on the pod template, so a rollback restores
it: ``kubesim.rollbackd.io/ready`` ("false": Running but never Ready),
``kubesim.rollbackd.io/ready-after`` ("2s", "500ms"; default
``pod_ready_delay``) and ``kubesim.rollbackd.io/image-pull`` ("fail": Pending
in ImagePullBackOff). Pod deletion is immediate (no graceful termination).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .errors import ApiError
from .store import Obj, Store, clone, rfc3339

log = logging.getLogger(__name__)

DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
PODS = "v1/pods"
SERVICES = "v1/services"
ENDPOINTS = "v1/endpoints"
EVENTS = "v1/events"

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
HASH_LABEL = "pod-template-hash"
# The upstream controller caps revision-history at this many characters.
MAX_REVISION_HISTORY_CHARS = 2000

KNOB_READY = "kubesim.rollbackd.io/ready"
KNOB_READY_AFTER = "kubesim.rollbackd.io/ready-after"
# "fail": every container stays Waiting in ImagePullBackOff (phase Pending, never Ready).
KNOB_IMAGE_PULL = "kubesim.rollbackd.io/image-pull"

COMPONENT = "deployment-controller"
NODE_NAME = "kubesim-node"
NODE_IP = "10.0.0.10"
# Same burst limit as the upstream ReplicaSet controller per sync.
POD_BURST = 500
# The upstream event correlator keeps this many distinct events for aggregation.
EVENT_CACHE_SIZE = 4096

# Condition types, reasons and messages exactly as pkg/controller/deployment/util.
PROGRESSING = "Progressing"
AVAILABLE = "Available"
REASON_NEW_RS = "NewReplicaSetCreated"
REASON_FOUND_RS = "FoundNewReplicaSet"
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

# API defaults the server applies to a Deployment; used when a field is absent.
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
MAX_INT32 = 2**31 - 1

# The alphabet of k8s.io/apimachinery/pkg/util/rand.SafeEncodeString: no vowels, no 0/1/3.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

Item = tuple[str, str, str]  # (kind of work, namespace, name)


# --------------------------------------------------------------- pure helpers


def safe_encode(text: str) -> str:
    """Map each byte onto the vowel-free alphabet the real controller uses for hashes."""
    return "".join(_SAFE_ALPHABET[byte % len(_SAFE_ALPHABET)] for byte in text.encode())


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """A stable pod-template-hash: FNV-1a over canonical JSON, rendered like upstream."""
    data = json.dumps(_without_hash_label(template), sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += f"#{collision_count}"
    value = 0x811C9DC5
    for byte in data.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(value))


def _semantic(value: Any) -> Any:
    """Drop null, empty-object and empty-list fields: Go decodes all of them as "unset".

    kubectl's rollback patch, for example, carries ``creationTimestamp: null``
    in the template; the real controller's semantic DeepEqual ignores it.
    """
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            item = _semantic(item)
            if item is None or item == {} or item == []:
                continue
            result[key] = item
        return result
    if isinstance(value, list):
        return [_semantic(item) for item in value]
    return value


def _without_hash_label(template: Mapping[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = _semantic(dict(template))
    meta = copy.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    labels.pop(HASH_LABEL, None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    if meta:
        copy["metadata"] = meta
    else:
        copy.pop("metadata", None)
    return copy


def equal_ignore_hash(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Templates equal apart from the pod-template-hash label (EqualIgnoreHash)."""
    return _without_hash_label(a or {}) == _without_hash_label(b or {})


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An IntOrString resolved against ``total``: "25%" of 10 is 3 rounded up, 2 rounded down."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid int-or-percent {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """(surge, unavailable) as upstream: both zero means one pod may be unavailable."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, round_up=True)
    unavailable = scaled_value(
        max_unavailable if max_unavailable is not None else 0, desired, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def desired_replicas(d: Mapping[str, Any]) -> int:
    replicas = (d.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def rs_replicas(rs: Mapping[str, Any]) -> int:
    replicas = (rs.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _status_int(obj: Mapping[str, Any], field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def is_rolling_update(d: Mapping[str, Any]) -> bool:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    return strategy.get("type", "RollingUpdate") == "RollingUpdate"


def _rolling_params(d: Mapping[str, Any]) -> tuple[Any, Any]:
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return (
        rolling.get("maxSurge", DEFAULT_MAX_SURGE),
        rolling.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE),
    )


def max_surge(d: Mapping[str, Any]) -> int:
    if not is_rolling_update(d):
        return 0
    surge, unavailable = _rolling_params(d)
    return resolve_fenceposts(surge, unavailable, desired_replicas(d))[0]


def max_unavailable(d: Mapping[str, Any]) -> int:
    replicas = desired_replicas(d)
    if not is_rolling_update(d) or replicas == 0:
        return 0
    surge, unavailable = _rolling_params(d)
    return min(resolve_fenceposts(surge, unavailable, replicas)[1], replicas)


def progress_deadline(d: Mapping[str, Any]) -> int | None:
    """progressDeadlineSeconds, or None when the Deployment has no deadline."""
    value = (d.get("spec") or {}).get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    if value is None or int(value) == MAX_INT32:
        return None
    return int(value)


def min_ready_seconds(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("minReadySeconds") or 0)


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


def parse_duration(text: str) -> float:
    """ "2s", "500ms", "1.5m" as seconds; a bare number is seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}; expected e.g. '2s' or '500ms'")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def image_id(image: str) -> str:
    """A deterministic ``docker-pullable://repo@sha256:...`` for an image reference."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return f"docker-pullable://{repository}@{digest}"
    slash = image.rfind("/")
    colon = image.rfind(":")
    repository = image[:colon] if colon > slash else image
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"docker-pullable://{repository}@sha256:{digest}"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def get_condition(status: Mapping[str, Any], cond_type: str) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == cond_type:
            return dict(condition)
    return None


def new_condition(cond_type: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": cond_type,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def set_condition(status: dict[str, Any], condition: Obj) -> None:
    """SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time."""
    current = get_condition(status, condition["type"])
    if (
        current is not None
        and current.get("status") == condition["status"]
        and current.get("reason") == condition["reason"]
    ):
        return
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, condition["type"])
    status.setdefault("conditions", []).append(condition)


def remove_condition(status: dict[str, Any], cond_type: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != cond_type]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def deployment_complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    replicas = desired_replicas(d)
    return (
        int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
        and int(status.get("availableReplicas") or 0) == replicas
        and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0)
    )


def deployment_progressing(d: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = d.get("status") or {}

    def num(status: Mapping[str, Any], field: str) -> int:
        return int(status.get(field) or 0)

    old_old = num(old, "replicas") - num(old, "updatedReplicas")
    new_old = num(new, "replicas") - num(new, "updatedReplicas")
    return (
        num(new, "updatedReplicas") > num(old, "updatedReplicas")
        or new_old < old_old
        or num(new, "readyReplicas") > num(old, "readyReplicas")
        or num(new, "availableReplicas") > num(old, "availableReplicas")
    )


def deployment_timed_out(d: Mapping[str, Any], new: Mapping[str, Any], now: datetime) -> bool:
    deadline = progress_deadline(d)
    if deadline is None:
        return False
    condition = get_condition(new, PROGRESSING)
    if condition is None or condition.get("reason") == REASON_NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == REASON_TIMED_OUT:
        return True
    since = parse_time(condition.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=deadline) < now


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    condition = get_condition(pod.get("status") or {}, "Ready")
    return condition is not None and condition.get("status") == "True"


def pod_ready_since(pod: Mapping[str, Any]) -> datetime | None:
    condition = get_condition(pod.get("status") or {}, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def is_pod_available(pod: Mapping[str, Any], min_ready: int, now: datetime) -> bool:
    """Ready for longer than minReadySeconds (strictly, as upstream)."""
    if not is_pod_ready(pod):
        return False
    if min_ready == 0:
        return True
    since = pod_ready_since(pod)
    return since is not None and since + timedelta(seconds=min_ready) < now


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _is_controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner_uid


def _owner_ref(owner: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.setdefault("metadata", {})
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    annotations: dict[str, str] = meta["annotations"]
    return annotations


def _by_creation(rs: Mapping[str, Any]) -> tuple[str, str]:
    meta = rs["metadata"]
    return (meta.get("creationTimestamp") or "", meta["name"])


def set_new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy annotations, raise the revision, keep the history."""
    changed = False
    rs_annotations = _annotations(rs)
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
            _append_revision_history(rs_annotations, old_text)
    if not exists:
        desired = desired_replicas(d)
        if set_replicas_annotations(rs, desired, desired + max_surge(d)):
            changed = True
    return changed


def _append_revision_history(annotations: dict[str, str], old_revision: str) -> None:
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
    annotations = _annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed


def _int_annotation(obj: Mapping[str, Any], key: str) -> int | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def new_rs_new_replicas(d: Mapping[str, Any], all_rss: list[Obj], new_rs: Mapping[str, Any]) -> int:
    """How far the new ReplicaSet may grow now (NewRSNewReplicas)."""
    replicas = desired_replicas(d)
    if not is_rolling_update(d):
        return replicas
    current = sum(rs_replicas(rs) for rs in all_rss)
    max_total = replicas + max_surge(d)
    if current >= max_total:
        return rs_replicas(new_rs)
    scale_up = min(max_total - current, replicas - rs_replicas(new_rs))
    return rs_replicas(new_rs) + scale_up


def _round_half_away(value: float) -> int:
    return int(value - 0.5) if value < 0 else int(value + 0.5)


def replica_set_proportion(
    d: Mapping[str, Any], rs: Mapping[str, Any], to_add: int, added: int
) -> int:
    """GetReplicaSetProportion: this ReplicaSet's share of a proportional scale."""
    if rs_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if desired_replicas(d) == 0:
        fraction = -rs_replicas(rs)
    else:
        deployment_max = desired_replicas(d) + max_surge(d)
        annotated = _int_annotation(rs, MAX_REPLICAS)
        if annotated is None or annotated == 0:
            annotated = _status_int(d, "replicas")
        if annotated == 0:
            fraction = 0
        else:
            fraction = _round_half_away(rs_replicas(rs) * deployment_max / annotated) - rs_replicas(
                rs
            )
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# ------------------------------------------------------------- work plumbing


class _WorkQueue:
    """FIFO of work items with de-duplication, like client-go's workqueue."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._queued: set[Item] = set()
        self._has_work = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, item: Item) -> None:
        if item in self._queued:
            return
        self._queued.add(item)
        self._items.append(item)
        self._has_work.set()
        self.idle.clear()

    async def get(self) -> Item:
        while not self._items:
            self.idle.set()
            self._has_work.clear()
            await self._has_work.wait()
        item = self._items.popleft()
        self._queued.discard(item)
        return item

    def __len__(self) -> int:
        return len(self._items)


class _Requeue(Exception):
    """A sync that must run again soon (the upstream controller returns an error)."""


# ---------------------------------------------------------------- controller


class Controller:
    """Deployment + ReplicaSet + Endpoints controllers and an event recorder."""

    def __init__(
        self,
        store: Store,
        *,
        pod_ready_delay: float = 0.5,
        resync: float = 0.2,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._pod_ready_delay = pod_ready_delay
        self._resync = resync
        self._clock: Callable[[], datetime] = clock or store.clock
        self._queue: _WorkQueue | None = None
        self._timers: list[tuple[datetime, int, Item]] = []
        self._timer_due: dict[Item, datetime] = {}
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._current: Item | None = None
        # Owner indexes, maintained from the store's change stream.
        self._rs_by_deployment: dict[tuple[str, str], set[str]] = {}
        self._rs_owner: dict[tuple[str, str], str] = {}
        self._pods_by_rs: dict[tuple[str, str], set[str]] = {}
        self._pod_owner: dict[tuple[str, str], str] = {}
        self._pod_labels: dict[str, dict[str, dict[str, str]]] = {}
        self._services: dict[str, dict[str, dict[str, str]]] = {}
        self._events: OrderedDict[tuple[str, str, str, str], str] = OrderedDict()
        self._event_seq = itertools.count()
        self._ip_seq = itertools.count(1)
        self.errors = 0  # syncs that raised unexpectedly; tests assert it stays 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Index what exists, subscribe to changes, start the worker and the timer loop."""
        if self._tasks:
            raise RuntimeError("controller already started")
        self._queue = _WorkQueue()
        self._unsubscribe = self._store.subscribe(self._on_change, copy=False)
        for key in (SERVICES, REPLICASETS, PODS, DEPLOYMENTS):
            for obj in self._store.list(key, copy=False):
                self._on_change("ADDED", key, obj)
        self._tasks = [
            asyncio.create_task(self._work(), name="kubesim-controller-worker"),
            asyncio.create_task(self._tick(), name="kubesim-controller-timers"),
        ]

    async def stop(self) -> None:
        """Unsubscribe and cancel the background tasks, waiting for them to finish."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no reconcile is queued or running and no timer is due (for tests)."""
        queue = self._queue
        if queue is None or not self._tasks:
            raise RuntimeError("controller not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"controller did not settle within {timeout}s")
            await asyncio.wait_for(queue.idle.wait(), remaining)
            # Let the worker finish the item it may have just taken.
            await asyncio.sleep(0)
            if self._fire_due_timers() == 0 and queue.idle.is_set() and self._current is None:
                return

    # ---------------------------------------------------- change routing

    def _enqueue(self, item: Item) -> None:
        if self._queue is not None:
            self._queue.add(item)

    def _schedule(self, due: datetime, item: Item) -> None:
        """Enqueue ``item`` at ``due``; an earlier pending timer for it already covers this one."""
        pending = self._timer_due.get(item)
        if pending is not None and pending <= due:
            return
        self._timer_due[item] = due
        heapq.heappush(self._timers, (due, next(self._seq), item))

    def _fire_due_timers(self) -> int:
        now = self._clock()
        fired = 0
        while self._timers and self._timers[0][0] <= now:
            due, _, item = heapq.heappop(self._timers)
            if self._timer_due.get(item) == due:
                del self._timer_due[item]
            self._enqueue(item)
            fired += 1
        return fired

    def _on_change(self, event_type: str, key: str, obj: Obj) -> None:
        """Route one committed change to the syncs it affects; never does work inline."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        name = meta["name"]
        deleted = event_type == "DELETED"
        if key == DEPLOYMENTS:
            # Its own status writes re-enqueue it too, as upstream: the next pass sees the
            # completed status and cleans up old ReplicaSets.
            if not deleted:
                self._enqueue(("deployment", namespace, name))
        elif key == REPLICASETS:
            self._route_replicaset(namespace, name, obj, deleted)
        elif key == PODS:
            self._route_pod(namespace, name, obj, deleted)
        elif key == SERVICES:
            services = self._services.setdefault(namespace, {})
            if deleted:
                services.pop(name, None)
            else:
                services[name] = dict((obj.get("spec") or {}).get("selector") or {})
            self._enqueue(("endpoints", namespace, name))
        elif key == ENDPOINTS and deleted and name in self._services.get(namespace, {}):
            self._enqueue(("endpoints", namespace, name))

    def _route_replicaset(self, namespace: str, name: str, obj: Obj, deleted: bool) -> None:
        ref = controller_ref(obj)
        owner = ref["name"] if ref and ref.get("kind") == "Deployment" and not deleted else None
        previous = self._rs_owner.pop((namespace, name), None)
        if previous is not None and previous != owner:
            siblings = self._rs_by_deployment.get((namespace, previous))
            if siblings is not None:
                siblings.discard(name)
                if not siblings:
                    del self._rs_by_deployment[(namespace, previous)]
            self._enqueue(("deployment", namespace, previous))
        if owner is not None:
            self._rs_owner[(namespace, name)] = owner
            self._rs_by_deployment.setdefault((namespace, owner), set()).add(name)
            self._enqueue(("deployment", namespace, owner))
        if not deleted and self._current != ("replicaset", namespace, name):
            self._enqueue(("replicaset", namespace, name))

    def _route_pod(self, namespace: str, name: str, obj: Obj, deleted: bool) -> None:
        ref = controller_ref(obj)
        owner = ref["name"] if ref and ref.get("kind") == "ReplicaSet" and not deleted else None
        previous = self._pod_owner.pop((namespace, name), None)
        if previous is not None and previous != owner:
            pods = self._pods_by_rs.get((namespace, previous))
            if pods is not None:
                pods.discard(name)
                if not pods:
                    del self._pods_by_rs[(namespace, previous)]
        for rs_name in {previous, owner}:
            # The ReplicaSet's own sync already accounts for the pods it creates or deletes.
            if rs_name is not None and self._current != ("replicaset", namespace, rs_name):
                self._enqueue(("replicaset", namespace, rs_name))
        if owner is not None:
            self._pod_owner[(namespace, name)] = owner
            self._pods_by_rs.setdefault((namespace, owner), set()).add(name)
        # Endpoints of every Service whose selector matched before or matches now.
        labels_in_ns = self._pod_labels.setdefault(namespace, {})
        old_labels = labels_in_ns.pop(name, None)
        new_labels = None if deleted else dict(obj["metadata"].get("labels") or {})
        if new_labels is not None:
            labels_in_ns[name] = new_labels
        elif not labels_in_ns:
            del self._pod_labels[namespace]
        for service, selector in self._services.get(namespace, {}).items():
            if selector and any(
                labels is not None and _selects(selector, labels)
                for labels in (old_labels, new_labels)
            ):
                self._enqueue(("endpoints", namespace, service))

    # ------------------------------------------------------- worker loops

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            self._current = item
            try:
                self._process(item)
            except _Requeue:
                self._schedule(self._clock() + timedelta(seconds=1), item)
            except ApiError as error:
                # A concurrent client write or deletion: the next event or retry resolves it.
                log.debug("kubesim controller: %s %s/%s: %s", *item, error.message)
                self._schedule(self._clock() + timedelta(seconds=1), item)
            except Exception:
                self.errors += 1
                log.exception("kubesim controller: sync of %s %s/%s failed", *item)
            finally:
                self._current = None
            # Yield so the API server stays responsive while a large batch drains.
            await asyncio.sleep(0)

    async def _tick(self) -> None:
        while True:
            self._fire_due_timers()
            delay = self._resync
            if self._timers:
                until_next = (self._timers[0][0] - self._clock()).total_seconds()
                delay = min(delay, max(until_next, 0.005))
            await asyncio.sleep(delay)

    def _process(self, item: Item) -> None:
        kind, namespace, name = item
        if kind == "deployment":
            self._sync_deployment(namespace, name)
        elif kind == "replicaset":
            self._sync_replicaset(namespace, name)
        elif kind == "pod-ready":
            self._make_pod_ready(namespace, name)
        elif kind == "endpoints":
            self._sync_endpoints(namespace, name)

    # ------------------------------------------------------------ writes

    def _now(self) -> str:
        return rfc3339(self._clock())

    def _save(self, key: str, obj: Obj, *, status: bool = False) -> None:
        """Write ``obj`` and carry the new resourceVersion back into it."""
        saved = self._store.update(key, obj, subresource="status" if status else None)
        obj["metadata"]["resourceVersion"] = saved["metadata"]["resourceVersion"]
        if "generation" in saved["metadata"]:
            obj["metadata"]["generation"] = saved["metadata"]["generation"]

    def _save_deployment(self, d: Obj) -> None:
        """Metadata (revision annotation) and status; the real controller does both via UpdateStatus."""
        self._save(DEPLOYMENTS, d)
        self._save(DEPLOYMENTS, d, status=True)

    def _record_event(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        """An aggregated core/v1 Event on ``obj``, as client-go's recorder writes it."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = self._now()
        cache_key = (meta["uid"], event_type, reason, message)
        existing_name = self._events.get(cache_key)
        if existing_name is not None:
            event = self._store.try_get(EVENTS, namespace, existing_name)
            if event is not None:
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = now
                self._store.update(EVENTS, event, check_resource_version=False)
                self._events.move_to_end(cache_key)
                return
        stamp = int(self._clock().timestamp() * 1e9) + next(self._event_seq)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{stamp:x}", "namespace": namespace},
            "involvedObject": {
                "kind": obj.get("kind"),
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj.get("apiVersion"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": COMPONENT,
            "reportingInstance": "",
        }
        created = self._store.create(EVENTS, event)
        self._events[cache_key] = created["metadata"]["name"]
        if len(self._events) > EVENT_CACHE_SIZE:
            self._events.popitem(last=False)

    # ------------------------------------------------- deployment controller

    def _owned_replicasets(self, d: Obj) -> list[Obj]:
        namespace = d["metadata"]["namespace"]
        uid = d["metadata"]["uid"]
        result = []
        for rs_name in sorted(self._rs_by_deployment.get((namespace, d["metadata"]["name"]), ())):
            rs = self._store.peek(REPLICASETS, namespace, rs_name)
            if rs is not None and _is_controlled_by(rs, uid):
                result.append(clone(rs))
        return result

    def _sync_deployment(self, namespace: str, name: str) -> None:
        stored = self._store.peek(DEPLOYMENTS, namespace, name)
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
            self._record_event(
                d,
                "Warning",
                "SelectorOverride",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            if int(d["status"].get("observedGeneration") or 0) < int(d["metadata"]["generation"]):
                d["status"]["observedGeneration"] = d["metadata"]["generation"]
                self._save(DEPLOYMENTS, d, status=True)
            return
        self._check_paused_conditions(d)
        if d["spec"].get("paused"):
            self._sync_scale(d, rs_list)
        elif self._is_scaling_event(d, rs_list):
            self._sync_scale(d, rs_list)
        elif ((d["spec"].get("strategy") or {}).get("type")) == "Recreate":
            self._rollout_recreate(d, rs_list)
        else:
            self._rollout_rolling(d, rs_list)

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
            d["status"], new_condition(PROGRESSING, "Unknown", reason, message, self._now())
        )
        self._save(DEPLOYMENTS, d, status=True)

    def _find_new_rs(self, d: Obj, rs_list: list[Obj]) -> Obj | None:
        """The oldest ReplicaSet whose template equals the Deployment's (FindNewReplicaSet)."""
        template = _without_hash_label(d["spec"].get("template") or {})
        for rs in sorted(rs_list, key=_by_creation):
            if _without_hash_label(rs["spec"].get("template") or {}) == template:
                return rs
        return None

    def _get_all_rss(
        self, d: Obj, rs_list: list[Obj], create: bool
    ) -> tuple[Obj | None, list[Obj]]:
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
                self._save(REPLICASETS, existing)
                return existing
            revision = _annotations(existing).get(REVISION, "")
            needs_update = _annotations(d).get(REVISION) != revision
            _annotations(d)[REVISION] = revision
            if progress_deadline(d) is not None and get_condition(d["status"], PROGRESSING) is None:
                message = f'Found new replica set "{existing["metadata"]["name"]}"'
                set_condition(
                    d["status"],
                    new_condition(PROGRESSING, "True", REASON_FOUND_RS, message, self._now()),
                )
                needs_update = True
            if needs_update:
                self._save_deployment(d)
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
                "ownerReferences": [_owner_ref(d)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        if min_ready_seconds(d):
            rs["spec"]["minReadySeconds"] = min_ready_seconds(d)
        rs["spec"]["replicas"] = new_rs_new_replicas(d, [*old, rs], rs)
        set_new_rs_annotations(d, rs, new_revision, exists=False)
        already_exists = False
        try:
            created = self._store.create(REPLICASETS, rs)
        except ApiError as error:
            if error.reason != "AlreadyExists":
                raise
            clash = self._store.get(REPLICASETS, meta["namespace"], rs["metadata"]["name"])
            if _is_controlled_by(clash, meta["uid"]) and equal_ignore_hash(
                clash["spec"].get("template"), d["spec"]["template"]
            ):
                created, already_exists = clash, True
            else:
                # A hash collision: bump collisionCount so the next hash differs.
                d["status"]["collisionCount"] = int(collision_count or 0) + 1
                self._save(DEPLOYMENTS, d, status=True)
                raise _Requeue() from error
        replicas = rs_replicas(created)
        if not already_exists and replicas > 0:
            self._record_event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
            )
        needs_update = _annotations(d).get(REVISION) != str(new_revision)
        _annotations(d)[REVISION] = str(new_revision)
        if not already_exists and progress_deadline(d) is not None:
            message = f'Created new replica set "{created["metadata"]["name"]}"'
            set_condition(
                d["status"], new_condition(PROGRESSING, "True", REASON_NEW_RS, message, self._now())
            )
            needs_update = True
        if needs_update:
            self._save_deployment(d)
        rs_list.append(created)
        return created

    def _scale_rs_and_record(self, d: Obj, rs: Obj, new_scale: int) -> bool:
        if rs_replicas(rs) == new_scale:
            return False
        operation = "up" if rs_replicas(rs) < new_scale else "down"
        return self._scale_rs(d, rs, new_scale, operation)

    def _scale_rs(self, d: Obj, rs: Obj, new_scale: int, operation: str) -> bool:
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
        self._save(REPLICASETS, rs)
        if size_changes:
            self._record_event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {operation} replica set {rs['metadata']['name']} from {old_scale} to {new_scale}",
            )
        return size_changes

    def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        new_rs, old = self._get_all_rss(d, rs_list, create=False)
        for rs in _active([*old, new_rs]):
            desired = _int_annotation(rs, DESIRED_REPLICAS)
            if desired is not None and desired != desired_replicas(d):
                return True
        return False

    def _sync_scale(self, d: Obj, rs_list: list[Obj]) -> None:
        """sync(): scaling events and paused Deployments; no rollout progress."""
        new_rs, old = self._get_all_rss(d, rs_list, create=False)
        self._scale(d, new_rs, old)
        if d["spec"].get("paused"):
            self._cleanup(d, old)
        all_rss = [*old, new_rs] if new_rs is not None else old
        status = self._calculate_status(all_rss, new_rs, d)
        if status != d["status"]:
            d["status"] = status
            self._save(DEPLOYMENTS, d, status=True)

    def _scale(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        """Proportional scaling across active ReplicaSets (DeploymentController.scale)."""
        replicas = desired_replicas(d)
        active_or_latest = _find_active_or_latest(new_rs, old)
        if active_or_latest is not None:
            if rs_replicas(active_or_latest) != replicas:
                self._scale_rs_and_record(d, active_or_latest, replicas)
            return
        if _is_saturated(d, new_rs):
            for rs in _active(old):
                self._scale_rs_and_record(d, rs, 0)
            return
        if not is_rolling_update(d):
            return
        active = _active([*old, new_rs])
        allowed = replicas + max_surge(d) if replicas > 0 else 0
        to_add = allowed - sum(rs_replicas(rs) for rs in active)
        operation = ""
        if to_add > 0:
            active.sort(key=lambda rs: (-rs_replicas(rs), _neg_key(_by_creation(rs))))
            operation = "up"
        elif to_add < 0:
            active.sort(key=lambda rs: (-rs_replicas(rs), _by_creation(rs)))
            operation = "down"
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            if to_add != 0:
                proportion = replica_set_proportion(d, rs, to_add, added)
                sizes[rs["metadata"]["name"]] = rs_replicas(rs) + proportion
                added += proportion
            else:
                sizes[rs["metadata"]["name"]] = rs_replicas(rs)
        for index, rs in enumerate(active):
            name = rs["metadata"]["name"]
            if index == 0 and to_add != 0:
                sizes[name] = max(sizes[name] + to_add - added, 0)
            self._scale_rs(d, rs, sizes[name], operation)

    def _cleanup(self, d: Obj, old: list[Obj]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = d["spec"].get("revisionHistoryLimit", DEFAULT_REVISION_HISTORY_LIMIT)
        if limit is None or int(limit) == MAX_INT32:
            return
        cleanable = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        diff = len(cleanable) - int(limit)
        if diff <= 0:
            return
        cleanable.sort(key=lambda rs: (revision_of(rs) or 0, _by_creation(rs)))
        for rs in cleanable[:diff]:
            if (
                _status_int(rs, "replicas") != 0
                or rs_replicas(rs) != 0
                or int(rs["metadata"].get("generation") or 0)
                > _status_int(rs, "observedGeneration")
            ):
                continue
            with contextlib.suppress(ApiError):
                self._store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])

    # Rolling update (rolling.go)

    def _rollout_rolling(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old = self._get_all_rss(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [*old, new_rs]
        if self._reconcile_new_rs(d, all_rss, new_rs):
            self._sync_rollout_status(all_rss, new_rs, d)
            return
        if self._reconcile_old_rss(d, all_rss, _active(old), new_rs):
            self._sync_rollout_status(all_rss, new_rs, d)
            return
        if deployment_complete(d, d["status"]):
            self._cleanup(d, old)
        self._sync_rollout_status(all_rss, new_rs, d)

    def _reconcile_new_rs(self, d: Obj, all_rss: list[Obj], new_rs: Obj) -> bool:
        replicas = desired_replicas(d)
        if rs_replicas(new_rs) == replicas:
            return False
        if rs_replicas(new_rs) > replicas:
            return self._scale_rs_and_record(d, new_rs, replicas)
        return self._scale_rs_and_record(d, new_rs, new_rs_new_replicas(d, all_rss, new_rs))

    def _reconcile_old_rss(self, d: Obj, all_rss: list[Obj], old: list[Obj], new_rs: Obj) -> bool:
        if sum(rs_replicas(rs) for rs in old) == 0:
            return False
        min_available = desired_replicas(d) - max_unavailable(d)
        new_unavailable = rs_replicas(new_rs) - _status_int(new_rs, "availableReplicas")
        max_scaled_down = sum(rs_replicas(rs) for rs in all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = self._cleanup_unhealthy(d, old, max_scaled_down)
        scaled = self._scale_down_old_for_rolling(d, [*old, new_rs], old)
        return cleaned + scaled > 0

    def _cleanup_unhealthy(self, d: Obj, old: list[Obj], max_cleanup: int) -> int:
        """Scale away old pods that are not available first: they block nothing if removed."""
        total = 0
        for rs in sorted(old, key=_by_creation):
            if total >= max_cleanup:
                break
            unhealthy = rs_replicas(rs) - _status_int(rs, "availableReplicas")
            if rs_replicas(rs) == 0 or unhealthy <= 0:
                continue
            count = min(max_cleanup - total, unhealthy)
            self._scale_rs_and_record(d, rs, rs_replicas(rs) - count)
            total += count
        return total

    def _scale_down_old_for_rolling(self, d: Obj, all_rss: list[Obj], old: list[Obj]) -> int:
        min_available = desired_replicas(d) - max_unavailable(d)
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rss)
        if available <= min_available:
            return 0
        budget = available - min_available
        total = 0
        for rs in sorted(old, key=_by_creation):
            if total >= budget:
                break
            if rs_replicas(rs) == 0:
                continue
            count = min(rs_replicas(rs), budget - total)
            self._scale_rs_and_record(d, rs, rs_replicas(rs) - count)
            total += count
        return total

    # Recreate (recreate.go)

    def _rollout_recreate(self, d: Obj, rs_list: list[Obj]) -> None:
        new_rs, old = self._get_all_rss(d, rs_list, create=False)
        all_rss = [*old, new_rs] if new_rs is not None else list(old)
        scaled_down = False
        for rs in _active(old):
            scaled_down = self._scale_rs_and_record(d, rs, 0) or scaled_down
        if scaled_down or self._old_pods_running(d, new_rs, old):
            self._sync_rollout_status(all_rss, new_rs, d)
            return
        if new_rs is None:
            new_rs, old = self._get_all_rss(d, rs_list, create=True)
            assert new_rs is not None
            all_rss = [*old, new_rs]
        self._scale_rs_and_record(d, new_rs, desired_replicas(d))
        if deployment_complete(d, d["status"]):
            self._cleanup(d, old)
        self._sync_rollout_status(all_rss, new_rs, d)

    def _old_pods_running(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> bool:
        if sum(_status_int(rs, "replicas") for rs in old) > 0:
            return True
        namespace = d["metadata"]["namespace"]
        for rs in old:
            for pod_name in self._pods_by_rs.get((namespace, rs["metadata"]["name"]), ()):
                pod = self._store.peek(PODS, namespace, pod_name)
                if pod is not None and (pod.get("status") or {}).get("phase") not in (
                    "Failed",
                    "Succeeded",
                ):
                    return True
        return False

    # Status and progress (progress.go, sync.go)

    def _calculate_status(self, all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> Obj:
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rss)
        total = sum(rs_replicas(rs) for rs in all_rss)
        counts = {
            "observedGeneration": int(d["metadata"].get("generation") or 0),
            "replicas": sum(_status_int(rs, "replicas") for rs in all_rss),
            "updatedReplicas": _status_int(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(_status_int(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        # Zero counts are omitted, as the real server's JSON (omitempty) does.
        status: Obj = {key: value for key, value in counts.items() if value}
        conditions = clone(d["status"].get("conditions") or [])
        if conditions:
            status["conditions"] = conditions
        if d["status"].get("collisionCount") is not None:
            status["collisionCount"] = d["status"]["collisionCount"]
        now = self._now()
        if available >= desired_replicas(d) - max_unavailable(d):
            condition = new_condition(
                AVAILABLE, "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", now
            )
        else:
            condition = new_condition(
                AVAILABLE,
                "False",
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            )
        set_condition(status, condition)
        return status

    def _sync_rollout_status(self, all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> None:
        new_status = self._calculate_status(all_rss, new_rs, d)
        deadline = progress_deadline(d)
        if deadline is None:
            remove_condition(new_status, PROGRESSING)
        current = get_condition(d["status"], PROGRESSING)
        complete_before = (
            int(new_status.get("replicas") or 0) == int(new_status.get("updatedReplicas") or 0)
            and current is not None
            and current.get("reason") == REASON_NEW_RS_AVAILABLE
        )
        now_time = self._clock()
        now = rfc3339(now_time)
        rs_name = new_rs["metadata"]["name"] if new_rs is not None else None
        if deadline is not None and not complete_before:
            if deployment_complete(d, new_status):
                message = (
                    f'ReplicaSet "{rs_name}" has successfully progressed.'
                    if rs_name
                    else f'Deployment "{d["metadata"]["name"]}" has successfully progressed.'
                )
                set_condition(
                    new_status,
                    new_condition(PROGRESSING, "True", REASON_NEW_RS_AVAILABLE, message, now),
                )
            elif deployment_progressing(d, new_status):
                message = (
                    f'ReplicaSet "{rs_name}" is progressing.'
                    if rs_name
                    else f'Deployment "{d["metadata"]["name"]}" is progressing.'
                )
                condition = new_condition(PROGRESSING, "True", REASON_RS_UPDATED, message, now)
                if current is not None:
                    if current.get("status") == "True":
                        condition["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(new_status, PROGRESSING)
                set_condition(new_status, condition)
            elif deployment_timed_out(d, new_status, now_time):
                message = (
                    f'ReplicaSet "{rs_name}" has timed out progressing.'
                    if rs_name
                    else f'Deployment "{d["metadata"]["name"]}" has timed out progressing.'
                )
                set_condition(
                    new_status, new_condition(PROGRESSING, "False", REASON_TIMED_OUT, message, now)
                )
        if new_status == d["status"]:
            self._requeue_stuck(d, new_status)
            return
        d["status"] = new_status
        self._save(DEPLOYMENTS, d, status=True)
        self._requeue_stuck(d, new_status)

    def _requeue_stuck(self, d: Obj, new_status: Obj) -> None:
        """Check the deadline again when it can next expire (requeueStuckDeployment)."""
        deadline = progress_deadline(d)
        current = get_condition(d["status"], PROGRESSING)
        if deadline is None or current is None:
            return
        if deployment_complete(d, new_status) or current.get("reason") == REASON_TIMED_OUT:
            return
        since = parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        due = since + timedelta(seconds=deadline + 1)
        self._schedule(due, ("deployment", d["metadata"]["namespace"], d["metadata"]["name"]))

    # ------------------------------------------------- replica set controller

    def _owned_pods(self, rs: Mapping[str, Any]) -> list[Obj]:
        namespace = rs["metadata"]["namespace"]
        uid = rs["metadata"]["uid"]
        pods = []
        for pod_name in sorted(self._pods_by_rs.get((namespace, rs["metadata"]["name"]), ())):
            pod = self._store.peek(PODS, namespace, pod_name)
            if pod is not None and _is_controlled_by(pod, uid):
                pods.append(pod)
        return pods

    def _sync_replicaset(self, namespace: str, name: str) -> None:
        stored = self._store.peek(REPLICASETS, namespace, name)
        if stored is None:
            return
        active = [
            pod
            for pod in self._owned_pods(stored)
            if not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        diff = len(active) - rs_replicas(stored)
        if diff < 0:
            for _ in range(min(-diff, POD_BURST)):
                self._create_pod(stored)
            if -diff > POD_BURST:
                self._enqueue(("replicaset", namespace, name))
        elif diff > 0:
            for pod in sorted(active, key=_deletion_rank)[:diff]:
                with contextlib.suppress(ApiError):
                    self._store.delete(PODS, namespace, pod["metadata"]["name"])
        self._update_rs_status(namespace, name)

    def _update_rs_status(self, namespace: str, name: str) -> None:
        rs = clone(self._store.get(REPLICASETS, namespace, name))
        pods = [p for p in self._owned_pods(rs) if not p["metadata"].get("deletionTimestamp")]
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        now = self._clock()
        min_ready = min_ready_seconds(rs)
        ready = [pod for pod in pods if is_pod_ready(pod)]
        available = [pod for pod in ready if is_pod_available(pod, min_ready, now)]
        counts = {
            "fullyLabeledReplicas": sum(
                1
                for pod in pods
                if all(
                    (pod["metadata"].get("labels") or {}).get(k) == v
                    for k, v in template_labels.items()
                )
            ),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": int(rs["metadata"].get("generation") or 0),
        }
        status: Obj = {"replicas": len(pods)}
        status.update({key: value for key, value in counts.items() if value})
        if (rs.get("status") or {}).get("conditions"):
            status["conditions"] = rs["status"]["conditions"]
        if status != rs.get("status"):
            rs["status"] = status
            self._save(REPLICASETS, rs, status=True)
        # Ready-but-not-yet-available pods become available after minReadySeconds.
        for pod in ready:
            if pod in available:
                continue
            since = pod_ready_since(pod)
            if since is not None:
                due = since + timedelta(seconds=min_ready, milliseconds=1)
                self._schedule(due, ("replicaset", namespace, name))

    def _create_pod(self, rs: Mapping[str, Any]) -> None:
        template = rs["spec"].get("template") or {}
        template_meta = template.get("metadata") or {}
        spec = clone(template.get("spec") or {})
        spec.setdefault("nodeName", NODE_NAME)
        now = self._now()
        index = next(self._ip_seq)
        pod_ip = f"10.{244 + (index >> 16) % 12}.{(index >> 8) & 255}.{index & 255}"
        annotations = clone(template_meta.get("annotations") or {})
        meta: Obj = {
            "generateName": f"{rs['metadata']['name']}-",
            "namespace": rs["metadata"]["namespace"],
            "labels": clone(template_meta.get("labels") or {}),
            "ownerReferences": [_owner_ref(rs)],
        }
        if annotations:
            meta["annotations"] = annotations
        containers = spec.get("containers") or []
        pull_fails = str(annotations.get(KNOB_IMAGE_PULL, "")).lower() == "fail"
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {
                "phase": "Pending" if pull_fails else "Running",
                "conditions": _pod_conditions(ready=False, now=now, containers=containers),
                "hostIP": NODE_IP,
                "hostIPs": [{"ip": NODE_IP}],
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": now,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    _pull_failure_status(container)
                    if pull_fails
                    else _container_status(container, ready=False, started_at=now)
                    for container in containers
                ],
            },
        }
        created = self._store.create(PODS, pod)
        delay = None if pull_fails else self._ready_delay(annotations)
        if delay is None:
            return
        item = ("pod-ready", created["metadata"]["namespace"], created["metadata"]["name"])
        if delay <= 0:
            self._enqueue(item)
        else:
            self._schedule(self._clock() + timedelta(seconds=delay), item)

    def _ready_delay(self, annotations: Mapping[str, str]) -> float | None:
        """Seconds until Ready from the template knobs; None means never."""
        if str(annotations.get(KNOB_READY, "true")).lower() == "false":
            return None
        text = annotations.get(KNOB_READY_AFTER)
        if text is None:
            return self._pod_ready_delay
        try:
            return parse_duration(str(text))
        except ValueError:
            log.warning("kubesim: ignoring %s=%r; using the default delay", KNOB_READY_AFTER, text)
            return self._pod_ready_delay

    def _make_pod_ready(self, namespace: str, name: str) -> None:
        stored = self._store.peek(PODS, namespace, name)
        if stored is None or is_pod_ready(stored) or stored["metadata"].get("deletionTimestamp"):
            return
        pod = clone(stored)
        now = self._now()
        containers = pod["spec"].get("containers") or []
        status = pod["status"]
        status["conditions"] = _pod_conditions(
            ready=True, now=now, containers=containers, previous=status
        )
        for container_status in status.get("containerStatuses") or []:
            container_status["ready"] = True
        self._save(PODS, pod, status=True)

    # --------------------------------------------------- endpoints controller

    def _sync_endpoints(self, namespace: str, name: str) -> None:
        service = self._store.peek(SERVICES, namespace, name)
        existing = self._store.peek(ENDPOINTS, namespace, name)
        if service is None:
            if existing is not None:
                with contextlib.suppress(ApiError):
                    self._store.delete(ENDPOINTS, namespace, name)
            return
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return  # Endpoints of a selector-less Service belong to the user.
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        first_pod: Mapping[str, Any] | None = None
        for pod_name, labels in sorted(self._pod_labels.get(namespace, {}).items()):
            if not _selects(selector, labels):
                continue
            pod = self._store.peek(PODS, namespace, pod_name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                continue
            first_pod = first_pod or pod
            address = {
                "ip": ip,
                "nodeName": (pod.get("spec") or {}).get("nodeName", NODE_NAME),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod_name,
                    "uid": pod["metadata"]["uid"],
                },
            }
            (ready if is_pod_ready(pod) else not_ready).append(address)
        subsets: list[Obj] = []
        if ready or not_ready:
            subset: Obj = {}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
            subset["ports"] = _endpoint_ports(service, first_pod)
            subsets.append(subset)
        endpoints: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace},
        }
        labels = service["metadata"].get("labels")
        if labels:
            endpoints["metadata"]["labels"] = clone(labels)
        if subsets:
            endpoints["subsets"] = subsets
        if existing is None:
            self._store.create(ENDPOINTS, endpoints)
            return
        if existing.get("subsets") == endpoints.get("subsets") and existing["metadata"].get(
            "labels"
        ) == endpoints["metadata"].get("labels"):
            return
        updated = clone(existing)
        updated["metadata"]["labels"] = endpoints["metadata"].get("labels")
        if updated["metadata"]["labels"] is None:
            del updated["metadata"]["labels"]
        updated.pop("subsets", None)
        if subsets:
            updated["subsets"] = subsets
        self._store.update(ENDPOINTS, updated)


# ------------------------------------------------------- small local helpers


def _active(replica_sets: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in replica_sets if rs is not None and rs_replicas(rs) > 0]


def _neg_key(key: tuple[str, str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sort key that orders (timestamp, name) newest first."""
    return (tuple(-ord(c) for c in key[0]), tuple(-ord(c) for c in key[1]))


def _find_active_or_latest(new_rs: Obj | None, old: list[Obj]) -> Obj | None:
    if new_rs is None and not old:
        return None
    newest_first = sorted(old, key=_by_creation, reverse=True)
    active = _active([*newest_first, new_rs])
    if len(active) == 0:
        return new_rs if new_rs is not None else newest_first[0]
    if len(active) == 1:
        return active[0]
    return None


def _is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = _int_annotation(rs, DESIRED_REPLICAS)
    if desired is None:
        return False
    replicas = desired_replicas(d)
    return (
        rs_replicas(rs) == replicas
        and desired == replicas
        and _status_int(rs, "availableReplicas") == replicas
    )


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _deletion_rank(pod: Mapping[str, Any]) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Pods to delete first: not ready, then most recently ready, then newest (ActivePodsWithRanks)."""
    since = pod_ready_since(pod)
    ready_key = tuple(-ord(c) for c in (rfc3339(since) if since else ""))
    created = tuple(-ord(c) for c in (pod["metadata"].get("creationTimestamp") or ""))
    return (1 if is_pod_ready(pod) else 0, ready_key, created)


def _pod_conditions(
    *,
    ready: bool,
    now: str,
    containers: list[Mapping[str, Any]],
    previous: Mapping[str, Any] | None = None,
) -> list[Obj]:
    """The five pod conditions a kubelet reports; Ready and ContainersReady follow ``ready``."""
    unready = ", ".join(str(c.get("name")) for c in containers)
    earlier = {c["type"]: c for c in (previous or {}).get("conditions") or []}

    def condition(cond_type: str, status: bool, *, reason: str | None = None) -> Obj:
        value = "True" if status else "False"
        old = earlier.get(cond_type)
        since = old["lastTransitionTime"] if old and old.get("status") == value else now
        result: Obj = {
            "type": cond_type,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        if not status and reason:
            result["reason"] = reason
            result["message"] = f"containers with unready status: [{unready}]"
        return result

    return [
        condition("PodReadyToStartContainers", True),
        condition("Initialized", True),
        condition("Ready", ready, reason="ContainersNotReady"),
        condition("ContainersReady", ready, reason="ContainersNotReady"),
        condition("PodScheduled", True),
    ]


def _pull_failure_status(container: Mapping[str, Any]) -> Obj:
    """A container whose image cannot be pulled: no imageID, waiting in back-off."""
    image = str(container.get("image") or "")
    return {
        "name": str(container.get("name") or ""),
        "state": {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{image}"',
            }
        },
        "lastState": {},
        "ready": False,
        "restartCount": 0,
        "image": image,
        "imageID": "",
        "started": False,
    }


def _container_status(container: Mapping[str, Any], *, ready: bool, started_at: str) -> Obj:
    image = str(container.get("image") or "")
    name = str(container.get("name") or "")
    container_id = hashlib.sha256(f"{name}:{image}:{started_at}".encode()).hexdigest()
    return {
        "name": name,
        "state": {"running": {"startedAt": started_at}},
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "image": image,
        "imageID": image_id(image),
        "containerID": f"containerd://{container_id}",
        "started": True,
    }


def _endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any] | None) -> list[Obj]:
    """Service ports resolved to the pods' target ports (named ports looked up on the pod)."""
    named: dict[str, int] = {}
    for container in ((pod or {}).get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name"):
                named[port["name"]] = int(port["containerPort"])
    ports: list[Obj] = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            if target not in named:
                continue
            target = named[target]
        entry: Obj = {"port": int(target), "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            entry = {"name": port["name"], **entry}
        ports.append(entry)
    return ports


__all__ = [
    "ANNOTATIONS_TO_SKIP",
    "Controller",
    "equal_ignore_hash",
    "image_id",
    "max_surge",
    "max_unavailable",
    "parse_duration",
    "resolve_fenceposts",
    "scaled_value",
    "set_new_rs_annotations",
    "template_hash",
]
