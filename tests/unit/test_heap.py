"""heap.freeze_when_synced: the watch cache's first list is kept out of full collections."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from rollbackd.heap import freeze_when_synced


class Cache:
    """A watch cache holding decoded JSON, synced when the test says so."""

    def __init__(self, synced: bool = True) -> None:
        self.deployments: list[dict[str, Any]] = [
            {"metadata": {"name": f"app-{i}", "labels": {"app": f"app-{i}"}}} for i in range(100)
        ]
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()

    async def wait_synced(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.synced.wait()
        except TimeoutError:
            return False
        return True


def walked_by_the_collector(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The test process's own heap goes back to normal afterwards."""
    yield
    gc.unfreeze()


async def test_the_cache_listed_at_sync_is_no_longer_walked_by_full_collections() -> None:
    cache = Cache(synced=False)
    freezing = asyncio.create_task(freeze_when_synced(cache))
    await asyncio.sleep(0.01)
    assert walked_by_the_collector(cache.deployments[0]), "nothing frozen before the sync"
    cache.synced.set()
    await freezing
    assert gc.get_freeze_count() > 0
    assert not walked_by_the_collector(cache.deployments[0])
    assert not walked_by_the_collector(cache.deployments[-1]["metadata"])


async def test_a_cache_that_never_syncs_freezes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rollbackd.heap.SYNC_WAIT_SECONDS", 0.01)
    cache = Cache(synced=False)
    await freeze_when_synced(cache)
    assert gc.get_freeze_count() == 0
    assert walked_by_the_collector(cache.deployments[0])


async def test_frozen_objects_are_still_freed_when_the_watch_replaces_them() -> None:
    class Held:
        pass

    cache = Cache()
    held = Held()
    cache.deployments.append({"object": held})
    gone = weakref.ref(held)
    await freeze_when_synced(cache)
    del held
    cache.deployments.pop()  # a watch event replaced it: reference counting frees it
    assert gone() is None
