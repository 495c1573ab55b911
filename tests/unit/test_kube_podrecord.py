"""What the watch cache keeps of a pod, and that pod health judges it as it judges the pod.

A pod with nothing wrong is kept as its ReplicaSet's name (one shared string
per ReplicaSet: what a healthy fleet costs); any other as the status fields
pod health reads. Whatever the pod, its rules and the time, the record is
judged exactly as the whole pod would be.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollbackd.kube.podrecord import pod_json, pod_owner, pod_record
from rollbackd.model import RevisionInfo, Target
from rollbackd.podhealth import PodRules, judge_replicaset_pods

TARGET = Target("shop", "checkout")
STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPLICASET = RevisionInfo(2, "checkout-7f9", "uid-rs", STARTED, {}, ("checkout:2",))


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def owner(kind: str = "ReplicaSet", name: str = "checkout-7f9") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name,
        "uid": "uid-rs",
        "controller": True,
    }


def running(name: str = "app", *, restarts: int = 0, ready: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "image": "checkout:2",
        "imageID": "docker-pullable://checkout@sha256:" + "a" * 64,
        "containerID": "containerd://" + "b" * 64,
        "started": True,
        "state": {"running": {"startedAt": stamp(STARTED)}},
        "lastState": {},
    }


def completed_init() -> dict[str, Any]:
    ended = {"exitCode": 0, "reason": "Completed", "finishedAt": stamp(STARTED)}
    return {"name": "init", "ready": True, "restartCount": 0, "state": {"terminated": ended}}


def whole_pod(
    name: str,
    *,
    containers: list[dict[str, Any]] | None = None,
    inits: list[dict[str, Any]] | None = None,
    ready: str = "True",
    controller: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(STARTED)},
            {"type": "Ready", "status": ready, "lastTransitionTime": stamp(STARTED)},
        ],
        "containerStatuses": containers if containers is not None else [running()],
    }
    if inits is not None:
        status["initContainerStatuses"] = inits
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "creationTimestamp": stamp(STARTED + timedelta(seconds=3)),
            "labels": {"app": "checkout", "pod-template-hash": "7f9"},
            "ownerReferences": [controller or owner()],
        },
        "spec": {"containers": [{"name": "app", "image": "checkout:2"}], "nodeName": "n1"},
        "status": status,
    }


def test_a_pod_with_nothing_wrong_is_its_replicasets_name_shared_by_all_its_pods() -> None:
    first = pod_record(whole_pod("checkout-7f9-a"))
    second = pod_record(whole_pod("checkout-7f9-b", inits=[completed_init()]))
    assert first == "checkout-7f9" and second is first


def test_a_pod_no_replicaset_controls_is_kept_as_nothing_to_judge() -> None:
    assert pod_record(whole_pod("batch-1", controller=owner("Job", "batch"))) == ""
    assert pod_record({"metadata": {"name": "bare"}}) == ""
    assert pod_owner(pod_record({})) == ""


@pytest.mark.parametrize(
    "trouble",
    [
        {"containers": [running(restarts=1)]},
        {"containers": [running(ready=False)]},
        {"ready": "False"},
        {"containers": []},
        {"inits": [{**completed_init(), "restartCount": 2}]},
        {"containers": [{**running(), "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        {"containers": [{**running(), "lastState": {"terminated": {"reason": "OOMKilled"}}}]},
    ],
    ids=[
        "restarted",
        "container-unready",
        "pod-unready",
        "no-containers",
        "init-restarted",
        "crash-looping",
        "oom-before",
    ],
)
def test_a_pod_with_anything_pod_health_reads_keeps_those_fields_and_its_owner(
    trouble: dict[str, Any],
) -> None:
    pod = whole_pod("checkout-7f9-a", **trouble)
    record = pod_record(pod)
    assert isinstance(record, dict), record
    assert pod_owner(record) == "checkout-7f9"
    assert set(record) == {"metadata", "status"}
    assert set(record["metadata"]) == {"name", "creationTimestamp", "ownerReferences"}
    kept = record["status"]
    assert "phase" not in kept and "podIP" not in kept
    assert [c["type"] for c in kept["conditions"]] == ["Ready"]
    for container in kept["containerStatuses"]:
        assert set(container) <= {"name", "ready", "restartCount", "state", "lastState"}


def test_a_deleting_pod_is_kept_with_its_deletion_so_the_judging_leaves_it_out() -> None:
    pod = whole_pod("checkout-7f9-a")
    pod["metadata"]["deletionTimestamp"] = stamp(STARTED)
    record = pod_record(pod)
    assert isinstance(record, dict) and record["metadata"]["deletionTimestamp"]


@pytest.mark.parametrize(
    "hostile",
    [
        {"metadata": {"ownerReferences": [owner()]}, "status": "up"},
        {"metadata": {"ownerReferences": [owner()]}, "status": {"containerStatuses": "x"}},
        {"metadata": {"ownerReferences": [owner()]}, "status": {"conditions": {"Ready": 1}}},
        {"metadata": {"ownerReferences": [owner()]}, "status": {"containerStatuses": [7, None]}},
        {
            "metadata": {"ownerReferences": [owner()]},
            "status": {"initContainerStatuses": [{"state": 1}]},
        },
        {"metadata": {"ownerReferences": "x"}},
        {"metadata": None},
        {"metadata": "pod"},
    ],
)
def test_a_status_of_any_shape_is_kept_never_an_error(hostile: dict[str, Any]) -> None:
    record = pod_record(hostile)
    judged = judge_replicaset_pods(
        TARGET,
        REPLICASET,
        [pod_json("p", record)],
        rollout_started_at=STARTED,
        now=STARTED + timedelta(minutes=5),
        rules=PodRules(),
    )
    assert judged.detail.startswith("pod_health:")


# -- the record is judged as the pod ---------------------------------------------------------

MOMENTS = st.sampled_from(
    [STARTED - timedelta(minutes=10), STARTED, STARTED + timedelta(seconds=30)]
)
STAMPS = MOMENTS.map(stamp)
ENDED = st.fixed_dictionaries(
    {
        "exitCode": st.sampled_from([0, 1, 137]),
        "reason": st.sampled_from(["Completed", "Error", "OOMKilled"]),
        "finishedAt": STAMPS,
    }
)
STATES = st.one_of(
    st.fixed_dictionaries({"running": st.fixed_dictionaries({"startedAt": STAMPS})}),
    st.fixed_dictionaries(
        {
            "waiting": st.fixed_dictionaries(
                {
                    "reason": st.sampled_from(
                        ["CrashLoopBackOff", "ErrImagePull", "ContainerCreating"]
                    )
                }
            )
        }
    ),
    st.fixed_dictionaries({"terminated": ENDED}),
    st.just({}),
)
CONTAINERS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["app", "sidecar"]),
        "ready": st.booleans(),
        "restartCount": st.integers(0, 3),
        "state": STATES,
    },
    optional={"lastState": st.one_of(st.just({}), st.fixed_dictionaries({"terminated": ENDED}))},
)


# Settled containers are drawn often: only they take the short form, and it must judge the same.
CLEAN = st.builds(running, st.sampled_from(["app", "sidecar"]))
CLEAN_INIT = st.builds(completed_init)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "checkout-7f9-a",
        "creationTimestamp": draw(STAMPS),
        "ownerReferences": [owner()],
    }
    if draw(st.integers(0, 9)) == 0:
        meta["deletionTimestamp"] = draw(STAMPS)
    ready = {
        "type": "Ready",
        "status": draw(st.sampled_from(["True", "True", "False"])),
        "lastTransitionTime": draw(STAMPS),
    }
    conditions = [{"type": "Initialized", "status": "True"}, ready]
    status: dict[str, Any] = {"phase": "Running", "hostIP": "10.0.0.1"}
    status["conditions"] = conditions[: draw(st.sampled_from([0, 2, 2, 2]))]
    status["containerStatuses"] = draw(st.lists(st.one_of(CLEAN, CONTAINERS), max_size=2))
    if draw(st.booleans()):
        inits = st.one_of(CLEAN_INIT, CLEAN, CONTAINERS)
        status["initContainerStatuses"] = draw(st.lists(inits, max_size=2))
    return {"metadata": meta, "status": status}


@settings(max_examples=400, deadline=None)
@given(
    pod=pods(),
    min_restarts=st.integers(1, 3),
    not_ready_after=st.sampled_from([timedelta(seconds=30), timedelta(minutes=3)]),
    later=st.sampled_from([timedelta(seconds=40), timedelta(minutes=4), timedelta(hours=1)]),
)
def test_the_record_of_any_pod_is_judged_as_the_pod_is(
    pod: dict[str, Any], min_restarts: int, not_ready_after: timedelta, later: timedelta
) -> None:
    rules = PodRules(min_restarts=min_restarts, min_pods=1, not_ready_after=not_ready_after)

    def judged(one: dict[str, Any]) -> tuple[object, ...]:
        verdict = judge_replicaset_pods(
            TARGET, REPLICASET, [one], rollout_started_at=STARTED, now=STARTED + later, rules=rules
        )
        return verdict.verdict, verdict.value, verdict.detail

    name = pod["metadata"]["name"]
    assert judged(pod_json(name, pod_record(pod))) == judged(pod)
