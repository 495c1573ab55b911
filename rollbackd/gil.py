"""The GIL handed to a waiting thread within a quarter of a millisecond, not five.

The journal's thread (aiosqlite's) gives the GIL up around every SQLite call
and must take it back after each one; a webhook's commit is a dozen of them.
CPython makes the holder hand the GIL over only when a waiting thread saw
no switch for a whole switch interval (5 ms by default). A busy event loop
lets go for an instant at every ``select`` and takes it straight back,
which counts as a switch, so the waiting thread's interval starts over and
over: under a loop busy in slices of a few ms (the poller's fold, hundreds of
webhooks a second) single commits waited whole seconds for the GIL
(``tests/unit/test_gil.py``), and every webhook of their batch with them.
An interval shorter than the loop's slices makes the holder hand over
mid-slice: the same commits took under 20 ms. The cost is a switch when two
threads both want the GIL, which here is rare and brief.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import structlog

__all__ = ["SWITCH_SECONDS", "gil_shared_promptly"]

log = structlog.get_logger("rollbackd.gil")

# Well under loopslice.SLICE_SECONDS (1 ms), the longest the loop holds on by design.
SWITCH_SECONDS = 0.00025


@contextlib.contextmanager
def gil_shared_promptly() -> Iterator[None]:
    """The interpreter's switch interval at ``SWITCH_SECONDS`` inside, as it was after."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    log.info("gil_switch_interval", seconds=SWITCH_SECONDS, previous=previous)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
