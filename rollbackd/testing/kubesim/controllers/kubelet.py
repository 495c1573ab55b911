"""The one node's kubelet: a created pod runs at once and turns Ready as its knobs say.

Pod behaviour follows annotations on the pod template, so a rollback restores
it: ``kubesim.rollbackd.io/ready`` ("false": Running but never Ready),
``kubesim.rollbackd.io/ready-after`` ("2s", "500ms"; default
``pod_ready_delay``) and ``kubesim.rollbackd.io/image-pull`` ("fail": Pending
in ImagePullBackOff); ``crash-after`` and ``crash-reason`` make containers exit
and restart in back-off (see ``crashloop``). Statuses carry what a real kubelet reports: the five
conditions, container states, image IDs and a pod IP.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..store import Obj, clone
from .context import Context
from .crashloop import CrashLoop
from .objects import PODS
from .pods import is_pod_ready

log = logging.getLogger(__name__)

KNOB_READY = "kubesim.rollbackd.io/ready"
KNOB_READY_AFTER = "kubesim.rollbackd.io/ready-after"
# "fail": every container stays Waiting in ImagePullBackOff (phase Pending, never Ready).
KNOB_IMAGE_PULL = "kubesim.rollbackd.io/image-pull"

NODE_NAME = "kubesim-node"
NODE_IP = "10.0.0.10"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Kubelet:
    """Starts the pods the ReplicaSet controller creates and makes them Ready later."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._ip_seq = itertools.count(1)
        self.crashes = CrashLoop(ctx, self._ready_delay)

    def run(self, pod: Obj) -> None:
        """Create ``pod`` (metadata and spec from its ReplicaSet) running on the node."""
        ctx = self._ctx
        spec = pod["spec"]
        spec.setdefault("nodeName", NODE_NAME)
        now = ctx.now()
        index = next(self._ip_seq)
        pod_ip = f"10.{244 + (index >> 16) % 12}.{(index >> 8) & 255}.{index & 255}"
        annotations = pod["metadata"].get("annotations") or {}
        containers = spec.get("containers") or []
        pull_fails = str(annotations.get(KNOB_IMAGE_PULL, "")).lower() == "fail"
        pod["status"] = {
            "phase": "Pending" if pull_fails else "Running",
            "conditions": pod_conditions(ready=False, now=now, containers=containers),
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "qosClass": "BestEffort",
            "containerStatuses": [
                pull_failure_status(container)
                if pull_fails
                else container_status(container, ready=False, started_at=now)
                for container in containers
            ],
        }
        created = ctx.store.create(PODS, pod)
        if not pull_fails:
            self.crashes.started(created)
        delay = None if pull_fails else self._ready_delay(annotations)
        if delay is None:
            return
        item = ("pod-ready", created["metadata"]["namespace"], created["metadata"]["name"])
        if delay <= 0:
            ctx.enqueue(item)
        else:
            ctx.schedule_in(delay, item)

    def _ready_delay(self, annotations: Mapping[str, str]) -> float | None:
        """Seconds until Ready from the template knobs; None means never."""
        if str(annotations.get(KNOB_READY, "true")).lower() == "false":
            return None
        text = annotations.get(KNOB_READY_AFTER)
        if text is None:
            return self._ctx.pod_ready_delay
        try:
            return parse_duration(str(text))
        except ValueError:
            log.warning("kubesim: ignoring %s=%r; using the default delay", KNOB_READY_AFTER, text)
            return self._ctx.pod_ready_delay

    def make_ready(self, namespace: str, name: str) -> None:
        """The pod's containers pass their readiness probes now."""
        stored = self._ctx.store.peek(PODS, namespace, name)
        if stored is None or is_pod_ready(stored) or stored["metadata"].get("deletionTimestamp"):
            return
        statuses = (stored.get("status") or {}).get("containerStatuses") or []
        if not all("running" in (c.get("state") or {}) for c in statuses):
            return  # an exited container passes no probe (it turns Ready after its restart)
        pod = clone(stored)
        now = self._ctx.now()
        containers = pod["spec"].get("containers") or []
        status = pod["status"]
        status["conditions"] = pod_conditions(
            ready=True, now=now, containers=containers, previous=status
        )
        for container_status in status.get("containerStatuses") or []:
            container_status["ready"] = True
        self._ctx.save(PODS, pod, status=True)


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


def pod_conditions(
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


def pull_failure_status(container: Mapping[str, Any]) -> Obj:
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


def container_status(container: Mapping[str, Any], *, ready: bool, started_at: str) -> Obj:
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
