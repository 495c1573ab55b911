"""The API client's session reads proxies and netrc per request only when they exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from rollbackd.kube.client import KubeClient

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def empty_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No proxy variable, a home without .netrc."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
async def api() -> AsyncIterator[ApiClient]:
    configuration = Configuration()
    configuration.host = "http://127.0.0.1:1"
    client = ApiClient(configuration=configuration)
    yield client
    await client.close()


def trusts_environment(api: ApiClient) -> bool:
    return bool(api.rest_client.pool_manager.trust_env)


async def test_an_empty_environment_is_not_read_at_every_request(
    empty_environment: Path, api: ApiClient
) -> None:
    assert trusts_environment(api), "kubernetes-asyncio trusts the environment by default"
    KubeClient(api)
    assert not trusts_environment(api)


async def test_a_proxy_in_the_environment_keeps_being_honoured(
    empty_environment: Path, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    KubeClient(api)
    assert trusts_environment(api)


@pytest.mark.parametrize("where", ["home", "NETRC"])
async def test_a_netrc_file_keeps_being_honoured(
    empty_environment: Path, api: ApiClient, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    netrc = empty_environment / (".netrc" if where == "home" else "credentials")
    netrc.write_text("machine proxy.internal login me password secret\n")
    if where == "NETRC":
        monkeypatch.setenv("NETRC", str(netrc))
    KubeClient(api)
    assert trusts_environment(api)
