"""The ``rollbackd run`` process: one Daemon from start to a signal (or a failure).

What belongs to the process rather than to the daemon: the logging set-up,
SIGTERM and SIGINT, the GIL switch interval (:mod:`rollbackd.gil`) and the
heap freeze once the first list is cached (:mod:`rollbackd.heap`). The exit
code is 1 when an essential task failed, else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as signal_module

import structlog

from rollbackd import leanimport
from rollbackd.config import Settings
from rollbackd.daemon import Daemon
from rollbackd.gil import gil_shared_promptly
from rollbackd.heap import freeze_when_synced
from rollbackd.logs import configure_logging

__all__ = ["run"]

log = structlog.get_logger("rollbackd.daemon")


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """`rollbackd run`: until SIGTERM/SIGINT (or ``stop`` is set)."""
    configure_logging(settings.logging.level, settings.logging.format)
    leanimport.log_outcome()
    # The journal's thread gets the GIL back promptly from a busy loop (gil.py).
    with gil_shared_promptly():
        return await _run(settings, stop)


async def _run(settings: Settings, stop: asyncio.Event | None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal_module.SIGTERM, signal_module.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(settings)
    await daemon.start()
    # This process's first list is never garbage: out of full collections (heap.py).
    daemon.supervisor.spawn("gc-freeze", freeze_when_synced(daemon.kube), essential=False)
    try:
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(daemon.supervisor.failed.wait())
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopping, failing):
            waiter.cancel()
        if daemon.supervisor.failure is not None:
            log.error("shutting_down_after_failure", failure=daemon.supervisor.failure)
        else:
            log.info("shutting_down")
    finally:
        await daemon.stop()
    return 1 if daemon.supervisor.failure is not None else 0
