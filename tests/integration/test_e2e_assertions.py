"""Data assertions end to end: kubesim, the real Prometheus and Alertmanager, rollbackd.

Three Deployments are rolled out badly at once (v2 fails 30 % of its
requests) and rolled back to their v1. Verification then asks each restored
v1 its data assertions, with the real Prometheus scraping kubesim's workload
metrics:

* ``shop`` v1 serves without errors: its assertion holds, ROLLBACK_COMPLETED;
* ``cart`` v1 fails 2 % of its 100 requests/s per pod (every second holds
  errors, so every window does): under the error-ratio signal's 5 %,
  so metrics look healthy, but its assertion ("no 500 at all") fails:
  ESCALATED, and the page quotes the assertion, the query as sent and the value;
* ``basket`` names an assertion that passes check-config but that Prometheus
  refuses (400 bad_data, a misspelt function): ESCALATED as a broken
  assertion, never counted as health.

An ``applies_to: all`` assertion (the restored version serves traffic) is
checked for all three without any annotation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from rollbackd.config.assertions import ANNOTATION_ASSERTIONS
from rollbackd.model import Phase, Rollback, Target
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP, CART, BASKET = (
    Target("default", "shop"),
    Target("default", "cart"),
    Target("default", "basket"),
)
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s
SELECTOR = 'namespace="{namespace}",deployment="{deployment}"'
ASSERTIONS = [
    {
        "name": "no-server-errors",
        "expr": f'sum(rate(http_requests_total{{{SELECTOR},code="500"}}[{{window}}]))',
        "op": "==",
        "value": 0,
        "description": "not one request answered 500 since the rollback",
    },
    {
        # Balanced and with known placeholders: only Prometheus can tell "rat" is no function.
        "name": "misspelt",
        "expr": f"sum(rat(http_requests_total{{{SELECTOR}}}[{{window}}]))",
        "op": ">",
        "value": 0,
    },
    {
        "name": "serves-traffic",
        "expr": f"sum(rate(http_requests_total{{{SELECTOR}}}[{{window}}]))",
        "op": ">",
        "value": 1,
        "applies_to": "all",
    },
]


@pytest.fixture
async def stack(tmp_path: Any) -> AsyncIterator[Stack]:
    overrides = {"verify": {"intervals": 3, "timeout": "60s", "assertions": ASSERTIONS}}
    async with Stack(tmp_path / "stack", overrides=overrides) as started:
        yield started


async def roll_back_to_v1(
    stack: Stack, target: Target, v1_behaviour: Mapping[str, str], assertions: str
) -> Rollback:
    """A stable v1 naming ``assertions``, a bad v2, and the rollback's end."""
    await stack.create_deployment(
        deployment_manifest(
            target.name,
            image=f"registry.example/{target.name}:1.4.0",
            behaviour=v1_behaviour,
            annotations={ANNOTATION_ASSERTIONS: assertions},
        )
    )
    await stack.wait_rollout_complete(target.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)  # policy: only a stable v1 is restored
    await stack.roll_out(
        target.name,
        image=f"registry.example/{target.name}:1.5.0",
        behaviour=knobs(error_rate=0.3),
    )
    return await stack.wait_rollback(target, phases=("ROLLBACK_COMPLETED", "ESCALATED"))


async def verify_details(stack: Stack, rollback_id: str) -> list[str]:
    timeline = await stack.daemon.journal.timeline(rollback_id)
    return [str(e.data.get("detail")) for e in timeline if e.kind == "verify_interval"]


async def critical_page(stack: Stack, rollback: Rollback) -> dict[str, Any]:
    page = await stack.sink.wait_for(
        lambda r: (
            r.path == PAGERDUTY_PATH
            and isinstance(r.json, dict)
            and r.json.get("dedup_key") == rollback.id
            and r.json.get("payload", {}).get("severity") == "critical"
        ),
        timeout=20,
    )
    payload: dict[str, Any] = page.json["payload"]
    return payload


async def test_assertions_decide_how_each_restored_version_ends(stack: Stack) -> None:
    shop, cart, basket = await asyncio.gather(
        roll_back_to_v1(stack, SHOP, knobs(), "no-server-errors"),
        roll_back_to_v1(stack, CART, knobs(error_rate=0.02, rps=100), "no-server-errors"),
        roll_back_to_v1(stack, BASKET, knobs(), "misspelt"),
    )

    # shop: every assertion held at every interval.
    assert shop.phase is Phase.ROLLBACK_COMPLETED, shop.reason
    details = await verify_details(stack, shop.id)
    assert len(details) >= 3
    for detail in details[-3:]:
        assert 'assertion "serves-traffic" holds' in detail, detail
        assert 'assertion "no-server-errors" holds: sum(rate(http_requests_total{' in detail
        assert 'deployment="shop",code="500"}' in detail and "= 0 (== 0)" in detail

    # cart: metrics healthy, the assertion fails; that interval is the last (evidence).
    assert cart.phase is Phase.ESCALATED, cart.reason
    assert cart.reason_code == "verify_assertion_failed"
    details = await verify_details(stack, cart.id)
    failed = [i for i, d in enumerate(details) if 'assertion "no-server-errors" failed' in d]
    assert failed == [len(details) - 1], details
    payload = await critical_page(stack, cart)
    summary = payload["summary"]
    for quoted in (
        'assertion "no-server-errors" failed: ',
        'sum(rate(http_requests_total{namespace="default",deployment="cart",code="500"}[',
        "expected == 0",
    ):
        assert quoted in summary, summary
    seen = float(summary.split("]))")[1].split(" = ")[1].split(",")[0])
    assert 2 < seen < 8, summary  # 2 pods x 100 rps x 2 % = 4 errors/s
    assert payload["custom_details"]["reason_code"] == "verify_assertion_failed"

    # basket: Prometheus's 400 names the broken assertion; it is not health.
    assert basket.phase is Phase.ESCALATED, basket.reason
    assert basket.reason_code == "verify_assertion_invalid"
    payload = await critical_page(stack, basket)
    for quoted in ('assertion "misspelt" is broken', "HTTP 400", "bad_data", "rat"):
        assert quoted in payload["summary"], payload["summary"]
