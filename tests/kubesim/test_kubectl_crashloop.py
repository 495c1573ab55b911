"""Containers that crash, seen through the real kubectl as on a cluster.

The pod template's knobs ``kubesim.rollbackd.io/crash-after`` and
``crash-reason`` make containers exit and restart in back-off. ``kubectl get
pods`` must print what it prints on a real cluster: the exit reason (``Error``,
``OOMKilled``) until the first restart, then ``CrashLoopBackOff`` with
RESTARTS counting up and the time of the last one (``2 (1s ago)``), READY 0/1.
The controller is stopped at the moment to look at, so what kubectl prints
is not a race with the next restart.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest

from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.stack import wait_for

from .kubectl_helpers import Kubectl, deployment_manifest, make_kubectl

pytestmark = pytest.mark.integration

ROW = re.compile(
    r"^(?P<name>\S+)\s+(?P<ready>\d+/\d+)\s+(?P<status>\S+)\s+(?P<restarts>\d+(?: \(\S+ ago\))?)\s+\S+$"
)


async def start(kubesim: KubeSim, tmp_path: pathlib.Path, knobs: dict[str, str]) -> Kubectl:
    kubectl = await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")
    path = tmp_path / "web.json"
    path.write_text(json.dumps(deployment_manifest(replicas=1, template_annotations=knobs)))
    await kubectl.run("create", "-f", str(path))
    return kubectl


def container(kubesim: KubeSim) -> dict[str, Any] | None:
    pods = kubesim.store.list("v1/pods", "default")
    statuses = [c for pod in pods for c in (pod.get("status") or {}).get("containerStatuses") or []]
    return statuses[0] if len(statuses) == 1 else None


async def freeze_when(kubesim: KubeSim, what: str, probe: Any) -> dict[str, Any]:
    """Wait until the one container matches ``probe``, then stop the controller there."""

    async def matched() -> dict[str, Any] | None:
        found = container(kubesim)
        return found if found is not None and probe(found) else None

    found: dict[str, Any] = await wait_for(matched, 20, what, interval=0.02)
    assert kubesim.controller is not None
    await kubesim.controller.stop()
    return container(kubesim) or found


async def pod_row(kubectl: Kubectl) -> re.Match[str]:
    lines = (await kubectl.run("get", "pods")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    [line] = lines[1:]
    row = ROW.match(line)
    assert row is not None, line
    return row


async def test_a_crash_looping_container_shows_crashloopbackoff_and_its_restarts(
    kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    kubectl = await start(kubesim, tmp_path, {"kubesim.rollbackd.io/crash-after": "200ms"})
    frozen = await freeze_when(
        kubesim,
        "the container in CrashLoopBackOff after two restarts",
        lambda c: c["restartCount"] >= 2 and "waiting" in c["state"],
    )
    row = await pod_row(kubectl)
    assert row["ready"] == "0/1"
    assert row["status"] == "CrashLoopBackOff"
    assert re.fullmatch(rf"{frozen['restartCount']} \(\d+s ago\)", row["restarts"])

    [pod] = (await kubectl.json("get", "pods"))["items"]
    [status] = pod["status"]["containerStatuses"]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off" in status["state"]["waiting"]["message"]
    last = status["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("Error", 1)
    assert last["finishedAt"] >= last["startedAt"]
    assert pod["status"]["phase"] == "Running", "restartPolicy Always: the pod stays Running"
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "False"


async def test_an_oom_killed_container_shows_oomkilled_then_crashloopbackoff(
    kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    knobs = {
        "kubesim.rollbackd.io/crash-after": "300ms",
        "kubesim.rollbackd.io/crash-reason": "OOMKilled",
    }
    kubectl = await start(kubesim, tmp_path, knobs)
    frozen = await freeze_when(kubesim, "the first OOM kill", lambda c: "terminated" in c["state"])
    assert frozen["restartCount"] == 0
    row = await pod_row(kubectl)
    assert (row["ready"], row["status"], row["restarts"]) == ("0/1", "OOMKilled", "0")
    [pod] = (await kubectl.json("get", "pods"))["items"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


async def test_oom_kills_after_restarts_keep_the_reason_in_last_state(
    kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    knobs = {
        "kubesim.rollbackd.io/crash-after": "200ms",
        "kubesim.rollbackd.io/crash-reason": "OOMKilled",
    }
    kubectl = await start(kubesim, tmp_path, knobs)
    await freeze_when(
        kubesim,
        "an OOM-killed container in back-off",
        lambda c: c["restartCount"] >= 1 and "waiting" in c["state"],
    )
    row = await pod_row(kubectl)
    assert row["status"] == "CrashLoopBackOff"
    [pod] = (await kubectl.json("get", "pods"))["items"]
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)


async def test_a_restarted_container_turns_ready_again_between_crashes(
    kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    # Crashes after 1.5 s, Ready after the fixture's 0.2 s: Ready between crashes.
    kubectl = await start(kubesim, tmp_path, {"kubesim.rollbackd.io/crash-after": "1500ms"})
    await freeze_when(
        kubesim,
        "the restarted container Ready again",
        lambda c: c["restartCount"] >= 1 and c.get("ready") is True,
    )
    row = await pod_row(kubectl)
    assert row["ready"] == "1/1" and row["status"] == "Running"
    assert re.fullmatch(r"1 \(\d+s ago\)", row["restarts"])


async def test_a_malformed_crash_knob_leaves_the_container_running(
    kubesim: KubeSim, tmp_path: pathlib.Path
) -> None:
    knobs = {"kubesim.rollbackd.io/crash-after": "soon", "kubesim.rollbackd.io/crash-reason": "x"}
    kubectl = await start(kubesim, tmp_path, knobs)
    await kubectl.run("rollout", "status", "deployment/web", "--timeout=30s")
    row = await pod_row(kubectl)
    assert (row["ready"], row["status"], row["restarts"]) == ("1/1", "Running", "0")
