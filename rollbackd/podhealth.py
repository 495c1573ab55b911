"""Pod health of a rollout, as plain arithmetic over Kubernetes pod JSON.

A new version that crash-loops, is OOM-killed, cannot pull its image or
loses readiness is bad whatever Prometheus says (it may serve no traffic at
all, so no ratio ever breaches). This module judges the pods of the
Deployment's current ReplicaSet (the new revision) and nothing else:

- pods of older ReplicaSets are ignored: the old version crash-looping is
  not the new rollout's fault;
- restarts count only since the rollout began: a pod created before it
  (a reused ReplicaSet) counts at most the one restart whose termination
  is recorded after the start;
- thin evidence is not a breach: the bad pods must be at least
  ``min(min_pods, pods of the ReplicaSet)`` and ``min_fraction`` of them,
  so one flaky pod of fifty rolls nothing back, while a one-pod surge that
  blocks the rollout does.

The watch cache (or, while its pod watch is not current, a list) supplies
the pods; the judging is pure (time passed in), so it is tested with pod JSON
in and a verdict out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.model import RevisionInfo, Target
from rollbackd.revisions import controller_uid, parse_time
from rollbackd.signals import Evaluation, Verdict

__all__ = ["POD_HEALTH", "PodProblem", "PodRules", "judge_pods", "judge_replicaset_pods"]

POD_HEALTH = "pod_health"

# Waiting reasons of a container that never starts: no restart ever shows them.
NEVER_STARTS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
CRASH_LOOP = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
NOT_READY = "NotReady"
# A page lists this many pods, then "and N more".
MAX_LISTED_PODS = 5


@dataclass(frozen=True)
class PodRules:
    """How much trouble makes a breach (``sources.kubernetes.pod_health``)."""

    min_restarts: int = 2
    min_pods: int = 2
    min_fraction: float = 0.5
    not_ready_after: timedelta = timedelta(minutes=3)


@dataclass(frozen=True)
class PodProblem:
    """One bad pod: the container and the reason a human would look for."""

    pod: str
    container: str
    reason: str
    restarts: int

    def text(self) -> str:
        where = f"{self.pod} container {self.container}" if self.container else self.pod
        return f"{where} {self.reason} (restarts {self.restarts})"


def judge_pods(
    target: Target,
    replicaset: RevisionInfo | None,
    pods: Iterable[Mapping[str, Any]],
    *,
    rollout_started_at: datetime,
    now: datetime,
    rules: PodRules,
) -> Evaluation:
    """The ``pod_health`` verdict of ``target``'s current ReplicaSet, from any of its namespace's pods.

    Only the pods that ReplicaSet controls (by UID) count; see
    :func:`judge_replicaset_pods`.
    """
    rs_uid = replicaset.uid if replicaset is not None else ""
    mine = [pod for pod in pods if rs_uid and controller_uid(pod) == rs_uid]
    return judge_replicaset_pods(
        target, replicaset, mine, rollout_started_at=rollout_started_at, now=now, rules=rules
    )


def judge_replicaset_pods(
    target: Target,
    replicaset: RevisionInfo | None,
    pods: Iterable[Mapping[str, Any]],
    *,
    rollout_started_at: datetime,
    now: datetime,
    rules: PodRules,
) -> Evaluation:
    """The ``pod_health`` verdict of ``target``'s current ReplicaSet, from its own pods.

    NO_DATA when the current ReplicaSet is unknown or has no live pods:
    nothing was observed, which is not health.
    """
    rs_uid = replicaset.uid if replicaset is not None else ""
    rs_name = replicaset.replicaset if replicaset is not None else ""
    if not rs_uid:
        return _evaluation(target, Verdict.NO_DATA, None, 0, "pod_health: no current ReplicaSet")
    mine = [pod for pod in pods if not pod.get("metadata", {}).get("deletionTimestamp")]
    if not mine:
        return _evaluation(
            target, Verdict.NO_DATA, None, 0, f"pod_health: ReplicaSet {rs_name} has no pods"
        )
    problems = [
        problem
        for pod in sorted(mine, key=lambda p: str(p.get("metadata", {}).get("name", "")))
        if (problem := _judged(pod, rollout_started_at, now, rules)) is not None
    ]
    return _verdict(target, problems, len(mine), rs_name, rules)


def _verdict(
    target: Target, problems: Sequence[PodProblem], pods: int, rs_name: str, rules: PodRules
) -> Evaluation:
    """A breach when enough of the ``pods`` have problems, by count and by fraction."""
    needed = min(rules.min_pods, pods)
    bad = len(problems)
    breach = bad >= needed and bad >= rules.min_fraction * pods and bad > 0
    head = f"{bad} of {pods} pods of ReplicaSet {rs_name} unhealthy"
    rule = f"at least {needed} and {rules.min_fraction:.0%} make a breach"
    if not problems:
        return _evaluation(target, Verdict.HEALTHY, bad, needed, f"pod_health: {head}")
    listed = "; ".join(p.text() for p in problems[:MAX_LISTED_PODS])
    if bad > MAX_LISTED_PODS:
        listed += f"; and {bad - MAX_LISTED_PODS} more"
    verdict = Verdict.BREACH if breach else Verdict.HEALTHY
    return _evaluation(target, verdict, bad, needed, f"pod_health: {head}: {listed} ({rule})")


def _judged(
    pod: Mapping[str, Any], rollout_started_at: datetime, now: datetime, rules: PodRules
) -> PodProblem | None:
    # Pods are input: a status of the wrong shape is not judged, and the
    # other pods still are (the cycle never fails on one odd object).
    try:
        return pod_problem(pod, rollout_started_at, now, rules)
    except (AttributeError, TypeError):
        return None


def pod_problem(
    pod: Mapping[str, Any], rollout_started_at: datetime, now: datetime, rules: PodRules
) -> PodProblem | None:
    """The pod's worst problem since the rollout began, or None."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = str(meta.get("name", ""))
    created = _time(meta.get("creationTimestamp"))
    fresh = created is None or created >= rollout_started_at
    inits = list(status.get("initContainerStatuses") or [])
    containers = [*inits, *(status.get("containerStatuses") or [])]
    for index, container in enumerate(containers):
        init = index < len(inits)
        problem = _container_problem(name, container, fresh, rollout_started_at, now, rules, init)
        if problem is not None:
            return problem
    unready_since = _unready_since(status)
    if unready_since is not None and now - max(unready_since, rollout_started_at) >= (
        rules.not_ready_after
    ):
        restarts = sum(_count(c.get("restartCount")) for c in containers)
        return PodProblem(name, "", NOT_READY, restarts)
    return None


