"""The ReplicaSet controller (pkg/controller/replicaset): pods to match the spec, and status.

Too few pods: create up to ``POD_BURST`` per sync (the kubelet runs them).
Too many: delete the least useful first (not ready, then most recently
ready, then newest). Status counts ready and available pods; a pod that is
ready but not yet past ``minReadySeconds`` re-enqueues the ReplicaSet when
it will be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..errors import ApiError
from ..store import Obj, clone
from .context import Context
from .kubelet import Kubelet
from .objects import PODS, REPLICASETS, is_controlled_by, owner_ref
from .pods import deletion_rank, is_pod_available, is_pod_ready, pod_ready_since
from .replicas import min_ready_seconds, rs_replicas

# Same burst limit as the upstream ReplicaSet controller per sync.
POD_BURST = 500


class ReplicaSetController:
    def __init__(self, ctx: Context, kubelet: Kubelet) -> None:
        self._ctx = ctx
        self._kubelet = kubelet

    def _owned_pods(self, rs: Mapping[str, Any]) -> list[Obj]:
        namespace = rs["metadata"]["namespace"]
        uid = rs["metadata"]["uid"]
        pods = []
        names = self._ctx.index.pods_by_rs.get((namespace, rs["metadata"]["name"]), ())
        for pod_name in sorted(names):
            pod = self._ctx.store.peek(PODS, namespace, pod_name)
            if pod is not None and is_controlled_by(pod, uid):
                pods.append(pod)
        return pods

    def sync(self, namespace: str, name: str) -> None:
        stored = self._ctx.store.peek(REPLICASETS, namespace, name)
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
                self._ctx.enqueue(("replicaset", namespace, name))
        elif diff > 0:
            for pod in sorted(active, key=deletion_rank)[:diff]:
                with contextlib.suppress(ApiError):
                    self._ctx.store.delete(PODS, namespace, pod["metadata"]["name"])
        self._update_status(namespace, name)

    def _update_status(self, namespace: str, name: str) -> None:
        rs = clone(self._ctx.store.get(REPLICASETS, namespace, name))
        pods = [p for p in self._owned_pods(rs) if not p["metadata"].get("deletionTimestamp")]
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        now = self._ctx.clock()
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
            self._ctx.save(REPLICASETS, rs, status=True)
        # Ready-but-not-yet-available pods become available after minReadySeconds.
        for pod in ready:
            if pod in available:
                continue
            since = pod_ready_since(pod)
            if since is not None:
                due = since + timedelta(seconds=min_ready, milliseconds=1)
                self._ctx.schedule(due, ("replicaset", namespace, name))

    def _create_pod(self, rs: Mapping[str, Any]) -> None:
        """A pod from the template, owned by ``rs``; the kubelet gives it a status."""
        template = rs["spec"].get("template") or {}
        template_meta = template.get("metadata") or {}
        annotations = clone(template_meta.get("annotations") or {})
        meta: Obj = {
            "generateName": f"{rs['metadata']['name']}-",
            "namespace": rs["metadata"]["namespace"],
            "labels": clone(template_meta.get("labels") or {}),
            "ownerReferences": [owner_ref(rs)],
        }
        if annotations:
            meta["annotations"] = annotations
        spec = clone(template.get("spec") or {})
        self._kubelet.run({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
