"""Bad input gets a clear Status error, never a crash, and never changes stored objects."""

from __future__ import annotations

import json

import aiohttp

from rollbackd.testing.kubesim import KubeSim

DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/default/deployments"

BAD_REQUESTS: list[tuple[str, str, bytes, str]] = [
    ("POST", DEPLOYMENT_PATH, b"not json at all", "application/json"),
    ("POST", DEPLOYMENT_PATH, b"[1, 2, 3]", "application/json"),
    ("POST", DEPLOYMENT_PATH, b'{"metadata": "a string"}', "application/json"),
    ("POST", DEPLOYMENT_PATH, b'{"kind": "Pod", "metadata": {"name": "x"}}', "application/json"),
    ("POST", DEPLOYMENT_PATH, b'{"metadata": {"name": "x"}, "spec": "nope"}', "application/json"),
    ("POST", DEPLOYMENT_PATH, b"\xff\xfe\x00", "application/json"),
    ("POST", DEPLOYMENT_PATH, b"", "application/json"),
    ("POST", DEPLOYMENT_PATH, b"k8s\x00\x0a\x0b", "application/vnd.kubernetes.protobuf"),
    (
        "PUT",
        f"{DEPLOYMENT_PATH}/web",
        b'{"metadata": {"name": "web"}, "spec": []}',
        "application/json",
    ),
    ("PATCH", f"{DEPLOYMENT_PATH}/web", b'"just a string"', "application/merge-patch+json"),
    (
        "PATCH",
        f"{DEPLOYMENT_PATH}/web",
        b'{"spec": {"$patch": "explode"}}',
        "application/strategic-merge-patch+json",
    ),
    (
        "PATCH",
        f"{DEPLOYMENT_PATH}/web",
        b'{"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}',
        "application/strategic-merge-patch+json",
    ),
    (
        "PATCH",
        f"{DEPLOYMENT_PATH}/web",
        b'[{"op": "remove", "path": "/metadata/name"}]',
        "application/json-patch+json",
    ),
    (
        "PATCH",
        f"{DEPLOYMENT_PATH}/web",
        b'[{"op": "replace", "path": "/spec/replicas", "value": -1}]',
        "application/json-patch+json",
    ),
    (
        "PATCH",
        f"{DEPLOYMENT_PATH}/web",
        b'[{"op": "replace", "path": "", "value": []}]',
        "application/json-patch+json",
    ),
    ("GET", f"{DEPLOYMENT_PATH}?limit=ten", b"", "application/json"),
    ("GET", f"{DEPLOYMENT_PATH}?watch=true&resourceVersion=abc", b"", "application/json"),
    ("GET", f"{DEPLOYMENT_PATH}?fieldValidation=Loud", b"", "application/json"),
    ("DELETE", f"{DEPLOYMENT_PATH}/web?propagationPolicy=Sometimes", b"", "application/json"),
    ("POST", f"{DEPLOYMENT_PATH}/web", b"{}", "application/json"),
]


async def test_bad_requests_get_4xx_statuses_and_leave_the_object_untouched(
    kubesim: KubeSim,
) -> None:
    web = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "web:1"}]},
            },
        },
    }
    kubesim.store.create("apps/v1/deployments", web)
    before = kubesim.store.get("apps/v1/deployments", "default", "web")
    async with aiohttp.ClientSession() as session:
        for method, path, body, content_type in BAD_REQUESTS:
            headers = {"Content-Type": content_type}
            async with session.request(
                method, kubesim.url + path, data=body or None, headers=headers
            ) as response:
                text = await response.text()
                assert 400 <= response.status < 500, (method, path, body, response.status, text)
                status = json.loads(text)
                assert status["kind"] == "Status" and status["status"] == "Failure", text
                assert status["code"] == response.status
    after = kubesim.store.get("apps/v1/deployments", "default", "web")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["name"] == "web"