def _container_problem(
    pod: str,
    container: Mapping[str, Any],
    fresh: bool,
    rollout_started_at: datetime,
    now: datetime,
    rules: PodRules,
    init: bool = False,
) -> PodProblem | None:
    name = str(container.get("name", ""))
    state = container.get("state") or {}
    waiting = str((state.get("waiting") or {}).get("reason") or "")
    restarts = _count(container.get("restartCount"))
    if waiting in NEVER_STARTS:
        return PodProblem(pod, name, waiting, restarts)
    terminated = state.get("terminated") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    # An init container that exited 0 has done its job: not a crash.
    completed = init and terminated.get("exitCode") == 0
    failed_now = bool(terminated) and not completed
    # When the last crash ended: the termination now, unless it was that completion.
    ended = _time((terminated if failed_now else last).get("finishedAt"))
    crashes = _crashes(restarts, failed_now, ended, fresh, rollout_started_at)
    if crashes < rules.min_restarts:
        return None
    if not failed_now and _recovered(bool(container.get("ready")) or completed, ended, now, rules):
        return None
    return PodProblem(pod, name, _crash_reason(waiting, terminated, last, crashes), restarts)


def _recovered(up: bool, ended: datetime | None, now: datetime, rules: PodRules) -> bool:
    """Restart counts never go down: a container Ready (or an init container
    completed) that has not exited for ``not_ready_after`` has recovered."""
    return up and (ended is None or now - ended >= rules.not_ready_after)


def _crashes(
    restarts: int,
    terminated: bool,
    ended: datetime | None,
    fresh: bool,
    rollout_started_at: datetime,
) -> int:
    """The crashes that count against the rollout."""
    if not fresh:
        # Restarts before the rollout are not its fault: only a termination
        # recorded after the start is known to be recent.
        return 1 if ended is not None and ended >= rollout_started_at else 0
    # A container terminated now and not yet restarted has crashed once more.
    return restarts + (1 if terminated else 0)


def _crash_reason(
    waiting: str, terminated: Mapping[str, Any], last: Mapping[str, Any], crashes: int
) -> str:
    if waiting == CRASH_LOOP:
        return CRASH_LOOP
    if OOM_KILLED in (terminated.get("reason"), last.get("reason")):
        return OOM_KILLED
    return f"restarted {crashes} times"


def _time(value: object) -> datetime | None:
    """An API timestamp, or None when absent or not one (never raises: pods are input)."""
    try:
        moment = parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _count(value: object) -> int:
    """A restart count, 0 when it is not a number."""
    try:
        return max(int(value), 0) if isinstance(value, int | str) else 0
    except ValueError:
        return 0


def _unready_since(status: Mapping[str, Any]) -> datetime | None:
    """When the pod's Ready condition turned False (None: Ready, or not reported)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            return _time(condition.get("lastTransitionTime"))
    return None


def _evaluation(
    target: Target, verdict: Verdict, value: int | None, needed: int, detail: str
) -> Evaluation:
    return Evaluation(target, POD_HEALTH, verdict, value, float(needed), detail)
