"""The leader's pod label against kubesim, through the adapter's plain JSON calls.

The leader labels its own pod and takes the label off any other pod of the
same release (a leader that died labelled); giving up leadership removes it,
writing nothing when it is already gone; a fenced replica writes nothing; an
API server that refuses is logged, never raised.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from rollbackd.kube import Kube
from rollbackd.kube.leader_label import LEADER_LABEL, LeaderLabel
from rollbackd.testing.kubesim import KubeSim

pytestmark = pytest.mark.integration

RELEASE = {"app.kubernetes.io/name": "rollbackd", "app.kubernetes.io/instance": "prod"}


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ops", "labels": labels},
        "spec": {"containers": [{"name": "rollbackd", "image": "rollbackd:1"}]},
    }


@pytest_asyncio.fixture
async def sim(tmp_path: pathlib.Path) -> AsyncIterator[KubeSim]:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig") as started:
        started.store.create("v1/namespaces", {"metadata": {"name": "ops"}})
        started.store.create("v1/pods", pod("me", dict(RELEASE)))
        started.store.create("v1/pods", pod("dead", {**RELEASE, LEADER_LABEL: "true"}))
        other_release = {**RELEASE, "app.kubernetes.io/instance": "staging", LEADER_LABEL: "true"}
        started.store.create("v1/pods", pod("staging", other_release))
        yield started


@pytest_asyncio.fixture
async def kube(sim: KubeSim) -> AsyncIterator[Kube]:
    api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
    async with Kube(api) as adapter:
        yield adapter


def leaders(sim: KubeSim) -> list[str]:
    return sorted(
        p["metadata"]["name"]
        for p in sim.store.list("v1/pods", "ops", copy=False)
        if (p["metadata"].get("labels") or {}).get(LEADER_LABEL) == "true"
    )


def pod_patches(sim: KubeSim) -> list[str]:
    return [r.path for r in sim.requests if r.verb == "patch" and "/pods/" in r.path]


async def test_the_leader_labels_its_pod_and_clears_a_dead_leaders_of_its_release(
    sim: KubeSim, kube: Kube
) -> None:
    label = LeaderLabel(kube.request, kube.fence, namespace="ops", pod="me")
    await label.claim()
    # Another release's leader keeps its label: its Service is not ours.
    assert leaders(sim) == ["me", "staging"]

    await label.release()
    assert leaders(sim) == ["staging"]
    patches = len(pod_patches(sim))
    await label.release()  # already gone: nothing written
    assert len(pod_patches(sim)) == patches


async def test_a_fenced_replica_labels_nothing(sim: KubeSim, kube: Kube) -> None:
    kube.fence.require_lease()  # a Lease is required and none was granted
    await LeaderLabel(kube.request, kube.fence, namespace="ops", pod="me").claim()
    assert leaders(sim) == ["dead", "staging"]
    assert pod_patches(sim) == []


async def test_a_refusing_api_server_is_logged_not_raised(sim: KubeSim, kube: Kube) -> None:
    sim.faults.fail("patch", r"/pods/me$", 403)
    label = LeaderLabel(kube.request, kube.fence, namespace="ops", pod="me")
    await label.claim()  # no exception
    assert leaders(sim) == ["dead", "staging"]
    await LeaderLabel(kube.request, kube.fence, namespace="ops", pod="missing").claim()
    assert leaders(sim) == ["dead", "staging"]
