"""Pod health of a rollout: pod status JSON in, a pod_health verdict out.

Each reason a new version fails without a metric breach (crash loop, OOM
kill, restarts, image pull, lost readiness) is named in the verdict with
the pod and the container; the old ReplicaSet's pods and restarts from
before the rollout are not the rollout's fault; one flaky pod of many is
not a breach.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.model import RevisionInfo, Target
from rollbackd.podhealth import PodRules, judge_pods
from rollbackd.signals import Verdict

TARGET = Target("shop", "checkout")
STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = STARTED + timedelta(minutes=2)
NEW = RevisionInfo(2, "checkout-new", "uid-new", STARTED, {}, ("checkout:2",))
RULES = PodRules(min_restarts=2, min_pods=2, min_fraction=0.5, not_ready_after=timedelta(minutes=1))


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    owner: str = "uid-new",
    created: datetime = STARTED + timedelta(seconds=5),
    ready: bool = True,
    ready_since: datetime | None = None,
    container: dict[str, Any] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "creationTimestamp": stamp(created),
        "ownerReferences": [{"kind": "ReplicaSet", "uid": owner, "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = stamp(NOW)
    return {
        "metadata": meta,
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": stamp(ready_since or created),
                }
            ],
            "containerStatuses": [container or running()],
        },
    }


def running(restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "app",
        "state": {"running": {"startedAt": stamp(STARTED)}},
        "lastState": {"terminated": last} if last else {},
        "restartCount": restarts,
    }


def crash_looping(restarts: int, reason: str = "Error", finished: datetime = NOW) -> dict[str, Any]:
    return {
        "name": "app",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"reason": reason, "finishedAt": stamp(finished)}},
        "restartCount": restarts,
    }


def judge(pods: list[dict[str, Any]], rules: PodRules = RULES, replicaset: Any = NEW) -> Any:
    return judge_pods(TARGET, replicaset, pods, rollout_started_at=STARTED, now=NOW, rules=rules)


def test_crash_looping_pods_of_the_new_replicaset_are_a_breach_naming_pod_container_and_reason() -> (
    None
):
    result = judge(
        [
            pod("checkout-new-a", ready=False, container=crash_looping(3)),
            pod("checkout-new-b", ready=False, container=crash_looping(4)),
        ]
    )
    assert result.verdict is Verdict.BREACH
    assert (result.value, result.threshold) == (2, 2.0)
    assert "2 of 2 pods of ReplicaSet checkout-new unhealthy" in result.detail
    assert "checkout-new-a container app CrashLoopBackOff (restarts 3)" in result.detail
    assert "checkout-new-b container app CrashLoopBackOff (restarts 4)" in result.detail


def test_oom_killed_containers_say_oomkilled_even_between_crashes() -> None:
    oom_running = running(restarts=2, last={"reason": "OOMKilled", "finishedAt": stamp(NOW)})
    just_killed = {
        "name": "app",
        "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        "lastState": {"terminated": {"reason": "OOMKilled", "finishedAt": stamp(NOW)}},
        "restartCount": 1,
    }
    result = judge(
        [pod("p1", container=oom_running), pod("p2", ready=False, container=just_killed)]
    )
    assert result.verdict is Verdict.BREACH
    assert "p1 container app OOMKilled (restarts 2)" in result.detail
    # Terminated now and not yet restarted: that exit counts as the second crash.
    assert "p2 container app OOMKilled (restarts 1)" in result.detail


def test_restarts_rising_while_running_count_with_their_number() -> None:
    result = judge([pod("p1", container=running(restarts=5)), pod("p2", container=running(2))])
    assert result.verdict is Verdict.BREACH
    assert "p1 container app restarted 5 times (restarts 5)" in result.detail


def test_image_pull_failures_need_no_restart() -> None:
    pulling = {
        "name": "app",
        "state": {"waiting": {"reason": "ImagePullBackOff"}},
        "restartCount": 0,
    }
    erring = {"name": "app", "state": {"waiting": {"reason": "ErrImagePull"}}, "restartCount": 0}
    result = judge(
        [pod("p1", ready=False, container=pulling), pod("p2", ready=False, container=erring)]
    )
    assert result.verdict is Verdict.BREACH
    assert "p1 container app ImagePullBackOff (restarts 0)" in result.detail
    assert "p2 container app ErrImagePull" in result.detail


def test_pods_not_ready_longer_than_not_ready_after_are_a_breach_but_a_slow_start_is_not() -> None:
    lost = NOW - timedelta(seconds=90)
    long_unready = [pod(n, ready=False, ready_since=lost) for n in ("p1", "p2")]
    result = judge(long_unready)
    assert result.verdict is Verdict.BREACH
    assert "p1 NotReady (restarts 0)" in result.detail

    starting = [pod(n, ready=False, ready_since=NOW - timedelta(seconds=20)) for n in ("p1", "p2")]
    assert judge(starting).verdict is Verdict.HEALTHY


def test_old_replicaset_pods_are_ignored_however_badly_they_crash() -> None:
    old = [
        pod(f"checkout-old-{i}", owner="uid-old", ready=False, container=crash_looping(40))
        for i in range(3)
    ]
    result = judge([*old, pod("checkout-new-a"), pod("checkout-new-b")])
    assert result.verdict is Verdict.HEALTHY
    assert "0 of 2 pods" in result.detail


def test_restarts_before_the_rollout_do_not_count() -> None:
    before = STARTED - timedelta(hours=1)
    # A reused ReplicaSet's pods, created before this rollout, restarted back then.
    old_restarts = running(restarts=7, last={"reason": "Error", "finishedAt": stamp(before)})
    pods = [pod(n, created=before, container=old_restarts) for n in ("p1", "p2")]
    assert judge(pods).verdict is Verdict.HEALTHY
    # The same pods restarting after the start count one known restart each:
    # below min_restarts=2, and with min_restarts=1 they are a breach.
    recent = running(restarts=8, last={"reason": "Error", "finishedAt": stamp(NOW)})
    pods = [pod(n, created=before, container=recent) for n in ("p1", "p2")]
    assert judge(pods).verdict is Verdict.HEALTHY
    assert judge(pods, PodRules(min_restarts=1)).verdict is Verdict.BREACH


def test_one_flaky_pod_of_fifty_is_not_a_breach_but_half_of_them_are() -> None:
    healthy = [pod(f"p{i:02}") for i in range(50)]
    flaky = [pod("flaky", ready=False, container=crash_looping(9)), *healthy[1:]]
    result = judge(flaky)
    assert result.verdict is Verdict.HEALTHY
    assert (
        "1 of 50 pods" in result.detail and "flaky container app CrashLoopBackOff" in result.detail
    )

    half = [pod(f"bad{i:02}", ready=False, container=crash_looping(3)) for i in range(25)]
    result = judge([*half, *healthy[25:]])
    assert result.verdict is Verdict.BREACH
    assert result.detail.count("CrashLoopBackOff") == 5 and "and 20 more" in result.detail


def test_a_single_pod_surge_that_crash_loops_is_a_breach() -> None:
    # maxSurge 1: the new ReplicaSet has one pod, and the rollout is stuck on it.
    result = judge([pod("only", ready=False, container=crash_looping(2))])
    assert result.verdict is Verdict.BREACH
    assert result.threshold == 1.0


def test_one_restart_is_not_a_crash_loop() -> None:
    recent = NOW - timedelta(seconds=10)
    once = [
        pod(n, ready=False, ready_since=recent, container=crash_looping(1)) for n in ("p1", "p2")
    ]
    assert judge(once).verdict is Verdict.HEALTHY


def test_an_init_container_that_completed_is_not_a_crash_but_one_that_failed_is() -> None:
    strict = PodRules(
        min_restarts=1, min_pods=1, min_fraction=0.5, not_ready_after=RULES.not_ready_after
    )
    done = {"reason": "Completed", "exitCode": 0, "finishedAt": stamp(STARTED)}
    failed = {"reason": "Error", "exitCode": 1, "finishedAt": stamp(NOW)}

    def with_init(ended: dict[str, Any], created: datetime = STARTED) -> dict[str, Any]:
        one = pod("checkout-new-a", created=created)
        init = {"name": "migrate", "ready": True, "restartCount": 0, "state": {"terminated": ended}}
        one["status"]["initContainerStatuses"] = [init]
        return one

    assert judge([with_init(done)], strict).verdict is Verdict.HEALTHY
    # A pod from before the rollout, its init container completing just now.
    just_done = {**done, "finishedAt": stamp(NOW - timedelta(seconds=10))}
    earlier = with_init(just_done, created=STARTED - timedelta(minutes=5))
    assert judge([earlier], strict).verdict is Verdict.HEALTHY
    failing = judge([with_init(failed)], strict)
    assert failing.verdict is Verdict.BREACH
    assert "container migrate restarted 1 times" in failing.detail


def test_terminating_pods_are_not_judged_and_no_pods_is_no_data() -> None:
    dying = [pod(n, deleting=True, ready=False, container=crash_looping(5)) for n in ("a", "b")]
    result = judge(dying)
    assert result.verdict is Verdict.NO_DATA
    assert "has no pods" in result.detail
    assert judge([], replicaset=None).verdict is Verdict.NO_DATA


def test_resolution_when_the_pods_are_ready_again_and_stopped_crashing() -> None:
    bad = [pod(n, ready=False, container=crash_looping(3)) for n in ("p1", "p2")]
    assert judge(bad).verdict is Verdict.BREACH
    # Restart counts never go down. Ready again, but the last exit was just
    # now: still crash-looping (it will exit again).
    just_back = {"reason": "Error", "finishedAt": stamp(NOW - timedelta(seconds=10))}
    back = [pod(n, container={**running(3, just_back), "ready": True}) for n in ("p1", "p2")]
    assert judge(back).verdict is Verdict.BREACH
    # Ready, and no exit for not_ready_after: recovered, the signal resolves.
    long_ago = {"reason": "Error", "finishedAt": stamp(NOW - timedelta(seconds=61))}
    good = [pod(n, container={**running(3, long_ago), "ready": True}) for n in ("p1", "p2")]
    assert judge(good).verdict is Verdict.HEALTHY


def test_hostile_pod_json_is_judged_without_raising() -> None:
    weird: list[dict[str, Any]] = [
        {"metadata": {"name": "x", "ownerReferences": [{"uid": "uid-new", "controller": True}]}},
        {
            "metadata": {"name": "y", "ownerReferences": [{"uid": "uid-new", "controller": True}]},
            "status": {
                "containerStatuses": [{"state": None, "restartCount": None}],
                "conditions": None,
            },
        },
    ]
    assert judge(weird).verdict is Verdict.HEALTHY


def test_malformed_counts_times_and_states_are_not_judged_and_others_still_are() -> None:
    odd = [
        pod("a", container={"name": "app", "restartCount": "many", "state": {"waiting": {}}}),
        pod(
            "b",
            container={
                **crash_looping(3),
                "lastState": {"terminated": {"finishedAt": "yesterday"}},
            },
        ),
        pod("c", container={"name": "app", "state": "Running"}),
        pod("d", ready=False, container=crash_looping(3)),
        pod("e", ready=False, container=crash_looping(3)),
    ]
    # Naive timestamps are read as UTC rather than failing a comparison.
    odd[3]["metadata"]["creationTimestamp"] = "2026-03-01T12:00:05"
    result = judge(odd)
    assert result.verdict is Verdict.BREACH
    assert "d container app CrashLoopBackOff" in result.detail
    assert "b container app CrashLoopBackOff (restarts 3)" in result.detail
    assert "a container" not in result.detail and "c container" not in result.detail
