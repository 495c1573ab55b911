"""The real kubectl pages through kubesim's lists with limit and continue, as against a cluster."""

from __future__ import annotations

import json
import pathlib
from urllib.parse import parse_qs

import pytest
import pytest_asyncio

from rollbackd.testing.kubesim import KubeSim

from .kubectl_helpers import Kubectl, make_kubectl

pytestmark = pytest.mark.integration

NAMES = [f"pod-{index}" for index in range(5)]
PODS = "/api/v1/namespaces/default/pods"


@pytest_asyncio.fixture
async def kubectl(kubesim: KubeSim, tmp_path: pathlib.Path) -> Kubectl:
    for name in NAMES:
        kubesim.store.create(
            "v1/pods",
            {
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1.0"}]},
            },
        )
    return await make_kubectl(kubesim.kubeconfig, tmp_path / "kube-cache")


async def test_get_with_chunk_size_lists_every_pod_once_in_pages(
    kubesim: KubeSim, kubectl: Kubectl
) -> None:
    mark = kubesim.api.requests.mark()
    result = await kubectl.run("get", "pods", "--chunk-size=2", "-o", "name")
    assert result.stdout.split() == [f"pod/{name}" for name in NAMES]
    lists = [r for r in kubesim.api.requests.since(mark) if r.verb == "list" and r.path == PODS]
    queries = [parse_qs(r.query) for r in lists]
    assert [q.get("limit") for q in queries] == [["2"]] * 3
    assert "continue" not in queries[0]
    assert all("continue" in q for q in queries[1:])


async def test_get_raw_with_limit_returns_a_continue_token_that_pages_on(
    kubectl: Kubectl,
) -> None:
    first = json.loads((await kubectl.run("get", "--raw", f"{PODS}?limit=3")).stdout)
    assert [item["metadata"]["name"] for item in first["items"]] == NAMES[:3]
    token = first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] == 2
    rest = json.loads(
        (await kubectl.run("get", "--raw", f"{PODS}?limit=3&continue={token}")).stdout
    )
    assert [item["metadata"]["name"] for item in rest["items"]] == NAMES[3:]
    assert "continue" not in rest["metadata"]
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
