"""The HTTP server: webhook status mapping, auth, health, metrics, rollback API, OpenAPI.

Clients made by ``make_client`` without an explicit ``auth`` talk to a
server that requires credentials (Alertmanager's token and a separate
operator token) and send Alertmanager's token by default.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from rollbackd.approval import Outcome, Verdict
from rollbackd.errors import NotLeaderError
from rollbackd.metrics import Metrics
from rollbackd.model import Phase, RecordKind, Rollback, Target
from rollbackd.server import (
    AcceptError,
    AcceptResult,
    AuthSettings,
    create_app,
    openapi_document,
)
from rollbackd.sources.alertmanager import (
    PayloadError,
    RejectedAlert,
    parse_body,
    validate_alert,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TARGET = Target("shop", "checkout")
ALERT_TOKEN = "alertmanager-t0ken"
OPERATOR_TOKEN = "operator-t0ken"
AS_ALERTMANAGER = {"Authorization": f"Bearer {ALERT_TOKEN}"}
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
DEFAULT_AUTH = AuthSettings(bearer_token=ALERT_TOKEN, operator_token=OPERATOR_TOKEN)
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
    data: Mapping[str, Any] = field(default_factory=dict)  # as the journal's TimelineEntry


@dataclass
class FakeJournal:
    rollbacks: list[Rollback] = field(default_factory=lambda: [ROLLBACK])
    list_calls: list[tuple[int, Target | None]] = field(default_factory=list)

    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None, kind: RecordKind | None = None
    ) -> list[Rollback]:
        self.list_calls.append((limit, target))
        return [
            r
            for r in self.rollbacks
            if (target is None or r.target == target) and (kind is None or r.kind == kind)
        ][:limit]

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
    manual_calls: list[tuple[Target, bool, bool]]  # target, dry_run, force
    refusal: ValueError | None = None  # what the manual rollback raises, when set


MakeClient = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], Harness]]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        auth: AuthSettings | None = None,
        max_body_bytes: int = 1 << 20,
        body_timeout: float = 10.0,
        sink: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[TestClient[web.Request, web.Application], Harness]:
        """A client; with the default auth it sends Alertmanager's token unless ``headers``."""
        harness = Harness(FakeSink(), FakeJournal(), Metrics(), [(True, "leader")], [])
        default_headers = dict(headers if headers is not None else {})
        if auth is None:
            auth = DEFAULT_AUTH
            default_headers = dict(AS_ALERTMANAGER if headers is None else headers)

        async def manual(target: Target, dry_run: bool, *, force: bool, reason: str) -> str:
            harness.manual_calls.append((target, dry_run, force))
            if harness.refusal is not None:
                raise harness.refusal
            if target.name == "missing":
                raise LookupError("no Deployment shop/missing")
            if target.name == "busy":
                raise ValueError("a rollback is already in flight")
            if target.name == "standby":
                raise NotLeaderError("this replica is a standby: send the request to the leader")
            return "rb-manual"

        async def give_verdict(rollback_id: str, verdict: Verdict) -> Outcome:
            return Outcome(202, verdict.word, "PLANNING")  # tests/unit/test_approval.py

        app = create_app(
            alert_sink=sink or harness.sink,
            journal=harness.journal,
            metrics=harness.metrics,
            readiness=lambda: harness.ready[-1],
            auth=auth,
            manual_rollback=manual,
            give_verdict=give_verdict,
            max_body_bytes=max_body_bytes,
            body_timeout=body_timeout,
        )
        client = TestClient(TestServer(app, host="127.0.0.1", port=0), headers=default_headers)
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


