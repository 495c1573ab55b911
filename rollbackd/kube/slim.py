"""What the watch cache keeps of each object: the fields rollbackd reads, nothing else.

The idea of client-go's ``SetTransform``. At 10 000 Deployments the cache is
most of the daemon's memory, and a decoded JSON object costs several times
its text in Python (a dict per object, a string per value), so each kind is
cut down to what its readers use, in the same Kubernetes JSON shape:

- Deployments: name, namespace, uid, resourceVersion, generation, labels and
  annotations (not ``kubectl.kubernetes.io/last-applied-configuration``, a
  second copy of the object that nothing here reads); spec ``replicas``,
  ``selector``, ``paused`` and the whole ``template``; the status counters
  ``kubectl rollout status`` reads and the Progressing condition's type,
  status, reason and ``lastUpdateTime`` (the pod-health scan compares it).
- ReplicaSets: name, uid, creationTimestamp, the revision annotations, the
  ``rollouts-pod-template-hash`` label (Argo Rollouts' stable and canary), the
  controller reference; the whole ``template``; status ``replicas`` and
  ``availableReplicas``.
- Pods: see :mod:`rollbackd.kube.podrecord` (the name of the controlling
  ReplicaSet, and the status fields pod health reads when it has trouble).

Pod templates are kept whole (they are compared with fresh reads, and a
missing key would be a diff), so they are shared instead: a ReplicaSet's
pod spec equal to its Deployment's is the same object
(:func:`share_pod_spec`, called by the cache), and so are equal pod specs of
different Deployments met close together (:class:`Slim`'s pool: many
Deployments of one chart and image, as large fleets are made). Small equal
label and annotation maps are one object too, and repeated short strings
(keys, values, namespaces, condition words, a Deployment's uid) are
interned. Cached objects are read-only: every reader copies before
changing anything.

Whoever needs a field not listed here reads the object fresh (every write
path does), or adds it here together with a test that says who reads it.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

from rollbackd.model import ANNOTATION_REVISION, ANNOTATION_REVISION_HISTORY

__all__ = ["Slim", "share_pod_spec"]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Longer strings are rarely repeated verbatim; interning them would only cost.
_INTERN_MAX = 128

_DEPLOYMENT_META = ("name", "namespace", "uid", "resourceVersion", "generation")
_DEPLOYMENT_SPEC = ("replicas", "paused")
# With ``conditions``, five keys: a dict of up to five costs 184 bytes, of six 272.
_DEPLOYMENT_STATUS = ("observedGeneration", "replicas", "updatedReplicas", "availableReplicas")
_CONDITION = ("type", "status", "reason", "lastUpdateTime")
# Readers: kubectl rollout status (its reason) and the pod-health scan (its lastUpdateTime).
_CONDITIONS_READ = ("Progressing",)
# Labels and annotations this small are shared between objects when equal.
_SHARED_MAP_ITEMS = 8
# The namespace is the cache key's; with annotations and the owner, five keys.
_REPLICASET_META = ("name", "uid", "creationTimestamp")
_REPLICASET_ANNOTATIONS = (ANNOTATION_REVISION, ANNOTATION_REVISION_HISTORY)
_REPLICASET_STATUS = ("replicas", "availableReplicas")
# Argo Rollouts name their stable and canary ReplicaSets by this label (rollbackd.argo).
_REPLICASET_LABELS = ("rollouts-pod-template-hash",)
_OWNER_REFERENCE = ("apiVersion", "kind", "name", "uid", "controller")


class Slim:
    """The transforms of one watch cache, and what they share between objects.

    Two bounded pools, both "the latest value per key": pod specs by
    fingerprint (container names and images; full equality decides) and
    small string maps (labels, annotations, selectors) by their items. What
    they keep alive beyond the cache is bounded by their sizes; a miss only
    costs the sharing.
    """

    def __init__(self, *, specs: int = 256, maps: int = 4096) -> None:
        self._specs = _Latest(specs)
        self._maps = _Latest(maps)

    def deployment(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A Deployment as the cache keeps it (see the module docstring)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        # Its uid is also every ReplicaSet's owner uid: one string for both.
        slim_meta = _pick(meta, _DEPLOYMENT_META, ("name", "namespace", "uid"))
        self._put_map(slim_meta, meta, "labels")
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            kept = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
            slim_meta["annotations"] = self._map(kept)
        slim_spec = _pick(spec, _DEPLOYMENT_SPEC)
        selector = spec.get("selector")
        if isinstance(selector, dict):
            slim_spec["selector"] = dict(selector)
            self._put_map(slim_spec["selector"], selector, "matchLabels")
        if "template" in spec:
            slim_spec["template"] = self._template(spec["template"])
        slim_status = _pick(status, _DEPLOYMENT_STATUS)
        conditions = status.get("conditions")
        if isinstance(conditions, list):
            slim_status["conditions"] = [
                _pick(c, _CONDITION, ("type", "status", "reason"))
                for c in conditions
                if isinstance(c, dict) and c.get("type") in _CONDITIONS_READ
            ]
        return {"metadata": slim_meta, "spec": slim_spec, "status": slim_status}

    def replicaset(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A ReplicaSet as the cache keeps it (see the module docstring)."""
        meta = obj.get("metadata") or {}
        slim_meta = _pick(meta, _REPLICASET_META, ("name",))
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            kept = {k: annotations[k] for k in _REPLICASET_ANNOTATIONS if k in annotations}
            slim_meta["annotations"] = self._map(kept)
        labels = meta.get("labels")
        if isinstance(labels, dict) and any(k in labels for k in _REPLICASET_LABELS):
            slim_meta["labels"] = {
                k: _intern_value(labels[k]) for k in _REPLICASET_LABELS if k in labels
            }
        owner = _controller_reference(meta.get("ownerReferences"))
        if owner is not None:
            slim_meta["ownerReferences"] = [owner]
        spec = obj.get("spec") or {}
        slim: dict[str, Any] = {"metadata": slim_meta, "spec": {}}
        if "template" in spec:
            slim["spec"]["template"] = self._template(spec["template"])
        slim["status"] = _pick(obj.get("status") or {}, _REPLICASET_STATUS)
        return slim

    def _template(self, template: Any) -> Any:
        """A pod template, whole: its metadata's maps shared, its spec shared when equal."""
        if not isinstance(template, dict):
            return template
        slim = dict(template)
        meta = template.get("metadata")
        if isinstance(meta, dict):
            slim["metadata"] = dict(meta)
            for key in ("labels", "annotations"):
                self._put_map(slim["metadata"], meta, key)
        spec = template.get("spec")
        if isinstance(spec, dict):
            slim["spec"] = self._specs.share(_fingerprint(spec), spec)
        return slim

    def _put_map(self, target: dict[str, Any], source: Mapping[str, Any], key: str) -> None:
        value = source.get(key)
        if isinstance(value, dict):
            target[key] = self._map(value)

    def _map(self, mapping: Mapping[Any, Any]) -> dict[Any, Any]:
        """Labels or annotations: interned strings; a small map equal to a recent one is it."""
        if len(mapping) > _SHARED_MAP_ITEMS or not all(
            type(k) is str and type(v) is str for k, v in mapping.items()
        ):
            return {_intern_value(k): _intern_value(v) for k, v in mapping.items()}
        # Looked up before anything is built: most maps repeat (labels in three places).
        key = tuple(chain.from_iterable(mapping.items()))
        known: dict[str, str] | None = self._maps.get(key)
        if known is None:
            known = {_intern(k): _intern(v) for k, v in mapping.items()}
            self._maps.put(key, known)
        return known


