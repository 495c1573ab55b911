"""Smoke checks: what is sent, and how an answer (or silence) is judged.

The checks run against a real aiohttp server on loopback, reached the way
``verify.smoke_via: cluster-dns`` reaches a Service, with the DNS name
replaced by the loopback address.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS, SmokeCheck, checks_named
from rollbackd.model import Target
from rollbackd.smoke import EXCERPT_CHARS, ServicePort, ServiceRef, SmokeChecker, SmokeContext
from rollbackd.smoke_transport import ClusterDnsTransport, smoke_context

TARGET = Target("shop", "checkout")


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class App:
    """A service whose answer per path is scripted; it records every request."""

    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    hang: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(request.method, request.path_qs, dict(request.headers), await request.read())
        )
        if request.path == "/hang":
            await self.hang.wait()  # released at teardown
        status, body = self.answers.get(request.path, (200, {"status": "ok"}))
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")


@pytest_asyncio.fixture
async def app() -> AsyncIterator[App]:
    state = App()
    server = web.Application()
    server.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(server, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = int(runner.addresses[0][1])
    try:
        yield state
    finally:
        state.hang.set()
        await runner.cleanup()


def checker(app_port: int, *checks: SmokeCheck, names: str | None = None) -> SmokeChecker:
    annotations = {} if names is None else {ANNOTATION_SMOKE_CHECKS: names}
    service = ServiceRef("checkout-svc", (ServicePort("http", app_port),))

    async def context(target: Target) -> SmokeContext:
        return SmokeContext(annotations, (service,))

    transport = ClusterDnsTransport("http://127.0.0.1:{port}")
    return SmokeChecker(checks, transport, context)


def check(**fields: Any) -> SmokeCheck:
    return SmokeCheck.model_validate({"name": "orders", "url": "/orders", **fields})


async def test_the_url_template_names_the_target_and_its_service(app: App) -> None:
    probe = check(url="/probe/{namespace}/{service}?for={deployment}")
    (outcome,) = await checker(app.port, probe, names="orders").run(TARGET)
    assert outcome.ok, outcome.detail
    assert app.seen[0].path_qs == "/probe/shop/checkout-svc?for=checkout"
    assert outcome.status == 200
    assert 'smoke check "orders" GET /probe/shop/checkout-svc?for=checkout' in outcome.detail


async def test_method_headers_and_body_are_sent_as_configured(app: App) -> None:
    post = check(
        method="post",
        headers={"Content-Type": "application/json", "X-Smoke": "1"},
        body='{"sku": 42}',
        expect_status=201,
    )
    app.answers["/orders"] = (201, {"id": 7})
    (outcome,) = await checker(app.port, post, names="orders").run(TARGET)
    assert outcome.ok, outcome.detail
    seen = app.seen[0]
    assert (seen.method, seen.headers["X-Smoke"]) == ("POST", "1")
    assert json.loads(seen.body) == {"sku": 42}


async def test_another_status_fails_quoting_the_check_the_status_and_the_body(app: App) -> None:
    app.answers["/orders"] = (503, {"error": "database unreachable"})
    (outcome,) = await checker(app.port, check(), names="orders").run(TARGET)
    assert not outcome.ok
    assert outcome.status == 503
    assert 'smoke check "orders"' in outcome.detail
    assert "status 503, expected 200" in outcome.detail
    assert "database unreachable" in outcome.detail


@pytest.mark.parametrize(
    ("body", "assertion", "problem"),
    [
        ({"status": "ok"}, {"path": "status", "equals": "ok"}, ""),
        ({"data": {"items": [{"id": 3}]}}, {"path": "data.items.0.id", "equals": 3}, ""),
        ({"status": "degraded"}, {"path": "status", "equals": "ok"}, 'is "degraded"'),
        ({"data": {}}, {"path": "data.items.0.id", "equals": 3}, "data.items.0.id is missing"),
        ({"items": [1]}, {"path": "items.5", "equals": 1}, "items.5 is missing"),
        ({"ready": 1}, {"path": "ready", "equals": True}, "is 1, expected true"),
        ("<html>oops</html>", {"path": "status", "equals": "ok"}, "body is not JSON"),
    ],
)
async def test_json_fields_are_asserted_by_dotted_path(
    app: App, body: Any, assertion: dict[str, Any], problem: str
) -> None:
    app.answers["/orders"] = (200, body)
    probe = check(expect_json=[assertion])
    (outcome,) = await checker(app.port, probe, names="orders").run(TARGET)
    assert outcome.ok is (not problem), outcome.detail
    assert problem in outcome.detail


async def test_no_answer_in_time_is_a_failure_not_missing_data(app: App) -> None:
    slow = check(url="/hang", timeout="200ms")
    (outcome,) = await checker(app.port, slow, names="orders").run(TARGET)
    assert not outcome.ok
    assert outcome.status is None
    assert "no answer in 0.2s" in outcome.detail


async def test_a_refused_connection_is_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # bound, never listening: connections are refused
        (outcome,) = await checker(closed_port, check(), names="orders").run(TARGET)
    assert not outcome.ok
    assert "no answer:" in outcome.detail


async def test_the_body_excerpt_is_bounded_and_masks_credentials(app: App) -> None:
    app.answers["/orders"] = (500, "Authorization: Bearer abcdefghijklmnop " + "x" * 5000)
    (outcome,) = await checker(app.port, check(), names="orders").run(TARGET)
    assert "abcdefghijklmnop" not in outcome.detail
    assert "Bearer ***" in outcome.detail
    assert len(outcome.detail) < EXCERPT_CHARS + 200


async def test_only_the_checks_the_deployment_names_run_in_its_order(app: App) -> None:
    first, second = check(name="first", url="/a"), check(name="second", url="/b")
    unused = check(name="unused", url="/c")
    outcomes = await checker(app.port, first, second, unused, names=" second, first,").run(TARGET)
    assert [o.name for o in outcomes] == ["second", "first"]
    assert [s.path_qs for s in app.seen] == ["/b", "/a"]


async def test_no_annotation_runs_nothing(app: App) -> None:
    assert await checker(app.port, check()).run(TARGET) == ()
    assert app.seen == []


async def test_an_unknown_name_fails_with_the_reason_instead_of_crashing(app: App) -> None:
    outcomes = await checker(app.port, check(), names="orders,typo").run(TARGET)
    assert [(o.name, o.ok) for o in outcomes] == [("orders", True), ("typo", False)]
    assert 'smoke check "typo" is not configured' in outcomes[1].detail
    assert "configured: orders" in outcomes[1].detail


async def test_a_port_the_service_lacks_fails_without_a_request(app: App) -> None:
    (outcome,) = await checker(app.port, check(port="grpc"), names="orders").run(TARGET)
    assert not outcome.ok
    assert "no port grpc" in outcome.detail
    assert app.seen == []


def test_the_annotation_lists_names_separated_by_commas() -> None:
    assert checks_named(" a, b ,,a ") == ("a", "b")
    assert checks_named("") == ()
    assert checks_named(None) == ()


def test_the_context_keeps_only_services_selecting_the_pods_with_their_ports() -> None:
    deployment = {
        "metadata": {"annotations": {ANNOTATION_SMOKE_CHECKS: "orders"}},
        "spec": {"template": {"metadata": {"labels": {"app": "checkout", "tier": "web"}}}},
    }
    services = [
        {
            "metadata": {"name": "checkout"},
            "spec": {"selector": {"app": "checkout"}, "ports": [{"name": "http", "port": 80}]},
        },
        {"metadata": {"name": "other"}, "spec": {"selector": {"app": "cart"}, "ports": []}},
        {"metadata": {"name": "headless"}, "spec": {"ports": [{"port": 81}]}},
    ]
    context = smoke_context(deployment, services)
    assert context.services == (ServiceRef("checkout", (ServicePort("http", 80),)),)
    assert context.annotations[ANNOTATION_SMOKE_CHECKS] == "orders"