async def post_alerts(
    client: TestClient[web.Request, web.Application],
    data: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> ClientResponse:
    """POST a webhook body declared as Alertmanager declares it."""
    return await client.post(
        "/api/v1/alerts", data=data, headers={"Content-Type": content_type, **(headers or {})}
    )


# --- webhook -------------------------------------------------------------


async def test_webhook_hands_the_body_to_the_sink_and_reports_counts(
    make_client: MakeClient,
) -> None:
    client, h = await make_client()
    h.sink.result = AcceptResult(accepted=2, duplicates=3, unresolved=1)
    resp = await post_alerts(client, b'{"version": "4"}')
    assert resp.status == 200
    assert await resp.json() == {
        "accepted": 2,
        "duplicates": 3,
        "unresolved": 1,
        "rejected": [],
        "rejected_total": 0,
    }
    assert h.sink.bodies == [b'{"version": "4"}']
    assert webhook_count(h.metrics, "200") == 1


@pytest.mark.parametrize(
    ("error", "status", "path"),
    [
        (PayloadError("body is not valid JSON"), 400, "$"),
        (
            PayloadError("unsupported webhook version", status=422, path="$.version"),
            422,
            "$.version",
        ),
        # A PayloadError is the body's fault whatever status it carries: never a retried 5xx.
        (PayloadError("odd", status=503, path="$.alerts"), 400, "$.alerts"),
    ],
)
async def test_a_body_that_will_never_work_is_4xx_with_the_reason_and_path(
    make_client: MakeClient, error: PayloadError, status: int, path: str
) -> None:
    client, h = await make_client()
    h.sink.error = error
    resp = await post_alerts(client, b"{}")
    assert resp.status == status
    assert await resp.json() == {"error": str(error), "path": path}
    assert webhook_count(h.metrics, str(status)) == 1


async def test_rejected_alerts_are_listed_beside_the_accepted_ones(make_client: MakeClient) -> None:
    client, h = await make_client()
    rejected = [{"index": 1, "path": "$.alerts[1].startsAt", "reason": "out of range"}]
    h.sink.result = AcceptResult(accepted=2, duplicates=0, unresolved=0, rejected=rejected)
    resp = await post_alerts(client, b"{}")
    assert resp.status == 200
    body = await resp.json()
    assert (body["accepted"], body["rejected"], body["rejected_total"]) == (2, rejected, 1)


@pytest.mark.parametrize(
    ("counts", "status"),
    [((0, 0, 0), 422), ((0, 1, 0), 200), ((0, 0, 1), 200), ((1, 0, 0), 200)],
)
async def test_a_body_whose_every_alert_is_rejected_is_422(
    make_client: MakeClient, counts: tuple[int, int, int], status: int
) -> None:
    client, h = await make_client()
    rejected = [{"index": 0, "path": "$.alerts[0].labels", "reason": "no labels"}]
    h.sink.result = AcceptResult(*counts, rejected=rejected)
    resp = await post_alerts(client, b"{}")
    assert resp.status == status
    body = await resp.json()
    assert body["rejected"] == rejected
    if status == 422:
        assert body["path"] == "$.alerts" and "every alert" in body["error"]


async def test_an_empty_alert_list_is_not_all_rejected(make_client: MakeClient) -> None:
    client, h = await make_client()
    h.sink.result = AcceptResult(accepted=0, duplicates=0, unresolved=0)
    assert (await post_alerts(client, b"{}")).status == 200


async def test_the_rejected_list_in_the_answer_is_bounded(make_client: MakeClient) -> None:
    client, h = await make_client()
    rejected = [{"index": i, "path": f"$.alerts[{i}]", "reason": "x"} for i in range(5000)]
    h.sink.result = AcceptResult(accepted=1, duplicates=0, unresolved=0, rejected=rejected)
    body = await (await post_alerts(client, b"{}")).json()
    assert len(body["rejected"]) == 100
    assert body["rejected"] == rejected[:100]
    assert body["rejected_total"] == 5000


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; charset=UTF-8",
        'application/json;charset="utf-8"',
    ],
)
async def test_json_content_types_are_accepted(make_client: MakeClient, content_type: str) -> None:
    client, h = await make_client()
    resp = await post_alerts(client, b"{}", content_type=content_type)
    assert resp.status == 200
    assert h.sink.bodies == [b"{}"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/json; charset=iso-8859-1",
        "application/jsonx",
        "",
    ],
)
async def test_other_content_types_are_415_naming_the_expected_one(
    make_client: MakeClient, content_type: str
) -> None:
    client, h = await make_client()
    resp = await post_alerts(client, b"{}", content_type=content_type)
    assert resp.status == 415
    body = await resp.json()
    assert body["expected"] == "application/json"
    assert "application/json" in body["error"]
    assert h.sink.bodies == []
    assert webhook_count(h.metrics, "415") == 1


async def test_no_content_type_at_all_is_415(make_client: MakeClient) -> None:
    client, h = await make_client()
    # skip_auto_headers keeps aiohttp from adding application/octet-stream.
    resp = await client.post("/api/v1/alerts", data=b"{}", skip_auto_headers=["Content-Type"])
    assert resp.status == 415
    assert h.sink.bodies == []


