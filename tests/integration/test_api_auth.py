"""Secure by default, end to end: a real daemon on the loopback stack, real HTTP.

The stack is configured like an install with the chart's defaults plus an
operator token: Alertmanager's token (which the stack's real Alertmanager
sends) and a separate operator token. What an SRE relies on:

* without valid credentials, every /api/v1 request is 401 and nothing
  happens: no signal journaled, no rollback, the Deployment untouched;
* Alertmanager's token reads but cannot start a rollback (403);
* the operator token can, and its request is decided like any signal: the
  change window and the cooldown apply unless it says ``force``;
* ``force`` never lifts a guard (a mutable image to restore).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.daemon import manual_rollback
from rollbackd.manual import RollbackRefused
from rollbackd.model import Target
from rollbackd.testing.promstack import instant_query
from rollbackd.testing.stack import (
    API_HEADERS,
    OPERATOR_HEADERS,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WEB = Target("default", "web")
CACHE = Target("default", "cache")
# Every rollout is outside a 1 ms change window by the time a request arrives,
# and a 0 s min_stable makes v1 a stable target at once: no waiting on clocks.
POLICY = {"change_window": "1ms", "min_stable": "0s", "cooldown": "10m"}
NO_AUTH: dict[str, str] = {}
WRONG = {"Authorization": "Bearer not-the-token"}


def firing_alert(target: Target) -> dict[str, Any]:
    """An Alertmanager v4 body with one firing alert about ``target``."""
    labels = {
        "alertname": "DeploymentHighErrorRatio",
        "namespace": target.namespace,
        "deployment": target.name,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DeploymentHighErrorRatio"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollbackd",
        "groupLabels": {"alertname": "DeploymentHighErrorRatio"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "error ratio 0.5"},
                "startsAt": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": "0123456789abcdef",
            }
        ],
    }


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any = None,
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **headers}
    async with http.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else {}


def journaled_signals(journal: str) -> list[tuple[str, str]]:
    """(source, target) of every signal the journal accepted."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT source, namespace || '/' || name FROM signals WHERE accepted = 1"
        ).fetchall()
    finally:
        conn.close()
    return [(str(source), str(target)) for source, target in rows]


async def deploy_v1_then_v2(stack: Stack, target: Target, v1: str, v2: str) -> dict[str, Any]:
    """Two healthy revisions, v2 serving and scraped; returns v1 (what a rollback restores)."""
    await stack.create_deployment(deployment_manifest(target.name, image=v1, behaviour=knobs()))
    first = await stack.wait_rollout_complete(target.name)
    await roll_out(stack, target, v2)
    return first


async def roll_out(stack: Stack, target: Target, image: str) -> None:
    """A human's healthy deploy, complete and seen serving by Prometheus.

    Verification judges only samples taken after the rollback is ready; a
    Deployment Prometheus has not scraped yet would read as no data.
    """
    await stack.roll_out(target.name, image=image, behaviour=knobs())
    await stack.wait_rollout_complete(target.name)
    traffic = (
        f'sum(rate(http_requests_total{{namespace="{target.namespace}",'
        f'deployment="{target.name}"}}[3s]))'
    )

    async def scraped() -> bool:
        return bool(await instant_query(stack.prometheus.url, traffic))

    await wait_for(scraped, 30, f"Prometheus to see {target} serve")


