"""Server-side Tables, which kubectl get asks for to print its columns."""

from __future__ import annotations

from typing import Any

import aiohttp

from rollbackd.testing.kubesim import KubeSim

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


async def get(sim: KubeSim, path: str, accept: str = TABLE_ACCEPT) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.url + path, headers={"Accept": accept}) as response:
            assert response.status == 200
            return await response.json()


async def test_deployment_table_has_kubectl_columns(kubesim: KubeSim) -> None:
    kubesim.store.create(
        "apps/v1/deployments",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": "web:1"}]},
                },
            },
        },
    )
    table = await get(kubesim, "/apis/apps/v1/namespaces/default/deployments")
    assert table["kind"] == "Table"
    names = [column["name"] for column in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    (row,) = table["rows"]
    assert row["cells"][0] == "web"
    assert row["cells"][1].endswith("/3")
    assert row["cells"][6] == "web:1"
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "web"


async def test_single_object_table_and_plain_json_without_table_accept(kubesim: KubeSim) -> None:
    table = await get(kubesim, "/api/v1/namespaces/default")
    assert table["kind"] == "Table"
    assert table["rows"][0]["cells"][:2] == ["default", "Active"]
    plain = await get(kubesim, "/api/v1/namespaces/default", accept="application/json")
    assert plain["kind"] == "Namespace"


def test_human_age_matches_kubectl_style() -> None:
    from datetime import UTC, datetime

    from rollbackd.testing.kubesim.tables import human_age

    now = datetime(2025, 1, 2, 0, 0, 0, tzinfo=UTC)
    assert human_age("2025-01-01T23:59:55Z", now) == "5s"
    assert human_age("2025-01-01T23:55:30Z", now) == "4m30s"
    assert human_age("2025-01-01T21:00:00Z", now) == "3h"
    assert human_age("2024-12-28T00:00:00Z", now) == "5d"