async def test_credentials_are_checked_before_the_content_type(make_client: MakeClient) -> None:
    client, _ = await make_client(auth=AuthSettings(bearer_token="t"))
    resp = await post_alerts(client, b"{}", content_type="text/plain")
    assert resp.status == 401


async def test_a_sink_that_cannot_accept_now_answers_503_so_alertmanager_retries(
    make_client: MakeClient,
) -> None:
    client, h = await make_client()
    h.sink.error = AcceptError("journal unavailable")
    resp = await post_alerts(client, b"{}")
    assert resp.status == 503
    assert "journal unavailable" in (await resp.json())["error"]
    assert webhook_count(h.metrics, "503") == 1


async def test_an_unexpected_sink_failure_is_retryable_not_a_crash(make_client: MakeClient) -> None:
    client, h = await make_client()
    h.sink.error = RuntimeError("boom")
    resp = await post_alerts(client, b"{}")
    assert resp.status == 503
    # The server keeps serving after it.
    h.sink.error = None
    assert (await post_alerts(client, b"{}")).status == 200


async def test_an_oversized_body_is_413_and_never_reaches_the_sink(make_client: MakeClient) -> None:
    client, h = await make_client(max_body_bytes=2048)
    resp = await post_alerts(client, b"x" * 4096)
    assert resp.status == 413
    assert "2048" in (await resp.json())["error"]
    assert h.sink.bodies == []
    assert webhook_count(h.metrics, "413") == 1


async def test_bearer_token_is_required_when_configured(make_client: MakeClient) -> None:
    client, h = await make_client(auth=AuthSettings(bearer_token="s3cret"))
    missing = await post_alerts(client, b"{}")
    wrong = await post_alerts(client, b"{}", {"Authorization": "Bearer nope"})
    right = await post_alerts(client, b"{}", {"Authorization": "Bearer s3cret"})
    assert (missing.status, wrong.status, right.status) == (401, 401, 200)
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="rollbackd"'
    assert len(h.sink.bodies) == 1
    assert webhook_count(h.metrics, "401") == 2


async def test_basic_auth_checks_username_and_password(make_client: MakeClient) -> None:
    client, _ = await make_client(
        auth=AuthSettings(basic_username="alertmanager", basic_password="pw")
    )

    async def status(header: str) -> int:
        resp = await post_alerts(client, b"{}", {"Authorization": header})
        return resp.status

    assert await status(basic("alertmanager", "pw")) == 200
    assert await status(basic("alertmanager", "wrong")) == 401
    assert await status(basic("someone", "pw")) == 401
    assert await status("Basic !!!not-base64") == 401
    assert await status("Bearer pw") == 401  # bearer is not configured
    resp = await post_alerts(client, b"{}")
    assert resp.headers.getall("WWW-Authenticate") == ['Basic realm="rollbackd", charset="UTF-8"']


async def test_either_scheme_works_when_both_are_configured(make_client: MakeClient) -> None:
    client, _ = await make_client(
        auth=AuthSettings(bearer_token="t", basic_username="u", basic_password="p")
    )
    for header in ("Bearer t", basic("u", "p")):
        resp = await post_alerts(client, b"{}", {"Authorization": header})
        assert resp.status == 200
    resp = await post_alerts(client, b"{}")
    assert len(resp.headers.getall("WWW-Authenticate")) == 2


def test_auth_settings_need_some_credential() -> None:
    with pytest.raises(ValueError, match="bearer token or basic auth"):
        AuthSettings()
    with pytest.raises(ValueError, match="both a username and a password"):
        AuthSettings(basic_username="u")


def test_the_operator_token_must_differ_from_alertmanagers_credential() -> None:
    with pytest.raises(ValueError, match="must differ"):
        AuthSettings(bearer_token="same", operator_token="same")
    with pytest.raises(ValueError, match="must differ"):
        AuthSettings(basic_username="am", basic_password="same", operator_token="same")
    with pytest.raises(ValueError, match="must not be empty"):
        AuthSettings(bearer_token="")


# --- secure by default: who may do what -----------------------------------------

# Every /api/v1 route, plus what only exists to be probed (unknown paths, wrong methods).
API_REQUESTS = [
    ("POST", "/api/v1/alerts"),
    ("GET", "/api/v1/rollbacks"),
    ("POST", "/api/v1/rollbacks"),
    ("GET", "/api/v1/rollbacks/rb-1"),
    ("GET", "/api/v1/rollbacks/rb-1/report"),
    ("POST", "/api/v1/rollbacks/rb-1"),
    ("DELETE", "/api/v1/rollbacks/rb-1"),
    ("POST", "/api/v1/rollbacks/rb-1/approve"),
    ("GET", "/api/v1/nope"),
    ("GET", "/api/v2/rollbacks"),
    ("GET", "/nope"),
]


