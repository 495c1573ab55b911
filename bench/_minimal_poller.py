"""The CPU baseline: the same PromQL queries with nothing but requests and json.

One GET per query on a kept-alive session, the JSON decoded, each result
folded into ``{(namespace, deployment): value}``: the least any poller must
do to look at every Deployment's value. No retries, no thresholds, no state.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from typing import Any

import requests


class MinimalPoller:
    def __init__(self, url: str, queries: Sequence[str], timeout: float = 60.0) -> None:
        self._url = url.rstrip("/") + "/api/v1/query"
        self._queries = list(queries)
        self._timeout = timeout
        self._session = requests.Session()

    def cycle(self) -> list[dict[tuple[str, str], float]]:
        """Run every query once; the folded results, in query order."""
        folded = []
        for expr in self._queries:
            response = self._session.get(self._url, params={"query": expr}, timeout=self._timeout)
            response.raise_for_status()
            result = response.json()["data"]["result"]
            folded.append(
                {
                    (item["metric"]["namespace"], item["metric"]["deployment"]): float(
                        item["value"][1]
                    )
                    for item in result
                }
            )
        return folded

    def close(self) -> None:
        self._session.close()


def _poll_until_stopped(
    url: str, queries: Sequence[str], started: Event, stop: Event, cycles: Any
) -> None:
    poller = MinimalPoller(url, queries)
    started.set()
    try:
        while not stop.is_set():
            poller.cycle()
            with cycles.get_lock():
                cycles.value += 1
    finally:
        poller.close()


class BackgroundPolling:
    """The minimal poller in a process of its own, cycle after cycle, until the block ends.

    Keeps Prometheus (and the machine) as busy as a polling daemon does, so
    an idle daemon's latency is measured under the same load. A process, not
    a thread: decoding a 10 000-series answer holds the GIL for tens of
    milliseconds, and the load generator's loop in this process would wait
    that long to send, which the open-loop latency counts against the daemon.
    """

    def __init__(self, url: str, queries: Sequence[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._started = context.Event()
        self._stop = context.Event()
        self._cycles = context.Value("i", 0)
        self._process = context.Process(
            target=_poll_until_stopped,
            args=(url, list(queries), self._started, self._stop, self._cycles),
            name="background-polling",
            daemon=True,
        )

    @property
    def cycles(self) -> int:
        return int(self._cycles.value)

    def __enter__(self) -> BackgroundPolling:
        self._process.start()
        if not self._started.wait(timeout=60):
            self._process.kill()
            raise RuntimeError("the background poller did not start within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(timeout=120)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
