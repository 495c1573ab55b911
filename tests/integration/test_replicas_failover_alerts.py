"""Two replicas both receiving alerts for one bad Deployment while the leader changes.

During a failover the webhook Service may route to either replica, and
Alertmanager configured with both endpoints sends every notification to
each. Two real `rollbackd run` processes (replica-a leads, replica-b stands
by, each with its own journal, as the chart's emptyDir gives them) get the
same storm of alerts; replica-a is stopped (SIGTERM, or SIGKILL) right
after its rollback patch.

What the design says a follower does with alerts it accepts: it journals
them (2xx means committed in its own journal) and decides nothing; on
becoming leader it replays every undecided one. So: every alert answered 2xx
by either replica is in that replica's journal, and every alert is decided
by the replica that leads at the end; alerts the stopped leader accepted and
had not decided stay durable in its journal for its next term.

And the rollback happens once: one template change (revision 3, nothing
after it), resumed by replica-b under the same rollback id, verified; one
incident at the pager (every trigger under the rollback's dedup key) and one
resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbackd.model import Phase, Target
from rollbackd.state import RollbackState
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import (
    API_HEADERS,
    PAGERDUTY_PATH,
    Stack,
    deployment_manifest,
    knobs,
    wait_for,
)
from tests.integration._replicas import readyz_reason, recorded_state, rollback_ids
from tests.integration._storm import Senders, accepted_fingerprints

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5
FAST_RETRIES = {"backoff_initial": "500ms", "backoff_max": "5s"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


class BothReplicas(Senders):
    """Senders posting every body of unique alerts to each replica, as Alertmanager would."""

    def __init__(self, urls: list[str], starts_at: datetime, senders: int = 3) -> None:
        super().__init__(senders, timeout=5)
        self.urls = urls
        self.starts_at = starts_at.isoformat()
        self.acknowledged: dict[str, set[str]] = {url: set() for url in urls}

    async def _send(self) -> None:
        while True:
            fps = self.fingerprints(4)
            alerts = [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "DeploymentHighErrorRatio",
                        "namespace": SHOP.namespace,
                        "deployment": SHOP.name,
                    },
                    "startsAt": self.starts_at,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": fp,
                }
                for fp in fps
            ]
            body = {"version": "4", "status": "firing", "receiver": "rollbackd", "alerts": alerts}
            for url in self.urls:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self._session.post(
                        f"{url}/api/v1/alerts", json=body, headers=API_HEADERS
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.acknowledged[url].update(fps)
            await asyncio.sleep(0.02)


def accepted_pages(stack: Stack) -> list[dict[str, Any]]:
    return [
        r.json
        for r in stack.sink.requests_to(PAGERDUTY_PATH)
        if isinstance(r.json, dict) and 200 <= r.status < 300
    ]


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_alerts_to_both_replicas_across_a_leader_change_roll_back_once(
    stack: Stack, tmp_path: Path, stop: str
) -> None:
    journal_a = tmp_path / "replica-a" / "journal.sqlite"
    journal_b = tmp_path / "replica-b" / "journal.sqlite"
    a = DaemonProcess(
        stack.daemon_config(
            leader_election={"identity": "replica-a"},
            notify=FAST_RETRIES,
            journal={"path": str(journal_a)},
        ),
        tmp_path / "replica-a",
    )
    b = DaemonProcess(
        stack.daemon_config(
            leader_election={"identity": "replica-b"},
            notify=FAST_RETRIES,
            webhook={"listen": "127.0.0.1:0"},
            journal={"path": str(journal_b)},
        ),
        tmp_path / "replica-b",
    )
    await stack.create_deployment(
        deployment_manifest(SHOP.name, image=V1, behaviour=knobs(rps=20), replicas=2)
    )
    await stack.wait_rollout_complete(SHOP.name)
    async with a, b:

        async def a_leads_b_follows() -> bool:
            return (await readyz_reason(a), await readyz_reason(b)) == (
                "ok: leader",
                "standby: following replica-a",
            )

        await wait_for(a_leads_b_follows, 30, "replica-a leading, replica-b standing by")
        await asyncio.sleep(MIN_STABLE_SECONDS)  # v1 must have been stable for min_stable
        bad_at = datetime.now(UTC)
        await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))

        async with BothReplicas([a.url, b.url], starts_at=bad_at) as storm:

            async def rolling_back() -> RollbackState | None:
                state = recorded_state(stack, SHOP)
                return state if state is not None and state.phase is Phase.ROLLING_BACK else None

            in_flight = await wait_for(rolling_back, 60, "replica-a's rollback patch", 0.01)
            assert in_flight.holder == "replica-a"
            if stop == "sigterm":
                assert await a.terminate(timeout=15) == 0
            else:
                await a.kill()

            async def finished() -> RollbackState | None:
                state = recorded_state(stack, SHOP)
                return state if state is not None and state.phase.terminal else None

            final = await wait_for(finished, 60, "replica-b to finish the rollback")
        acknowledged_a = storm.acknowledged[a.url]
        acknowledged_b = storm.acknowledged[b.url]

        assert final.phase is Phase.ROLLBACK_COMPLETED, final
        assert final.rollback_id == in_flight.rollback_id and final.holder == "replica-b"
        assert acknowledged_a and acknowledged_b

        async def b_decided_everything() -> bool:
            found = accepted_fingerprints(journal_b)
            return acknowledged_b <= found.keys() and all(found.values())

        await wait_for(b_decided_everything, 30, "replica-b to decide every alert it accepted")

        async def resolved() -> bool:
            return any(
                p["dedup_key"] == final.rollback_id and p["event_action"] == "resolve"
                for p in accepted_pages(stack)
            )

        await wait_for(resolved, 30, "the resolve page")

    # Acknowledged means durable, on whichever replica answered, and decided by one of them.
    in_a = accepted_fingerprints(journal_a)
    assert acknowledged_a <= in_a.keys()
    in_b = accepted_fingerprints(journal_b)
    decided = {fp for fp, done in [*in_a.items(), *in_b.items()] if done}
    assert acknowledged_a | acknowledged_b <= decided

    # One rollback: one template change (v1 -> v2 -> v1 is revision 3), one record.
    assert await stack.revision(SHOP.name) == 3
    deployment = await stack.deployment(SHOP.name)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    assert rollback_ids(journal_a) | rollback_ids(journal_b) == {final.rollback_id}

    # One incident: triggers only under the rollback's key, one resolve, last.
    pages = accepted_pages(stack)
    assert {p["dedup_key"] for p in pages} == {final.rollback_id}, pages
    actions = [p["event_action"] for p in pages]
    assert actions.count("resolve") == 1 and actions[-1] == "resolve", actions
    assert "trigger" in actions
