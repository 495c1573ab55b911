"""`rollbackd rollback NAMESPACE/NAME`: a human's request goes through the same rules and executor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rollbackd.daemon import manual_rollback
from rollbackd.journal import Journal
from rollbackd.manual import RollbackRefused
from rollbackd.model import Phase, Target
from rollbackd.testing.stack import Stack, deployment_manifest, knobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WEB = Target("default", "web")


async def test_manual_rollback_restores_the_previous_revision_and_verifies_it(
    tmp_path: Path,
) -> None:
    async with Stack(tmp_path, with_daemon=False) as stack:
        await stack.create_deployment(
            deployment_manifest(WEB.name, image="registry.example/web:1.0.0", behaviour=knobs())
        )
        v1 = await stack.wait_rollout_complete(WEB.name)
        await asyncio.sleep(3.5)  # longer than min_stable
        await stack.roll_out(WEB.name, image="registry.example/web:1.1.0", behaviour=knobs())
        await stack.wait_rollout_complete(WEB.name)

        rollback_id = await manual_rollback(stack.settings, WEB, reason="bad release notes")

        dep = await stack.deployment(WEB.name)
        assert dep["spec"]["template"] == v1["spec"]["template"]
        journal = await Journal.open(stack.settings.journal.path, create=False)
        try:
            rollback = await journal.get_rollback(rollback_id)
            assert rollback is not None and rollback.phase is Phase.ROLLBACK_COMPLETED
            assert (rollback.from_revision, rollback.to_revision) == (2, 1)
        finally:
            await journal.close()


async def test_manual_rollback_without_a_previous_revision_is_refused(tmp_path: Path) -> None:
    async with Stack(tmp_path, with_daemon=False) as stack:
        await stack.create_deployment(
            deployment_manifest(WEB.name, image="registry.example/web:1.0.0", behaviour=knobs())
        )
        before = await stack.wait_rollout_complete(WEB.name)

        with pytest.raises(RollbackRefused, match="no_previous_revision"):
            await manual_rollback(stack.settings, WEB)

        after = await stack.deployment(WEB.name)
        assert after["spec"] == before["spec"]
