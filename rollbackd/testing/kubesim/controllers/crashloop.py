"""Containers that exit: the kubelet's restart loop, as the pod template's knobs say.

``kubesim.rollbackd.io/crash-after`` ("2s", "500ms") makes every container of
the pod exit that long after each start; ``kubesim.rollbackd.io/crash-reason``
says how: ``Error`` (exit code 1, the default) or ``OOMKilled`` (exit code
137, the kernel's OOM killer). The statuses follow a real kubelet's, so
``kubectl get pods`` prints what it prints on a cluster: the first exit shows
its reason (``Error``, ``OOMKilled``) until the container restarts, later
ones ``CrashLoopBackOff`` with the termination kept in ``lastState``, and
RESTARTS counts up with the time of the last one. Back-off doubles from
``BACKOFF_INITIAL`` to ``BACKOFF_MAX`` (a real kubelet: 10 s to 5 min; kubesim
compresses time as it does for readiness).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping

from ..store import Obj, clone
from .context import Context
from .objects import PODS

log = logging.getLogger(__name__)

KNOB_CRASH_AFTER = "kubesim.rollbackd.io/crash-after"
KNOB_CRASH_REASON = "kubesim.rollbackd.io/crash-reason"
EXIT_CODES = {"Error": 1, "OOMKilled": 137}
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 10.0
# The first exit is restarted at once by a real kubelet; its reason shows this long.
FIRST_RESTART = 0.5


def crash_after(annotations: Mapping[str, str]) -> float | None:
    """Seconds each container runs before it exits; None: it does not crash."""
    from .kubelet import parse_duration  # kubelet imports this module

    text = annotations.get(KNOB_CRASH_AFTER)
    if text is None:
        return None
    try:
        return max(parse_duration(str(text)), 0.05)
    except ValueError:
        log.warning("kubesim: ignoring %s=%r; the container does not crash", KNOB_CRASH_AFTER, text)
        return None


def crash_reason(annotations: Mapping[str, str]) -> str:
    reason = str(annotations.get(KNOB_CRASH_REASON, "Error"))
    if reason not in EXIT_CODES:
        log.warning("kubesim: ignoring %s=%r; using Error", KNOB_CRASH_REASON, reason)
        return "Error"
    return reason


def backoff(restarts: int) -> float:
    """Seconds before the next start, after ``restarts`` earlier restarts."""
    if restarts == 0:
        return FIRST_RESTART
    return float(min(BACKOFF_INITIAL * 2 ** (restarts - 1), BACKOFF_MAX))


class CrashLoop:
    """Exits and restarts the containers of pods whose template says they crash."""

    def __init__(
        self, ctx: Context, ready_delay: Callable[[Mapping[str, str]], float | None]
    ) -> None:
        self._ctx = ctx
        # The kubelet's reading of the readiness knobs: a restarted container
        # turns Ready as its first start did.
        self._ready_delay = ready_delay

    def started(self, pod: Obj) -> None:
        """A pod's containers (re)started: schedule their exit if the knobs say so."""
        meta = pod["metadata"]
        seconds = crash_after(meta.get("annotations") or {})
        if seconds is not None:
            self._ctx.schedule_in(seconds, ("pod-crash", meta["namespace"], meta["name"]))

    def crash(self, namespace: str, name: str) -> None:
        """Every running container exits now; the pod is no longer Ready."""
        from .kubelet import pod_conditions  # kubelet imports this module

        pod = self._live(namespace, name)
        if pod is None:
            return
        now = self._ctx.now()
        reason = crash_reason(pod["metadata"].get("annotations") or {})
        statuses = pod["status"].get("containerStatuses") or []
        restarts = 0
        for status in statuses:
            running = (status.get("state") or {}).get("running")
            if running is None:
                continue
            restarts = max(restarts, int(status.get("restartCount") or 0))
            terminated = {
                "exitCode": EXIT_CODES[reason],
                "reason": reason,
                "startedAt": running.get("startedAt"),
                "finishedAt": now,
                "containerID": status.get("containerID", ""),
            }
            status["ready"] = False
            status["started"] = False
            if int(status.get("restartCount") or 0) == 0:
                status["state"] = {"terminated": terminated}
            else:
                delay = backoff(int(status["restartCount"]))
                status["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {delay:g}s restarting failed "
                        f"container={status.get('name')} pod={name}_{namespace}",
                    }
                }
                status["lastState"] = {"terminated": terminated}
        containers = pod["spec"].get("containers") or []
        pod["status"]["conditions"] = pod_conditions(
            ready=False, now=now, containers=containers, previous=pod["status"]
        )
        self._ctx.save(PODS, pod, status=True)
        self._ctx.schedule_in(backoff(restarts), ("pod-restart", namespace, name))

    def restart(self, namespace: str, name: str) -> None:
        """The kubelet starts the exited containers again (restartPolicy Always)."""
        pod = self._live(namespace, name)
        if pod is None:
            return
        now = self._ctx.now()
        for status in pod["status"].get("containerStatuses") or []:
            state = status.get("state") or {}
            if "running" in state:
                continue
            ended = state.get("terminated") or (status.get("lastState") or {}).get("terminated")
            if ended:
                status["lastState"] = {"terminated": ended}
            status["restartCount"] = int(status.get("restartCount") or 0) + 1
            status["state"] = {"running": {"startedAt": now}}
            status["started"] = True
            digest = hashlib.sha256(f"{name}:{status.get('name')}:{now}".encode()).hexdigest()
            status["containerID"] = f"containerd://{digest}"
        self._ctx.save(PODS, pod, status=True)
        self.started(pod)
        delay = self._ready_delay(pod["metadata"].get("annotations") or {})
        if delay is not None:
            self._ctx.schedule_in(delay, ("pod-ready", namespace, name))

    def _live(self, namespace: str, name: str) -> Obj | None:
        stored = self._ctx.store.peek(PODS, namespace, name)
        if stored is None or stored["metadata"].get("deletionTimestamp"):
            return None
        return clone(stored)
