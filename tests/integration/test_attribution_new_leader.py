"""A new leader's first look at a Deployment rollbackd just rolled back.

The poller that takes over after a leader change (or a restart) has no
streaks: its first breaching look at the restored Deployment comes after
the restored revision was ready, while the query window still holds the
replaced revision's errors. That is the old anomaly, not a breach of the
restored revision, so it must join the finished rollback and never page
"no ping-pong: manual rollback needed".

Real Prometheus (1 s scrapes, a 30 s signal window so the old errors stay
in it long enough), kubesim, the in-process daemon stopped and started
again on the same journal, the pager sink. Alert rules are made too slow to
fire, so the poller alone sees the regression. The signals are the built-in
ones as users often write their own: counting every series in the window,
the replaced pods' too (the built-in ones leave those out, and would not
see the old errors once the bad pods are gone).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from rollbackd.model import Phase, Target
from rollbackd.signals import DEFAULT_SIGNALS
from rollbackd.testing.stack import (
    ALERT_RULES,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration.test_e2e_loop import wait_poll_cycles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
WINDOW = "30s"
SILENT_RULES = ALERT_RULES.replace("for: 2s", "for: 10m")


def counting_replaced_pods(template: str) -> str:
    """``(rate(x[w]) and x)`` back to ``(rate(x[w]))``: every series the window holds."""
    return re.sub(r"\(rate\(([^()]+)\) and [a-z_]+\)", r"(rate(\1))", template)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    signals = [
        {
            **asdict(spec),
            "query": counting_replaced_pods(spec.query),
            "traffic_query": counting_replaced_pods(spec.traffic_query or ""),
            "window": WINDOW,
            "for_count": 2,
        }
        for spec in DEFAULT_SIGNALS
    ]
    assert all(" and " not in s["query"] + s["traffic_query"] for s in signals), signals
    async with Stack(
        tmp_path / "stack",
        alert_rules=SILENT_RULES,
        overrides={"prometheus": {"signals": signals}},
    ) as started:
        yield started


def pages(stack: Stack) -> list[dict[str, Any]]:
    return [r.json for r in stack.sink.requests_to(PAGERDUTY_PATH) if isinstance(r.json, dict)]


async def test_a_new_leaders_first_look_at_the_replaced_revisions_errors_never_pages(
    stack: Stack,
) -> None:
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=1)
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)
    await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))
    rollback = await stack.wait_rollback(SHOP, phases=("ROLLBACK_COMPLETED", "ESCALATED"))
    assert rollback.phase is Phase.ROLLBACK_COMPLETED
    await stack.sink.wait_for_count(PAGERDUTY_PATH, 2, timeout=20)  # trigger + resolve
    assert {p["dedup_key"] for p in pages(stack)} == {rollback.id}

    # The leader goes; the next one starts with no streaks, well inside the window.
    first_term = {d["signal_key"] for d in await stack.daemon.journal.decisions(target=SHOP)}
    await stack.stop_daemon()
    daemon = await stack.start_daemon()

    async def new_leaders_polled_decision() -> dict[str, Any] | None:
        decisions = await daemon.journal.decisions(target=SHOP, limit=200)
        fresh = [
            d
            for d in decisions
            if d["signal_key"].startswith("prom:") and d["signal_key"] not in first_term
        ]
        return fresh[0] if fresh else None

    # The new poller does see the old errors (this is what would page) ...
    decision = await wait_for(
        new_leaders_polled_decision, 40, "the new leader's poller to report the old errors"
    )
    # ... and attributes them to the revision the finished rollback replaced.
    assert (decision["action"].value, decision["reason_code"]) == (
        "join",
        "anomaly_before_restore",
    ), decision
    assert decision["rollback_id"] == rollback.id
    assert "first seen" in decision["reason"], decision["reason"]
    timeline = await daemon.journal.timeline(rollback.id)
    assert any(e.kind == "signal_attributed" for e in timeline)

    # No page but the rollback's own while the new poller keeps looking at the old errors.
    await wait_poll_cycles(stack, 3)
    assert {p["dedup_key"] for p in pages(stack)} == {rollback.id}
    assert len(pages(stack)) == 2
    assert await stack.revision(SHOP.name) == 3