@pytest.mark.parametrize(("method", "path"), API_REQUESTS)
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Bearer", "Basic " + "x" * 8, "t0ken"], ids=repr
)
async def test_without_valid_credentials_every_api_request_is_401_and_nothing_happens(
    make_client: MakeClient, method: str, path: str, header: str | None
) -> None:
    client, h = await make_client(headers={"Authorization": header} if header else {})
    resp = await client.request(
        method, path, json={"target": "shop/checkout", "force": True, "alerts": []}
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="rollbackd"'
    assert (await resp.json())["error"] == "authentication required"
    assert (h.sink.bodies, h.manual_calls, h.journal.list_calls) == ([], [], [])


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/openapi.yaml", "/openapi.json"]
)
async def test_probes_metrics_and_the_document_need_no_credentials(
    make_client: MakeClient, path: str
) -> None:
    client, _ = await make_client(headers={})
    assert (await client.get(path)).status == 200


async def test_alertmanagers_token_posts_alerts_and_reads_but_cannot_start_a_rollback(
    make_client: MakeClient,
) -> None:
    client, h = await make_client(headers=AS_ALERTMANAGER)
    assert (await post_alerts(client, b"{}")).status == 200
    assert (await client.get("/api/v1/rollbacks")).status == 200
    assert (await client.get("/api/v1/rollbacks/rb-1")).status == 200
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout", "force": True})
    assert resp.status == 403
    assert "operator token" in (await resp.json())["error"]
    assert h.manual_calls == []


async def test_basic_auth_is_alertmanagers_credential_too_never_an_operators(
    make_client: MakeClient,
) -> None:
    auth = AuthSettings(basic_username="am", basic_password="pw", operator_token=OPERATOR_TOKEN)
    client, h = await make_client(auth=auth, headers={"Authorization": basic("am", "pw")})
    assert (await post_alerts(client, b"{}")).status == 200
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout"})
    assert resp.status == 403
    assert h.manual_calls == []


async def test_the_operator_token_starts_a_rollback_and_reads(make_client: MakeClient) -> None:
    client, h = await make_client(headers=AS_OPERATOR)
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout"})
    assert resp.status == 202
    assert (await client.get("/api/v1/rollbacks")).status == 200
    assert h.manual_calls == [(TARGET, False, False)]


@pytest.mark.parametrize("allow_unauthenticated", [False, True])
async def test_without_an_operator_token_manual_rollbacks_are_disabled(
    make_client: MakeClient, allow_unauthenticated: bool
) -> None:
    auth = AuthSettings(bearer_token=ALERT_TOKEN, allow_unauthenticated=allow_unauthenticated)
    client, h = await make_client(auth=auth, headers=AS_ALERTMANAGER)
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout"})
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert "manual rollbacks over HTTP are disabled" in error
    assert "webhook.operator_token_file" in error
    assert h.manual_calls == []


async def test_allow_unauthenticated_opens_alerts_and_reads_never_manual_rollbacks(
    make_client: MakeClient,
) -> None:
    auth = AuthSettings(allow_unauthenticated=True, operator_token=OPERATOR_TOKEN)
    with capture_logs() as logs:
        client, h = await make_client(auth=auth, headers={})
    assert (await post_alerts(client, b"{}")).status == 200
    assert (await client.get("/api/v1/rollbacks")).status == 200
    anonymous = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout"})
    assert anonymous.status == 403
    operator = await client.post(
        "/api/v1/rollbacks", json={"target": "shop/checkout"}, headers=AS_OPERATOR
    )
    assert operator.status == 202
    assert h.manual_calls == [(TARGET, False, False)]
    # Said at start, and visible to whoever scrapes the metrics.
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "api_authentication_disabled"
    ]
    assert h.metrics.registry.get_sample_value("rollbackd_auth_disabled") == 1
    assert "rollbackd_auth_disabled 1.0" in await (await client.get("/metrics")).text()


