"""The postmortem draft of a real rollback, through the real CLI.

kubesim, the real Prometheus and Alertmanager, rollbackd in process: v1 runs
healthy; a release changes the image, an env var and a secret-looking env
var at once (``kubectl patch``), and fails 30 % of its requests; rollbackd
rolls back and verifies. ``rollbackd report ID`` (a separate process, as an
engineer would run it) must then draft the review: the impact counted by
Prometheus over the incident window with the query printed, the three
durations, the change with the secret masked, and the fix-forward item;
the daemon's API serves the same draft. With Prometheus stopped the draft still renders and says why the impact is
missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rollbackd.model import Target
from rollbackd.testing.stack import WEBHOOK_TOKEN, Stack, deployment_manifest, knobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
SECRET_V2 = "hunter2-in-v2"


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack") as started:
        yield started


async def run(*argv: str) -> tuple[int, str, str]:
    """A command in its own process; the daemon keeps running on this loop meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, out.decode(), err.decode()


async def release_bad_v2(stack: Stack) -> None:
    """One patch, as a CI pipeline would apply it: image, env and behaviour together."""
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": knobs(error_rate=0.3)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": V2,
                            "env": [
                                {"name": "LOG_LEVEL", "value": "debug"},
                                {"name": "DB_PASSWORD", "value": SECRET_V2},
                            ],
                        }
                    ]
                },
            }
        }
    }
    code, _, err = await run(
        "kubectl",
        "--kubeconfig",
        str(stack.sim.kubeconfig),
        "patch",
        "deployment",
        SHOP.name,
        "--type",
        "strategic",
        "-p",
        json.dumps(patch),
    )
    assert code == 0, err


def report_argv(stack: Stack, rollback_id: str, *extra: str) -> list[str]:
    journal = str(stack.settings.journal.path)
    return [sys.executable, "-m", "rollbackd", "report", rollback_id, "--journal", journal, *extra]


async def test_the_draft_of_a_real_rollback(stack: Stack) -> None:
    await stack.create_deployment(deployment_manifest(SHOP.name, image=V1, behaviour=knobs()))
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: only a stable v1 is restored
    await release_bad_v2(stack)
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert str(rollback.phase) == "ROLLBACK_COMPLETED", rollback.reason

    prom = ("--prometheus-url", stack.prometheus.url)
    code, out, err = await run(*report_argv(stack, rollback.id, *prom, "--format", "json"))
    assert code == 0, err
    draft = json.loads(out)
    assert draft["schema"] == "rollbackd.postmortem/v1"
    impact = draft["impact"]
    assert impact["status"] == "measured", impact["reason"]
    assert impact["failed_requests"] > 0 and impact["total_requests"] > impact["failed_requests"]
    assert 'deployment="shop"' in impact["failed_query"]
    assert draft["window"]["start_source"] == "bad rollout began (new ReplicaSet created)"
    for name in ("detect", "mitigate", "verify"):
        span = draft["durations"][name]
        assert span["why_missing"] is None and span["seconds"] > 0, (name, span)
    fields = {
        (f["container"], f["field"]): (f["bad"], f["restored"]) for f in draft["change"]["fields"]
    }
    assert fields[("app", "image")] == (V2, V1)
    assert fields[("app", "env LOG_LEVEL")] == ("debug", "(absent)")
    assert fields[("app", "env DB_PASSWORD")] == ("***", "(absent)")
    assert draft["action_items"][0].startswith(f"Fix forward: the bad revision 2's image `{V2}`")
    assert SECRET_V2 not in out

    code, markdown, err = await run(*report_argv(stack, rollback.id, *prom))
    assert code == 0, err
    for heading in ("## Summary", "## Impact", "## The change that caused it", "## Action items"):
        assert heading in markdown
    assert "```promql" in markdown and SECRET_V2 not in markdown

    # The daemon's API serves the same draft, its impact asked with the daemon's adapter.
    url = f"http://127.0.0.1:{stack.rollbackd_port}/api/v1/rollbacks/{rollback.id}/report"
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"format": "json"}, headers=headers) as resp,
    ):
        assert resp.status == 200
        served = await resp.json()
    assert served["impact"]["status"] == "measured"
    assert served["change"] == draft["change"] and served["durations"] == draft["durations"]

    # Prometheus gone: the draft still renders, and says why the impact is missing.
    await stack.prometheus.stop()
    code, out, err = await run(*report_argv(stack, rollback.id, *prom, "--format", "json"))
    assert code == 0, err
    impact = json.loads(out)["impact"]
    assert impact["status"] == "unavailable" and "Prometheus unreachable" in impact["reason"]
    assert impact["failed_requests"] is None

    code, _, err = await run(*report_argv(stack, "rb-does-not-exist"))
    assert code == 1 and "no rollback with id 'rb-does-not-exist'" in err