def share_pod_spec(obj: dict[str, Any], others: Iterable[Mapping[str, Any] | None]) -> None:
    """Point ``obj``'s pod spec at an equal one of ``others`` (its family), if any.

    ``obj`` is a slim object not yet stored (the cache owns it); equal specs
    compare in microseconds and a Deployment's usually equals its current
    ReplicaSet's, which then costs nothing twice, however many other pod
    specs the pool met in between.
    """
    template = obj.get("spec", {}).get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return
    mine = template["spec"]
    for other in others:
        theirs = ((other or {}).get("spec", {}).get("template") or {}).get("spec")
        if theirs is not None and theirs is not mine and theirs == mine:
            template["spec"] = theirs
            return


class _Latest:
    """The latest value per key, for the last ``size`` keys used (least recently used goes)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._latest: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        """The value held for ``key`` (now the most recently used), or None."""
        known = self._latest.get(key)
        if known is not None:
            self._latest.move_to_end(key)
        return known

    def put(self, key: Any, value: Any) -> None:
        self._latest[key] = value
        self._latest.move_to_end(key)
        if len(self._latest) > self._size:
            self._latest.popitem(last=False)

    def share(self, key: Any, value: Any) -> Any:
        """The value held for ``key`` when it equals ``value``; else ``value``, now held."""
        known = self.get(key)
        if known is not None and (known is value or known == value):
            return known
        self.put(key, value)
        return value


def _fingerprint(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    containers = spec.get("containers")
    found = containers if isinstance(containers, list) else []
    return len(spec), *(
        (str(c.get("name")), str(c.get("image"))) for c in found if isinstance(c, dict)
    )


# -- helpers -------------------------------------------------------------------------------


def _pick(
    source: Mapping[str, Any], keys: tuple[str, ...], words: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``keys`` of ``source`` that are present; the values of ``words`` interned."""
    picked = {k: source[k] for k in keys if k in source}
    for key in words:
        if key in picked:
            picked[key] = _intern_value(picked[key])
    return picked


def _intern(text: str) -> str:
    return sys.intern(text) if len(text) <= _INTERN_MAX else text


def _intern_value(value: Any) -> Any:
    return _intern(value) if isinstance(value, str) else value


def _controller_reference(refs: Any) -> dict[str, Any] | None:
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller"):
            return _pick(ref, _OWNER_REFERENCE, ("apiVersion", "kind", "name", "uid"))
    return None