async def test_auth_disabled_metric_is_0_when_credentials_are_required(
    make_client: MakeClient,
) -> None:
    with capture_logs() as logs:
        _, h = await make_client()
    assert h.metrics.registry.get_sample_value("rollbackd_auth_disabled") == 0
    assert not [e for e in logs if e["event"] == "api_authentication_disabled"]


def test_an_app_without_auth_settings_is_refused() -> None:
    with pytest.raises(TypeError, match="allow_unauthenticated"):
        create_app(
            alert_sink=FakeSink(),
            journal=FakeJournal(),
            metrics=Metrics(),
            readiness=lambda: (True, ""),
            auth=None,  # type: ignore[arg-type]
        )


# --- manual rollbacks: force, refusals ----------------------------------------------


async def test_force_is_passed_only_when_asked_for(make_client: MakeClient) -> None:
    client, h = await make_client(headers=AS_OPERATOR)
    for body in (
        {"target": "shop/checkout"},
        {"target": "shop/checkout", "force": False},
        {"target": "shop/checkout", "force": True, "dry_run": True, "reason": "bad config"},
    ):
        assert (await client.post("/api/v1/rollbacks", json=body)).status == 202
    assert h.manual_calls == [(TARGET, False, False), (TARGET, False, False), (TARGET, True, True)]


@dataclass(frozen=True)
class FakeDecision:
    reason_code: str


class FakeRefusal(ValueError):
    """Shaped like manual.RollbackRefused: a ValueError carrying the decision."""

    def __init__(self, reason_code: str) -> None:
        super().__init__(f"{reason_code}: refused")
        self.decision = FakeDecision(reason_code)


@pytest.mark.parametrize(
    ("reason_code", "force", "hinted"),
    [
        ("cooldown", False, True),
        ("no_recent_rollout", False, True),
        ("cooldown", True, False),
        ("guard_mutable_image", False, False),
        ("guard_disallowed_fields", False, False),
        ("paused", False, False),
    ],
)
async def test_a_refusal_says_when_force_would_override_it(
    make_client: MakeClient, reason_code: str, force: bool, hinted: bool
) -> None:
    client, h = await make_client(headers=AS_OPERATOR)
    h.refusal = FakeRefusal(reason_code)
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout", "force": force})
    assert resp.status == 409
    body = await resp.json()
    assert body["reason_code"] == reason_code
    assert ("hint" in body) is hinted


# --- redaction -------------------------------------------------------------------------


async def test_errors_records_and_reports_never_show_url_credentials(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaky = "GET http://am:hunter2@prom:9090/api/v1/query?access_token=s3cr3t failed"
    client, h = await make_client(headers=AS_OPERATOR)
    h.journal.rollbacks = [replace(ROLLBACK, reason=leaky)]
    h.refusal = FakeRefusal("no_previous_revision")
    h.refusal.args = (leaky,)
    texts = [
        await (await client.post("/api/v1/rollbacks", json={"target": "a/b"})).text(),
        await (await client.get("/api/v1/rollbacks")).text(),
        await (await client.get("/api/v1/rollbacks/rb-1")).text(),
        await (await client.get("/api/v1/rollbacks/rb-1/report")).text(),
    ]
    for text in texts:
        assert "hunter2" not in text and "s3cr3t" not in text, text
        assert "am:***@prom:9090" in text, text


# --- poison bodies, through the real parsing steps --------------------------


class ParsingSink:
    """The intake's parsing steps without its journal: parse_body, then validate_alert each."""

    async def accept_alerts(self, body: bytes) -> AcceptResult:
        raw = parse_body(body)
        checked = [validate_alert(i, alert) for i, alert in enumerate(raw.raw_alerts)]
        rejected = [c.as_json() for c in checked if isinstance(c, RejectedAlert)]
        return AcceptResult(
            accepted=len(checked) - len(rejected), duplicates=0, unresolved=0, rejected=rejected
        )


def good_alert(fingerprint: str = "a1b2c3d4e5f60718", **changes: Any) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "cart"},
        "annotations": {"summary": "cart 5xx ratio above 5%"},
        "startsAt": "2024-05-01T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
        **changes,
    }


def webhook(*alerts: Any) -> bytes:
    # json.dumps writes a lone surrogate as the escape "\udfff", as a broken sender would.
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts)}).encode()


