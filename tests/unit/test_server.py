"""The HTTP server: webhook status mapping, auth, health, metrics, rollback API, OpenAPI."""

from __future__ import annotations

import base64
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rollbackd.metrics import Metrics
from rollbackd.model import Phase, Rollback, Target
from rollbackd.server import (
    AcceptError,
    AcceptResult,
    AuthSettings,
    create_app,
    openapi_document,
)
from rollbackd.sources.alertmanager import PayloadError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TARGET = Target("shop", "checkout")
ROLLBACK = Rollback(
    id="rb-1",
    target=TARGET,
    phase=Phase.ROLLBACK_COMPLETED,
    started_at=T0,
    updated_at=T0,
    from_revision=7,
    to_revision=6,
    reason_code="rollback",
    reason="error ratio 0.3 > 0.05 after revision 7",
    finished_at=T0,
)


class FakeSink:
    """Records bodies; answers with a fixed result or raises a given error."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.result = AcceptResult(accepted=1, duplicates=0, unresolved=0)
        self.error: Exception | None = None

    async def accept_alerts(self, body: bytes) -> AcceptResult:
        self.bodies.append(body)
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    message: str
    data: Mapping[str, Any] | None = None


@dataclass
class FakeJournal:
    rollbacks: list[Rollback] = field(default_factory=lambda: [ROLLBACK])
    list_calls: list[tuple[int, Target | None]] = field(default_factory=list)

    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None
    ) -> list[Rollback]:
        self.list_calls.append((limit, target))
        return [r for r in self.rollbacks if target is None or r.target == target][:limit]

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return next((r for r in self.rollbacks if r.id == rollback_id), None)

    async def timeline(self, rollback_id: str) -> list[Entry]:
        return [
            Entry(T0, "phase", "PLANNING"),
            Entry(T0, "images", "restored", {"digests": ["sha256:abc"], "at": T0}),
        ]

    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None:
        return {"signal": "error_ratio"}


@dataclass
class Harness:
    sink: FakeSink
    journal: FakeJournal
    metrics: Metrics
    ready: list[tuple[bool, str]]
    manual_calls: list[tuple[Target, bool]]


MakeClient = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], Harness]]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        auth: AuthSettings | None = None, max_body_bytes: int = 1 << 20
    ) -> tuple[TestClient[web.Request, web.Application], Harness]:
        harness = Harness(FakeSink(), FakeJournal(), Metrics(), [(True, "leader")], [])

        async def manual(target: Target, dry_run: bool) -> str:
            harness.manual_calls.append((target, dry_run))
            if target.name == "missing":
                raise LookupError("no Deployment shop/missing")
            if target.name == "busy":
                raise ValueError("a rollback is already in flight")
            return "rb-manual"

        app = create_app(
            alert_sink=harness.sink,
            journal=harness.journal,
            metrics=harness.metrics,
            readiness=lambda: harness.ready[-1],
            auth=auth,
            manual_rollback=manual,
            max_body_bytes=max_body_bytes,
        )
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return client, harness

    yield make
    for client in clients:
        await client.close()


def webhook_count(metrics: Metrics, code: str) -> float:
    value = metrics.registry.get_sample_value("rollbackd_webhook_requests_total", {"code": code})
    return value or 0.0


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- webhook -------------------------------------------------------------


async def test_webhook_hands_the_body_to_the_sink_and_reports_counts(
    make_client: MakeClient,
) -> None:
    client, h = await make_client()
    h.sink.result = AcceptResult(accepted=2, duplicates=3, unresolved=1)
    resp = await client.post("/api/v1/alerts", data=b'{"version": "4"}')
    assert resp.status == 200
    assert await resp.json() == {"accepted": 2, "duplicates": 3, "unresolved": 1}
    assert h.sink.bodies == [b'{"version": "4"}']
    assert webhook_count(h.metrics, "200") == 1


async def test_a_body_that_will_never_parse_is_400_with_the_reason(make_client: MakeClient) -> None:
    client, h = await make_client()
    h.sink.error = PayloadError("alerts[0].startsAt: not a timestamp")
    resp = await client.post("/api/v1/alerts", data=b"{}")
    assert resp.status == 400
    assert await resp.json() == {"error": "alerts[0].startsAt: not a timestamp"}
    assert webhook_count(h.metrics, "400") == 1


async def test_a_sink_that_cannot_accept_now_answers_503_so_alertmanager_retries(
    make_client: MakeClient,
) -> None:
    client, h = await make_client()
    h.sink.error = AcceptError("journal unavailable")
    resp = await client.post("/api/v1/alerts", data=b"{}")
    assert resp.status == 503
    assert "journal unavailable" in (await resp.json())["error"]
    assert webhook_count(h.metrics, "503") == 1


async def test_an_unexpected_sink_failure_is_retryable_not_a_crash(make_client: MakeClient) -> None:
    client, h = await make_client()
    h.sink.error = RuntimeError("boom")
    resp = await client.post("/api/v1/alerts", data=b"{}")
    assert resp.status == 503
    # The server keeps serving after it.
    h.sink.error = None
    assert (await client.post("/api/v1/alerts", data=b"{}")).status == 200


async def test_an_oversized_body_is_413_and_never_reaches_the_sink(make_client: MakeClient) -> None:
    client, h = await make_client(max_body_bytes=2048)
    resp = await client.post("/api/v1/alerts", data=b"x" * 4096)
    assert resp.status == 413
    assert "2048" in (await resp.json())["error"]
    assert h.sink.bodies == []
    assert webhook_count(h.metrics, "413") == 1


async def test_bearer_token_is_required_when_configured(make_client: MakeClient) -> None:
    client, h = await make_client(auth=AuthSettings(bearer_token="s3cret"))
    missing = await client.post("/api/v1/alerts", data=b"{}")
    wrong = await client.post(
        "/api/v1/alerts", data=b"{}", headers={"Authorization": "Bearer nope"}
    )
    right = await client.post(
        "/api/v1/alerts", data=b"{}", headers={"Authorization": "Bearer s3cret"}
    )
    assert (missing.status, wrong.status, right.status) == (401, 401, 200)
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="rollbackd"'
    assert len(h.sink.bodies) == 1
    assert webhook_count(h.metrics, "401") == 2


async def test_basic_auth_checks_username_and_password(make_client: MakeClient) -> None:
    client, _ = await make_client(
        auth=AuthSettings(basic_username="alertmanager", basic_password="pw")
    )

    async def status(header: str) -> int:
        resp = await client.post("/api/v1/alerts", data=b"{}", headers={"Authorization": header})
        return resp.status

    assert await status(basic("alertmanager", "pw")) == 200
    assert await status(basic("alertmanager", "wrong")) == 401
    assert await status(basic("someone", "pw")) == 401
    assert await status("Basic !!!not-base64") == 401
    assert await status("Bearer pw") == 401  # bearer is not configured
    resp = await client.post("/api/v1/alerts", data=b"{}")
    assert resp.headers.getall("WWW-Authenticate") == ['Basic realm="rollbackd", charset="UTF-8"']


async def test_either_scheme_works_when_both_are_configured(make_client: MakeClient) -> None:
    client, _ = await make_client(
        auth=AuthSettings(bearer_token="t", basic_username="u", basic_password="p")
    )
    for header in ("Bearer t", basic("u", "p")):
        resp = await client.post("/api/v1/alerts", data=b"{}", headers={"Authorization": header})
        assert resp.status == 200
    resp = await client.post("/api/v1/alerts", data=b"{}")
    assert len(resp.headers.getall("WWW-Authenticate")) == 2


def test_auth_settings_need_some_credential() -> None:
    with pytest.raises(ValueError, match="bearer token or basic auth"):
        AuthSettings()
    with pytest.raises(ValueError, match="both a username and a password"):
        AuthSettings(basic_username="u")


# --- health, readiness, metrics -------------------------------------------


async def test_health_and_readiness(make_client: MakeClient) -> None:
    client, h = await make_client(auth=AuthSettings(bearer_token="t"))
    assert (await client.get("/healthz")).status == 200  # probes carry no credentials
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"ready": True, "reason": "leader"}
    h.ready.append((False, "cluster cache not synced"))
    not_ready = await client.get("/readyz")
    assert not_ready.status == 503
    assert await not_ready.json() == {"ready": False, "reason": "cluster cache not synced"}


async def test_metrics_page_shows_the_webhook_counts(make_client: MakeClient) -> None:
    client, h = await make_client()
    await client.post("/api/v1/alerts", data=b"{}")
    h.sink.error = PayloadError("bad")
    await client.post("/api/v1/alerts", data=b"{}")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'rollbackd_webhook_requests_total{code="200"} 1.0' in text
    assert 'rollbackd_webhook_requests_total{code="400"} 1.0' in text


# --- rollback API ------------------------------------------------------------


async def test_lists_rollbacks_with_limit_and_target_filter(make_client: MakeClient) -> None:
    client, h = await make_client()
    resp = await client.get(
        "/api/v1/rollbacks", params={"limit": "5", "namespace": "shop", "name": "checkout"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "rollbacks": [
            {
                "id": "rb-1",
                "target": "shop/checkout",
                "namespace": "shop",
                "name": "checkout",
                "phase": "ROLLBACK_COMPLETED",
                "from_revision": 7,
                "to_revision": 6,
                "reason_code": "rollback",
                "reason": "error ratio 0.3 > 0.05 after revision 7",
                "started_at": T0.isoformat(),
                "updated_at": T0.isoformat(),
                "finished_at": T0.isoformat(),
            }
        ]
    }
    assert h.journal.list_calls == [(5, TARGET)]


@pytest.mark.parametrize(
    "params",
    [{"limit": "many"}, {"limit": "0"}, {"limit": "100000"}, {"namespace": "shop"}, {"name": "x"}],
)
async def test_bad_list_parameters_are_400(make_client: MakeClient, params: dict[str, str]) -> None:
    client, h = await make_client()
    resp = await client.get("/api/v1/rollbacks", params=params)
    assert resp.status == 400
    assert (await resp.json())["error"]
    assert h.journal.list_calls == []


async def test_one_rollback_includes_its_timeline(make_client: MakeClient) -> None:
    client, _ = await make_client()
    resp = await client.get("/api/v1/rollbacks/rb-1")
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == "rb-1"
    assert body["details"] == {"signal": "error_ratio"}
    assert body["timeline"] == [
        {"at": T0.isoformat(), "kind": "phase", "message": "PLANNING", "data": {}},
        {
            "at": T0.isoformat(),
            "kind": "images",
            "message": "restored",
            # Values JSON does not know are shown as text, not a 500.
            "data": {"digests": ["sha256:abc"], "at": str(T0)},
        },
    ]


async def test_unknown_rollback_is_a_json_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    for path in ("/api/v1/rollbacks/rb-nope", "/api/v1/rollbacks/rb-nope/report"):
        resp = await client.get(path)
        assert resp.status == 404
        assert "rb-nope" in (await resp.json())["error"]


async def test_report_is_markdown_from_the_report_renderer(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Rollback, int, Any]] = []

    def render_report(rollback: Rollback, timeline: list[Entry], details: Any = None) -> str:
        seen.append((rollback, len(timeline), details))
        return f"# Rollback {rollback.id}\n"

    monkeypatch.setitem(
        sys.modules, "rollbackd.report", types.SimpleNamespace(render_report=render_report)
    )
    client, _ = await make_client()
    resp = await client.get("/api/v1/rollbacks/rb-1/report")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert await resp.text() == "# Rollback rb-1\n"
    assert seen == [(ROLLBACK, 2, {"signal": "error_ratio"})]


async def test_api_reads_need_credentials_when_auth_is_configured(make_client: MakeClient) -> None:
    client, _ = await make_client(auth=AuthSettings(bearer_token="t"))
    assert (await client.get("/api/v1/rollbacks")).status == 401
    assert (await client.get("/api/v1/rollbacks/rb-1")).status == 401
    ok = await client.get("/api/v1/rollbacks", headers={"Authorization": "Bearer t"})
    assert ok.status == 200


async def test_manual_rollback_starts_and_maps_refusals(make_client: MakeClient) -> None:
    client, h = await make_client()
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout", "dry_run": True})
    assert resp.status == 202
    assert await resp.json() == {"rollback_id": "rb-manual"}
    assert h.manual_calls == [(TARGET, True)]
    missing = await client.post("/api/v1/rollbacks", json={"target": "shop/missing"})
    busy = await client.post("/api/v1/rollbacks", json={"target": "shop/busy"})
    assert (missing.status, busy.status) == (404, 409)
    assert "in flight" in (await busy.json())["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"target": "no-slash"}',
        b'{"target": "a/b", "dry_run": "yes"}',
        b'{"target": "a/b", "force": true}',
    ],
)
async def test_manual_rollback_rejects_bad_requests(make_client: MakeClient, body: bytes) -> None:
    client, h = await make_client()
    resp = await client.post(
        "/api/v1/rollbacks", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]
    assert h.manual_calls == []


async def test_manual_rollback_needs_credentials_when_configured(make_client: MakeClient) -> None:
    client, h = await make_client(auth=AuthSettings(bearer_token="t"))
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout"})
    assert resp.status == 401
    assert h.manual_calls == []


async def test_unknown_routes_and_methods_answer_json(make_client: MakeClient) -> None:
    client, _ = await make_client()
    missing = await client.get("/nope")
    assert missing.status == 404
    assert "error" in await missing.json()
    wrong_method = await client.get("/api/v1/alerts")
    assert wrong_method.status == 405
    assert "POST" in wrong_method.headers["Allow"]


# --- OpenAPI -------------------------------------------------------------------


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method.lower(), str(path)))
    return routes


def _document_routes(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


async def test_openapi_document_describes_exactly_the_app_routes(make_client: MakeClient) -> None:
    client, _ = await make_client()
    _, document = openapi_document()
    assert document["openapi"].startswith("3.1")
    assert _app_routes(client.app) == _document_routes(document)


async def test_openapi_is_served_as_yaml_and_json(make_client: MakeClient) -> None:
    client, _ = await make_client()
    as_json = await client.get("/openapi.json")
    as_yaml = await client.get("/openapi.yaml")
    assert as_json.status == as_yaml.status == 200
    assert as_yaml.headers["Content-Type"].startswith("application/yaml")
    assert (await as_json.json()) == openapi_document()[1]
