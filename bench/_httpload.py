"""A small asyncio HTTP load generator: closed loop (throughput) and open loop (latency).

Closed loop: ``connections`` workers each send the next request as soon as the
previous answer arrived, for ``duration`` seconds. Only a stand-in for wrk:
the client is Python too, so it caps what the baseline can show.

Open loop: requests leave on a fixed schedule whatever the server does, and
each latency is measured from the request's *scheduled* send time, so a
server (or client) that falls behind shows up in the tail instead of
silently slowing the arrival rate (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from _common import percentile

REQUEST_TIMEOUT_SECONDS = 10.0

# A body and the fingerprints it carries.
Body = tuple[bytes, list[str]]


@dataclass
class ClosedLoopResult:
    """What a closed-loop run achieved; ``ok`` counts 2xx answers only."""

    client: str
    seconds: float
    ok: int = 0
    non_2xx: int = 0
    errors: int = 0
    # Fingerprints of alerts answered 2xx; None when the client cannot tell (wrk).
    ok_fingerprints: list[str] | None = None

    @property
    def requests(self) -> int:
        return self.ok + self.non_2xx + self.errors


@dataclass
class LatencyResult:
    """Open-loop ack latencies in seconds, from each request's scheduled send time."""

    scheduled: int
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    ok_fingerprints: list[str] = field(default_factory=list)
    # How late the client itself started requests (its own lag, part of the latencies).
    max_send_lag: float = 0.0

    def summary_ms(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "p50_ms": percentile(ordered, 0.50) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000,
            "max_ms": (ordered[-1] if ordered else float("nan")) * 1000,
        }


def _session(headers: Mapping[str, str], connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        headers={"Content-Type": "application/json", **headers},
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
    )


async def closed_loop(
    url: str,
    headers: Mapping[str, str],
    bodies: Callable[[int], Callable[[], Body]],
    *,
    connections: int,
    duration: float,
) -> ClosedLoopResult:
    """``connections`` workers; worker ``i`` takes bodies from ``bodies(i)()``."""
    result = ClosedLoopResult(client="python", seconds=duration, ok_fingerprints=[])
    ok_fingerprints: list[str] = []
    async with _session(headers, connections) as session:
        deadline = time.monotonic() + duration

        async def worker(stream: int) -> None:
            next_body = bodies(stream)
            while time.monotonic() < deadline:
                body, fps = next_body()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            result.ok += 1
                            ok_fingerprints.extend(fps)
                        else:
                            result.non_2xx += 1
                except (aiohttp.ClientError, TimeoutError):
                    result.errors += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        result.seconds = time.monotonic() - started
    result.ok_fingerprints = ok_fingerprints
    return result


async def open_loop(
    url: str,
    headers: Mapping[str, str],
    bodies: Sequence[Body],
    *,
    rate: float,
    warmup: Sequence[Body] = (),
) -> LatencyResult:
    """Send ``bodies`` at ``rate`` requests/s on a fixed schedule; latency from schedule."""
    result = LatencyResult(scheduled=len(bodies))
    loop = asyncio.get_running_loop()
    async with _session(headers, connections=256) as session:
        # Open a few keep-alive connections first, so the first scheduled
        # requests do not pay for TCP set-up the rest never see.
        for data, _ in warmup:
            async with session.post(url, data=data) as response:
                await response.read()

        async def one(scheduled: float, request: Body) -> None:
            data, fps = request
            try:
                async with session.post(url, data=data) as response:
                    await response.read()
                    done = loop.time()
                    if 200 <= response.status < 300:
                        result.latencies.append(done - scheduled)
                        result.ok_fingerprints.extend(fps)
                    else:
                        result.non_2xx += 1
            except (aiohttp.ClientError, TimeoutError):
                result.errors += 1

        tasks: list[asyncio.Task[None]] = []
        start = loop.time() + 0.05
        for index, request in enumerate(bodies):
            scheduled = start + index / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result.max_send_lag = max(result.max_send_lag, loop.time() - scheduled)
            tasks.append(asyncio.create_task(one(scheduled, request)))
        await asyncio.gather(*tasks)
    return result
