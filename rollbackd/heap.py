"""The watch cache's objects kept out of the garbage collector's full collections.

After the first list of a large cluster the process holds hundreds of
thousands of small dicts and lists (about 100 000 objects at 2 000
Deployments with their ReplicaSets and pods' metadata, five times that at
10 000). None of them is ever part of a reference cycle (they are decoded
JSON), yet every full collection walks all of them, the event loop and
every webhook answer held meanwhile: at 2 000 Deployments and 500 alerts/s,
80 to 125 ms every 15 s or so (``bench/poll.py``). ``gc.freeze()`` moves
what is alive at that moment into a generation the collector never walks;
reference counting still frees those objects when the watch replaces them.
"""

from __future__ import annotations

import gc
from typing import Protocol

import structlog

__all__ = ["freeze_when_synced"]

log = structlog.get_logger("rollbackd.heap")

# Waiting longer than this for the first sync is the cache's problem, not ours.
SYNC_WAIT_SECONDS = 3600.0


class Syncing(Protocol):
    async def wait_synced(self, timeout: float) -> bool: ...


async def freeze_when_synced(cache: Syncing) -> None:
    """Once the watch cache has listed everything, freeze the heap as it stands."""
    if not await cache.wait_synced(SYNC_WAIT_SECONDS):
        log.info("gc_freeze_skipped", reason="the watch cache did not sync")
        return
    gc.freeze()
    log.info("gc_frozen", objects=gc.get_freeze_count())