POISON_BODIES: list[tuple[str, bytes, int, str, str | None]] = [
    # (name, body, status, path of the answer, path of the first rejected alert)
    (
        "lone-surrogate-fingerprint",
        webhook(good_alert(fingerprint="\udfff")),
        422,
        "$.alerts",
        "$.alerts[0].fingerprint",
    ),
    (
        "lone-surrogate-label-value",
        webhook(good_alert(labels={"alertname": "X", "namespace": "sh\udfffop"})),
        422,
        "$.alerts",
        "$.alerts[0].labels.namespace",
    ),
    (
        "5000-digit-integer",
        webhook(good_alert()).replace(b'"status": "firing"', b'"n": ' + b"9" * 5000, 1),
        400,
        "$",
        None,
    ),
    ("100000-deep-nesting", b"[" * 100_000 + b"]" * 100_000, 400, "$", None),
    (
        "starts-before-year-1-in-utc",
        webhook(good_alert(startsAt="0001-01-01T00:00:00+14:00")),
        422,
        "$.alerts",
        "$.alerts[0].startsAt",
    ),
    (
        "starts-after-year-9999-in-utc",
        webhook(good_alert(startsAt="9999-12-31T23:59:59-14:00")),
        422,
        "$.alerts",
        "$.alerts[0].startsAt",
    ),
    ("not-json", b"alerts=1&version=4", 400, "$", None),
    ("alerts-not-a-list", b'{"version": "4", "alerts": {}}', 422, "$.alerts", None),
    ("no-version", b'{"alerts": []}', 422, "$.version", None),
]


@pytest.mark.parametrize(
    ("body", "status", "path", "alert_path"),
    [case[1:] for case in POISON_BODIES],
    ids=[case[0] for case in POISON_BODIES],
)
async def test_a_poison_body_is_the_senders_4xx_naming_the_json_path(
    make_client: MakeClient, body: bytes, status: int, path: str, alert_path: str | None
) -> None:
    client, h = await make_client(sink=ParsingSink())
    resp = await post_alerts(client, body)
    assert resp.status == status
    answer = await resp.json()
    assert answer["path"] == path
    assert answer["error"]
    if alert_path is not None:
        assert [r["path"] for r in answer["rejected"]] == [alert_path]
    assert webhook_count(h.metrics, str(status)) == 1
    # The server is unharmed: the next good body is taken.
    assert (await post_alerts(client, webhook(good_alert()))).status == 200


async def test_one_poison_alert_does_not_cost_the_good_ones_beside_it(
    make_client: MakeClient,
) -> None:
    client, _ = await make_client(sink=ParsingSink())
    body = webhook(
        good_alert("f0"),
        good_alert("\udfff"),
        good_alert("f2"),
        good_alert("f3", startsAt="9999-12-31T23:59:59-14:00"),
    )
    resp = await post_alerts(client, body)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["path"]) for r in answer["rejected"]] == [
        (1, "$.alerts[1].fingerprint"),
        (3, "$.alerts[3].startsAt"),
    ]


async def test_a_body_that_claims_gzip_but_is_not_is_400(make_client: MakeClient) -> None:
    client, h = await make_client()
    resp = await post_alerts(client, webhook(good_alert()), {"Content-Encoding": "gzip"})
    assert resp.status == 400
    assert "could not be read" in (await resp.json())["error"]
    assert h.sink.bodies == []


# --- slow bodies ---------------------------------------------------------------


@dataclass
class Trickled:
    head: bytes  # status line and headers of the answer
    body_bytes_sent: int


