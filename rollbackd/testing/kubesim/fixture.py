"""pytest plugin: a started kubesim per test.

``kubesim`` yields a running ``KubeSim`` (namespaces ``default`` and
``kube-system`` exist); ``kubesim_kubeconfig`` is the path of its kubeconfig,
for tests that hand it to kubectl or kubernetes-asyncio.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest_asyncio

from . import KubeSim


@pytest_asyncio.fixture
async def kubesim(tmp_path: pathlib.Path) -> AsyncIterator[KubeSim]:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig", pod_ready_delay=0.2) as sim:
        yield sim


@pytest_asyncio.fixture
async def kubesim_kubeconfig(kubesim: KubeSim) -> pathlib.Path:
    return kubesim.kubeconfig
