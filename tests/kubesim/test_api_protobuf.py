"""Protobuf request bodies, as kubectl's generators (create deployment/configmap/...) send them."""

from __future__ import annotations

import asyncio
import pathlib

import aiohttp
import pytest

from rollbackd.testing.kubesim import KubeSim
from rollbackd.testing.kubesim.protobuf import CONTENT_TYPE, MAGIC

KUBECTL = pathlib.Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kubectl"
DEADLINE = 30.0


async def kubectl(sim: KubeSim, *args: str) -> str:
    if not KUBECTL.exists():
        pytest.fail(f"kubectl v1.33 is required at {KUBECTL}; run scripts/setup.sh")
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(sim.kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_kubectl_create_generators_reach_the_store_intact(kubesim: KubeSim) -> None:
    await kubectl(
        kubesim, "create", "deployment", "web", "--image=web:1.2", "--replicas=3", "--port=8080"
    )
    await kubectl(kubesim, "create", "deployment", "idle", "--image=web:1.2", "--replicas=0")
    await kubectl(kubesim, "create", "configmap", "cfg", "--from-literal=a=b")
    await kubectl(kubesim, "create", "secret", "generic", "pw", "--from-literal=token=s3cret")
    await kubectl(kubesim, "create", "service", "clusterip", "web", "--tcp=80:8080")
    web = kubesim.store.get("apps/v1/deployments", "default", "web")
    assert web["spec"]["replicas"] == 3
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("web", "web:1.2")
    assert container["ports"][0]["containerPort"] == 8080
    assert kubesim.store.get("apps/v1/deployments", "default", "idle")["spec"]["replicas"] == 0
    assert kubesim.store.get("v1/configmaps", "default", "cfg")["data"] == {"a": "b"}
    secret = kubesim.store.get("v1/secrets", "default", "pw")
    assert secret["data"] == {"token": "czNjcmV0"}  # base64 of s3cret
    service = kubesim.store.get("v1/services", "default", "web")
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["clusterIP"].startswith("10.96.")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw)


async def post(sim: KubeSim, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            sim.url + path, data=body, headers={"Content-Type": CONTENT_TYPE}
        ) as response:
            return response.status, await response.json()


async def test_fields_kubesim_cannot_decode_are_415_not_silently_dropped(kubesim: KubeSim) -> None:
    metadata = field(1, b"cm")
    unknown = field(9, b"something")  # a ConfigMap field number kubesim does not know
    status, body = await post(
        kubesim,
        "/api/v1/namespaces/default/configmaps",
        envelope("v1", "ConfigMap", field(1, metadata) + unknown),
    )
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert kubesim.store.try_get("v1/configmaps", "default", "cm") is None


async def test_malformed_protobuf_is_400_and_unknown_kinds_are_415(kubesim: KubeSim) -> None:
    status, body = await post(kubesim, "/api/v1/namespaces/default/configmaps", MAGIC + b"\x0a\xff")
    assert status == 400
    assert body["reason"] == "BadRequest"
    status, body = await post(kubesim, "/api/v1/namespaces/default/configmaps", b"not protobuf")
    assert status == 400
    status, body = await post(
        kubesim, "/api/v1/namespaces/default/pods", envelope("v1", "Pod", field(1, field(1, b"p")))
    )
    assert status == 415