async def test_who_may_do_what_on_a_running_daemon(tmp_path: Path) -> None:
    async with Stack(tmp_path, overrides={"policy": POLICY}) as stack:
        v1 = await deploy_v1_then_v2(
            stack, WEB, "registry.example/web:1.0.0", "registry.example/web:1.1.0"
        )
        api = f"{stack.daemon.url}/api/v1"
        start = {"target": str(WEB), "force": True}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # 1. No (valid) credentials: 401 on every /api/v1 request, whatever it asks.
            for headers in (NO_AUTH, WRONG):
                for method, path, body in (
                    ("POST", "/alerts", firing_alert(WEB)),
                    ("POST", "/rollbacks", start),
                    ("GET", "/rollbacks", None),
                    ("GET", "/rollbacks/anything/report", None),
                    ("POST", "/rollbacks/anything/approve", {}),
                    ("DELETE", "/rollbacks", None),
                ):
                    status, _ = await call(http, method, api + path, headers, body)
                    assert status == 401, (headers, method, path)

            # 2. Alertmanager's token: reads, never starts a rollback.
            status, found = await call(http, "GET", api + "/rollbacks", API_HEADERS)
            assert (status, found) == (200, {"rollbacks": []})
            status, found = await call(http, "POST", api + "/rollbacks", API_HEADERS, start)
            assert status == 403 and "operator token" in found["error"]

            # Nothing happened: not a signal journaled, the Deployment untouched.
            assert journaled_signals(stack.settings.journal.path) == []
            assert await stack.revision(WEB.name) == 2

            # 3. The operator token, no force: decided like any signal (change window).
            ask = {"target": str(WEB)}
            status, found = await call(http, "POST", api + "/rollbacks", OPERATOR_HEADERS, ask)
            assert (status, found["reason_code"]) == (409, "no_recent_rollout")
            assert "force" in found["hint"]
            assert await stack.revision(WEB.name) == 2

            # 4. With force: the change window is lifted, the rollback runs and verifies.
            status, found = await call(http, "POST", api + "/rollbacks", OPERATOR_HEADERS, start)
            assert status == 202, found
            done = await stack.wait_rollback(WEB, phases=("ROLLBACK_COMPLETED",))
            assert done.id == found["rollback_id"]
            restored = await stack.deployment(WEB.name)
            assert restored["spec"]["template"] == v1["spec"]["template"]

            # 5. A human deploys again; a request right after the rollback, no force:
            # the cooldown applies, and the answer says force lifts it.
            await roll_out(stack, WEB, "registry.example/web:1.2.0")
            status, found = await call(http, "POST", api + "/rollbacks", OPERATOR_HEADERS, ask)
            assert (status, found["reason_code"]) == (409, "cooldown")
            assert "force" in found["hint"]
            assert await stack.revision(WEB.name) == 4

            # With force, the cooldown is lifted too.
            status, found = await call(http, "POST", api + "/rollbacks", OPERATOR_HEADERS, start)
            assert status == 202, found

            async def second_rollback_completed() -> bool:
                rollbacks = await stack.daemon.journal.list_rollbacks(target=WEB)
                return any(
                    r.id == found["rollback_id"] and str(r.phase) == "ROLLBACK_COMPLETED"
                    for r in rollbacks
                )

            await wait_for(second_rollback_completed, 90, "the forced rollback in cooldown")
            restored = await stack.deployment(WEB.name)
            assert restored["spec"]["template"]["spec"] == v1["spec"]["template"]["spec"]

            # 6. Force never lifts a guard: v1 of cache is a mutable image reference.
            await deploy_v1_then_v2(
                stack, CACHE, "registry.example/cache", "registry.example/cache:2"
            )
            forced = {"target": str(CACHE), "force": True}
            status, found = await call(http, "POST", api + "/rollbacks", OPERATOR_HEADERS, forced)
            assert (status, found["reason_code"]) == (409, "guard_mutable_image")
            assert "hint" not in found
            assert await stack.revision(CACHE.name) == 2

        # Only the operator's requests ever reached the journal: the unauthenticated
        # alert and the forced request sent without credentials never did.
        signals = journaled_signals(stack.settings.journal.path)
        assert signals == [("manual", str(WEB))] * 4 + [("manual", str(CACHE))]


async def test_the_cli_rollback_honours_force_only_when_given(tmp_path: Path) -> None:
    async with Stack(tmp_path, overrides={"policy": POLICY}, with_daemon=False) as stack:
        v1 = await deploy_v1_then_v2(
            stack, WEB, "registry.example/web:1.0.0", "registry.example/web:1.1.0"
        )

        with pytest.raises(RollbackRefused, match="no_recent_rollout"):
            await manual_rollback(stack.settings, WEB)
        assert await stack.revision(WEB.name) == 2

        rollback_id = await manual_rollback(stack.settings, WEB, force=True, reason="bad config")

        assert rollback_id
        restored = await stack.deployment(WEB.name)
        assert restored["spec"]["template"] == v1["spec"]["template"]
