"""Approve mode end to end: a real `rollbackd run`, killed while it waits, approved by the CLI.

kubesim, the real Prometheus and Alertmanager, the pager sink and the daemon
as a subprocess. A bad v2 of a Deployment in approve mode is detected and
proposed; the daemon is SIGKILLed in PENDING_APPROVAL and started again on
the same journal; the on-call engineer runs the exact command the page
gave, `rollbackd approve ID`, and the normal path rolls back and verifies.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rollbackd.model import ANNOTATION_MODE, ANNOTATION_ROLLBACK, Target
from rollbackd.state import RollbackState, decode_state
from rollbackd.testing.process import DaemonProcess
from rollbackd.testing.stack import PAGERDUTY_PATH, Stack, deployment_manifest, knobs, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHOP = Target("default", "shop")
V1 = "registry.example/shop:1.4.0"
V2 = "registry.example/shop:1.5.0"
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3s


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


async def recorded(stack: Stack) -> RollbackState | None:
    annotations = (await stack.deployment(SHOP.name))["metadata"].get("annotations") or {}
    raw = annotations.get(ANNOTATION_ROLLBACK)
    return decode_state(raw) if raw else None


async def in_phase(stack: Stack, phase: str, timeout: float) -> RollbackState:
    async def reached() -> RollbackState | None:
        state = await recorded(stack)
        return state if state is not None and state.phase == phase else None

    return await wait_for(reached, timeout, f"the Deployment to record {phase}")


async def leading(daemon: DaemonProcess) -> None:
    async def leads() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/readyz") as resp:
            return (await resp.json())["reason"] == "ok: leader"

    await wait_for(leads, 30, "the daemon to lead")


async def approval_requested(stack: Stack, rollback_id: str) -> None:
    """Wait for the page that asks a human to approve ``rollback_id``."""
    page = await stack.sink.wait_for(
        lambda r: r.path == PAGERDUTY_PATH and f"rollbackd approve {rollback_id}" in str(r.json),
        timeout=20,
    )
    assert page is not None


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rollbackd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_killed_while_waiting_then_approved_with_the_cli_after_the_restart(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.daemon_config()
    await stack.create_deployment(
        deployment_manifest(
            SHOP.name, image=V1, behaviour=knobs(rps=20), annotations={ANNOTATION_MODE: "approve"}
        )
    )
    await stack.wait_rollout_complete(SHOP.name)
    await asyncio.sleep(MIN_STABLE_SECONDS)
    first = DaemonProcess(config, tmp_path / "first")
    await first.start()
    try:
        await leading(first)
        await stack.roll_out(SHOP.name, image=V2, behaviour=knobs(rps=20, error_rate=0.5))
        waiting = await in_phase(stack, "PENDING_APPROVAL", 45)
        await approval_requested(stack, waiting.rollback_id)
    finally:
        await first.kill()

    # Nothing was changed and the wait is still on record for the next process.
    assert (await recorded(stack)) == waiting
    second = DaemonProcess(config, tmp_path / "second")
    async with second:
        await leading(second)
        code, out, err = await cli(
            "approve", waiting.rollback_id, "--config", str(second.config_path), "--by", "oncall"
        )
        assert code == 0, err
        assert "approved by oncall" in out and "PLANNING" in out

        done = await in_phase(stack, "ROLLBACK_COMPLETED", 60)
        assert done.rollback_id == waiting.rollback_id
        dep = await stack.deployment(SHOP.name)
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == V1

        code, out, err = await cli(
            "approve", waiting.rollback_id, "--config", str(second.config_path), "--by", "oncall"
        )
        assert code == 0 and "already approved by oncall" in out, (out, err)
        code, out, err = await cli(
            "reject", waiting.rollback_id, "--config", str(second.config_path), "--reason", "late"
        )
        assert code == 1 and "409" in err and "ROLLBACK_COMPLETED" in err, err
        code, out, err = await cli("approve", "rb-nope", "--config", str(second.config_path))
        assert code == 1 and "404" in err, err

    code, out, err = await cli("show", waiting.rollback_id, "--journal", config["journal"]["path"])
    assert code == 0, err
    assert "phase:     ROLLBACK_COMPLETED" in out
    assert "approved:  by oncall at" in out
