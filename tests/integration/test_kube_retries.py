"""The adapter's one retry policy and its typed errors, against kubesim's injected faults.

Transient faults (429 with Retry-After, 5xx, connection resets, timeouts)
are retried while the budget in scope lasts; everything else fails at once
with an error class built from the Status body. Nothing aiohttp-specific
leaves the adapter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from rollbackd.kube import (
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    GoneError,
    InvalidError,
    Kube,
    KubeError,
    NotFoundError,
    RetryBudget,
    ServerError,
    TooManyRequestsError,
)
from rollbackd.kube.retry import budget_scope
from rollbackd.model import Target
from rollbackd.testing.kubesim import KubeSim

pytestmark = pytest.mark.integration

DEPLOYMENTS = "apps/v1/deployments"
TARGET = Target("default", "web")
WEB = r"^/apis/apps/v1/namespaces/default/deployments/web$"


def deployment(image: str = "web:1.0", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": TARGET.name, "namespace": TARGET.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def make_kube(sim: KubeSim, **options: Any) -> Kube:
    api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
    return Kube(api, **options)


@pytest_asyncio.fixture
async def kube(kubesim: KubeSim) -> AsyncIterator[Kube]:
    kubesim.store.create(DEPLOYMENTS, deployment())
    adapter = await make_kube(kubesim)  # default budget 0: the first error is raised
    async with adapter:
        yield adapter


def gets_of_web(sim: KubeSim, mark: int) -> list[tuple[float, int]]:
    return [
        (r.at, r.status)
        for r in sim.requests.since(mark)
        if r.verb == "get" and r.path.endswith("/deployments/web")
    ]


@pytest.mark.parametrize(
    ("status", "error", "reason", "transient"),
    [
        (403, ForbiddenError, "Forbidden", False),
        (409, ConflictError, "Conflict", False),
        (410, GoneError, "Expired", False),
        (422, InvalidError, "Invalid", False),
        (429, TooManyRequestsError, "TooManyRequests", True),
        (500, ServerError, "InternalError", True),
        (503, ServerError, "ServiceUnavailable", True),
    ],
)
async def test_errors_are_typed_from_the_status_body(
    kubesim: KubeSim, kube: Kube, status: int, error: type[KubeError], reason: str, transient: bool
) -> None:
    kubesim.faults.fail("get", WEB, status)
    with pytest.raises(error) as caught:
        await kube.read_deployment(TARGET)
    assert caught.value.status == status
    assert caught.value.reason == reason
    assert caught.value.transient is transient
    assert "kubesim injected fault" in str(caught.value)  # the Status message, verbatim
    assert (caught.value.retry_after == 1.0) is (status == 429)


async def test_a_missing_object_is_not_found(kube: Kube) -> None:
    with pytest.raises(NotFoundError) as caught:
        await kube.read_deployment(Target("default", "nope"))
    assert caught.value.reason == "NotFound" and not caught.value.transient


async def test_transient_errors_are_retried_within_the_budget(kubesim: KubeSim, kube: Kube) -> None:
    kubesim.faults.fail("get", WEB, 500, count=2)
    mark = kubesim.requests.mark()
    with budget_scope(RetryBudget(10.0)) as budget:
        current = await kube.read_deployment(TARGET)
    assert current["metadata"]["name"] == "web"
    assert [status for _, status in gets_of_web(kubesim, mark)] == [500, 500, 200]
    assert 0 < budget.spent < 2.0  # the waits were charged to the budget


async def test_429_waits_as_long_as_retry_after_says(kubesim: KubeSim, kube: Kube) -> None:
    kubesim.faults.fail("get", WEB, 429)
    mark = kubesim.requests.mark()
    with budget_scope(RetryBudget(10.0)):
        await kube.read_deployment(TARGET)
    (first, throttled), (second, ok) = gets_of_web(kubesim, mark)
    assert (throttled, ok) == (429, 200)
    assert second - first >= 1.0  # kubesim says Retry-After: 1


async def test_a_spent_budget_raises_the_last_transient_error(kubesim: KubeSim, kube: Kube) -> None:
    kubesim.faults.fail_for("get", WEB, 503, duration=30.0)
    mark = kubesim.requests.mark()
    started = time.monotonic()
    with budget_scope(RetryBudget(1.0)) as budget, pytest.raises(ServerError):
        await kube.read_deployment(TARGET)
    assert time.monotonic() - started < 3.0
    assert len(gets_of_web(kubesim, mark)) > 1  # it did try again first
    assert budget.exhausted or budget.remaining < 1.0


async def test_permanent_errors_are_never_retried(kubesim: KubeSim, kube: Kube) -> None:
    kubesim.faults.fail("get", WEB, 403, count=5)
    mark = kubesim.requests.mark()
    with budget_scope(RetryBudget(10.0)), pytest.raises(ForbiddenError):
        await kube.read_deployment(TARGET)
    assert len(gets_of_web(kubesim, mark)) == 1


async def test_a_reset_connection_is_a_typed_transient_error_and_retried(
    kubesim: KubeSim, kube: Kube
) -> None:
    # PATCH is not idempotent, so aiohttp does not re-send it on its own.
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"team": "shop"}}]
    kubesim.faults.reset("patch", WEB)
    with pytest.raises(ConnectionFailedError) as caught:
        await kube.patch_deployment(TARGET, ops)
    assert caught.value.transient
    assert not isinstance(caught.value.__cause__, KubeError)  # an aiohttp error, wrapped

    kubesim.faults.reset("patch", WEB)
    with budget_scope(RetryBudget(10.0)):
        patched = await kube.patch_deployment(TARGET, ops)
    assert patched["metadata"]["labels"] == {"team": "shop"}


async def test_a_request_that_times_out_is_retried(kubesim: KubeSim) -> None:
    kubesim.store.create(DEPLOYMENTS, deployment())
    kube = await make_kube(kubesim, request_timeout=0.3)
    async with kube:
        kubesim.faults.delay("get", WEB, 5.0, count=1)
        with pytest.raises(ConnectionFailedError):
            await kube.read_deployment(TARGET)
        kubesim.faults.delay("get", WEB, 5.0, count=1)
        with budget_scope(RetryBudget(5.0)):
            current = await kube.read_deployment(TARGET)
        assert current["metadata"]["name"] == "web"


async def test_the_default_budget_applies_outside_any_scope(kubesim: KubeSim) -> None:
    kubesim.store.create(DEPLOYMENTS, deployment())
    kube = await make_kube(kubesim, retry_budget=5.0)
    async with kube:
        kubesim.faults.fail("get", WEB, 503)
        assert (await kube.read_deployment(TARGET))["metadata"]["name"] == "web"


async def test_emit_event_never_raises_and_retries_a_transient_failure(
    kubesim: KubeSim, kube: Kube
) -> None:
    events = r"/namespaces/default/events$"
    kubesim.faults.reset("create", events)
    await kube.emit_event(TARGET, reason="RollbackPlanned", message="dropped")
    kubesim.faults.fail("create", events, 403)
    await kube.emit_event(TARGET, reason="RollbackPlanned", message="forbidden")

    kubesim.faults.fail("create", events, 503)
    with budget_scope(RetryBudget(10.0)):
        await kube.emit_event(TARGET, reason="RollbackStarted", message="delivered")
    ours = [
        e["reason"]
        for e in kubesim.store.list("v1/events", "default")
        if e.get("reportingComponent") == "rollbackd"
    ]
    assert ours == ["RollbackStarted"]


async def test_wait_template_change_ignores_everything_but_the_template(
    kubesim: KubeSim, kube: Kube
) -> None:
    await kube.start_watches()
    assert await kube.wait_synced(10)
    template = (await kube.read_deployment(TARGET))["spec"]["template"]
    waiting = asyncio.create_task(kube.wait_template_change(TARGET, template))

    mark = kubesim.requests.mark()
    current = kubesim.store.get(DEPLOYMENTS, "default", "web")
    current["spec"]["replicas"] = 3  # a spec change (new generation), but not the template's
    kubesim.store.update(DEPLOYMENTS, current)
    async with asyncio.timeout(10):
        while True:  # the watcher reads the new generation back...
            if any(status == 200 for _, status in gets_of_web(kubesim, mark)):
                break
            await asyncio.sleep(0.01)

    current = kubesim.store.get(DEPLOYMENTS, "default", "web")
    current["spec"]["template"]["spec"]["containers"][0]["image"] = "web:3.0"
    kubesim.store.update(DEPLOYMENTS, current)
    async with asyncio.timeout(10):
        changed = await waiting
    # ...and returns only for the template change: the scale alone did not count.
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"] == "web:3.0"
    assert changed["spec"]["replicas"] == 3


async def test_wait_template_change_raises_not_found_when_deleted(
    kubesim: KubeSim, kube: Kube
) -> None:
    await kube.start_watches()
    assert await kube.wait_synced(10)
    template = (await kube.read_deployment(TARGET))["spec"]["template"]
    waiting = asyncio.create_task(kube.wait_template_change(TARGET, template))
    kubesim.store.delete(DEPLOYMENTS, "default", "web")
    async with asyncio.timeout(10):
        with pytest.raises(NotFoundError):
            await waiting