async def trickle(
    client: TestClient[web.Request, web.Application],
    path: str,
    *,
    content_length: int = 10_000,
    interval: float = 0.02,
    headers: Mapping[str, str] = AS_ALERTMANAGER,
) -> Trickled:
    """POST over a raw socket, one body byte per ``interval``, until the server answers."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    sent = 0

    async def drip() -> None:
        nonlocal sent
        while sent < content_length:
            writer.write(b"{" if sent == 0 else b" ")
            await writer.drain()
            sent += 1
            await asyncio.sleep(interval)  # the slow client's pace, not a wait for the server

    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    writer.write(head.encode())
    dripping = asyncio.create_task(drip())
    try:
        async with asyncio.timeout(10):  # fail, do not hang, when no answer comes
            answer = await reader.readuntil(b"\r\n\r\n")
    finally:
        dripping.cancel()
        writer.close()
    return Trickled(answer, sent)


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


async def test_a_webhook_body_slower_than_body_timeout_is_408(make_client: MakeClient) -> None:
    client, h = await make_client(body_timeout=0.3)
    result = await trickle(client, "/api/v1/alerts")
    assert status_of(result.head) == 408
    assert b"connection: close" in result.head.lower()
    # Bytes kept arriving well inside the timeout: the deadline covers the whole body.
    assert result.body_bytes_sent >= 3
    assert h.sink.bodies == []
    assert webhook_count(h.metrics, "408") == 1


async def test_a_manual_rollback_body_slower_than_body_timeout_is_408(
    make_client: MakeClient,
) -> None:
    client, h = await make_client(body_timeout=0.3)
    result = await trickle(client, "/api/v1/rollbacks", headers=AS_OPERATOR)
    assert status_of(result.head) == 408
    assert h.manual_calls == []


async def test_a_body_sent_at_once_is_unaffected_by_a_short_body_timeout(
    make_client: MakeClient,
) -> None:
    client, h = await make_client(body_timeout=0.3)
    assert (await post_alerts(client, b"{}")).status == 200
    resp = await client.post(
        "/api/v1/rollbacks", json={"target": "shop/checkout"}, headers=AS_OPERATOR
    )
    assert resp.status == 202
    assert (h.sink.bodies, h.manual_calls) == ([b"{}"], [(TARGET, False, False)])


def test_body_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="body_timeout"):
        create_app(
            alert_sink=FakeSink(),
            journal=FakeJournal(),
            metrics=Metrics(),
            readiness=lambda: (True, ""),
            auth=DEFAULT_AUTH,
            body_timeout=0,
        )


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
    await post_alerts(client, b"{}")
    h.sink.error = PayloadError("bad")
    await post_alerts(client, b"{}")
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
                "kind": "rollback",
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


async def test_report_is_the_postmortem_draft_in_markdown_or_json(
    make_client: MakeClient,
) -> None:
    client, _ = await make_client()
    resp = await client.get("/api/v1/rollbacks/rb-1/report")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/markdown; charset=utf-8"
    text = await resp.text()
    assert text.startswith("# Rollback `rb-1`")
    for heading in ("## Summary", "## Impact", "## The change that caused it", "## Action items"):
        assert heading in text
    resp = await client.get("/api/v1/rollbacks/rb-1/report?format=json")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert body["schema"] == "rollbackd.postmortem/v1"
    assert body["rollback"]["id"] == "rb-1"
    # The API built without a Prometheus says so; it never makes up a zero.
    assert body["impact"]["status"] == "unavailable"
    bad = await client.get("/api/v1/rollbacks/rb-1/report?format=pdf")
    assert bad.status == 400
    assert "format must be one of markdown, json" in (await bad.json())["error"]


async def test_api_reads_need_credentials_when_auth_is_configured(make_client: MakeClient) -> None:
    client, _ = await make_client(auth=AuthSettings(bearer_token="t"))
    assert (await client.get("/api/v1/rollbacks")).status == 401
    assert (await client.get("/api/v1/rollbacks/rb-1")).status == 401
    ok = await client.get("/api/v1/rollbacks", headers={"Authorization": "Bearer t"})
    assert ok.status == 200


async def test_manual_rollback_starts_and_maps_refusals(make_client: MakeClient) -> None:
    client, h = await make_client(headers=AS_OPERATOR)
    resp = await client.post("/api/v1/rollbacks", json={"target": "shop/checkout", "dry_run": True})
    assert resp.status == 202
    assert await resp.json() == {"rollback_id": "rb-manual"}
    assert h.manual_calls == [(TARGET, True, False)]
    missing = await client.post("/api/v1/rollbacks", json={"target": "shop/missing"})
    busy = await client.post("/api/v1/rollbacks", json={"target": "shop/busy"})
    assert (missing.status, busy.status) == (404, 409)
    assert "in flight" in (await busy.json())["error"]
    standby = await client.post("/api/v1/rollbacks", json={"target": "shop/standby"})
    assert standby.status == 503  # retryable: the leader can take it
    assert "standby" in (await standby.json())["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"target": "no-slash"}',
        b'{"target": "a/b", "dry_run": "yes"}',
        b'{"target": "a/b", "force": "yes"}',
        b'{"target": "a/b", "reason": 5}',
        b'{"target": "a/b", "approve": true}',
        b'{"target": "a/b", "n": ' + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"target": "a/\xff"}',
    ],
)
async def test_manual_rollback_rejects_bad_requests(make_client: MakeClient, body: bytes) -> None:
    client, h = await make_client(headers=AS_OPERATOR)
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
