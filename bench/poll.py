"""Polling 100, 1 000 and 10 000 Deployments: CPU, memory, start-up and the event loop, beside baselines.

kubesim (its own process) holds N Ready Deployments (one pod each, 16 workload
series per pod) plus five Deployments with a fresh rollout that the webhook
alerts name; the real Prometheus scrapes kubesim (15 s, as production). For
each N, in the same run:

- queries per cycle and CPU per poll cycle of rollbackd's poller (the daemon's
  own ``PrometheusPoller`` and ``PromQL``, in this process, the default
  signals) against a minimal poller running every signal's value and traffic
  query with requests and json (``_minimal_poller.py``), alternating rounds,
  medians (rollbackd runs a traffic query only when its signal has a
  candidate to gate, so a healthy fleet costs it two of the four);
- the longest event-loop stall while rollbackd's poller runs (a ticker task
  that sleeps 2 ms and records how late it wakes) against the same ticker on
  an idle loop;
- RSS and start-up of ``rollbackd run`` at ``/readyz`` against a bare script
  that lists the same Deployments, ReplicaSets and Pods (``_bare_list.py``);
- webhook ack latency at 500 alerts/s (10-alert bodies, open loop) while that
  daemon polls every second (15 times production's rate at a 15 s scrape, so
  the whole run is measured near a poll), against a bare aiohttp handler and
  against the same daemon with its poller idle while this bench runs the
  same queries back to back (Prometheus and the machine as busy).

    .venv/bin/python bench/poll.py [--quick] [--json out.json] [--sizes 100,1000,10000]

Nothing here is a timed test: the figures are printed beside their targets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _alertmanager import DEPLOYMENTS, NAMESPACE, BodyTemplate, UniqueBodies, new_prefix
from _common import (
    Children,
    base_environment,
    cpu_seconds,
    progress_printer,
    publish,
    sigterm_as_exit,
    wait_quiet,
    work_directory,
)
from _fleet import create_fleet
from _httpload import LatencyResult, open_loop
from _minimal_poller import BackgroundPolling, MinimalPoller
from _servers import (
    WEBHOOK_PATH,
    KubeSimProcess,
    Rollbackd,
    create_deployments,
    start_baseline,
    start_kubesim,
    start_rollbackd,
)
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.model import Signal
from rollbackd.promql import PromQL, TargetKey
from rollbackd.signals import DEFAULT_SIGNALS, render_query
from rollbackd.sources.prometheus import PrometheusPoller
from rollbackd.testing.promstack import PrometheusConfig, PrometheusServer, instant_query

HERE = Path(__file__).resolve().parent
SIZES = (100, 1_000, 10_000)
QUICK_SIZES = (50,)
TICK_SECONDS = 0.002
LATENCY_ALERTS_PER_BODY = 10
DAEMON_POLL_SECONDS = 1.0
IDLE_POLL_SECONDS = 3600.0  # one cycle at start, then none during the measurement
TARGETS = {
    "cpu_ratio_max": 1.5,
    "rss_ratio_max": 0.5,
    "rss_mb_max": 150.0,
    "stall_ms_max": 50.0,
    "ack_p99_ms_max": 20.0,
}
FLEET_NAMESPACE = NAMESPACE  # the fleet shares the namespace the alerts name


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: tuple[int, ...]
    scrape_seconds: float
    cpu_rounds: int
    stall_cycles: int
    latency_seconds: float
    latency_rate: float


progress = progress_printer("poll")


def signal_queries() -> list[str]:
    """Each default signal's value and traffic query: what the minimal poller runs every cycle.

    rollbackd's poller runs a traffic query only when its signal has a
    breaching or tracked target, so a healthy fleet costs it two of these four.
    """
    queries = []
    for spec in DEFAULT_SIGNALS:
        queries.append(render_query(spec.query, spec.window))
        if spec.traffic_query:
            queries.append(render_query(spec.traffic_query, spec.window))
    return queries


class CountingPromQL(PromQL):
    """The daemon's adapter, counting the queries it sends."""

    queries = 0

    async def query_vector(self, expr: str, **options: Any) -> dict[TargetKey, float]:
        self.queries += 1
        return await super().query_vector(expr, **options)


# -- the fleet and Prometheus -------------------------------------------------------------


async def wait_fleet_in_prometheus(url: str, expected: int, timeout: float) -> float:
    """Until every signal query returns ``expected`` Deployments (two scrapes of each pod)."""
    started = time.monotonic()
    last: list[int] = []
    while True:
        last = []
        for expr in signal_queries():
            try:
                found = await instant_query(url, f"count({expr})")
            except TimeoutError:
                found = []  # 160 000 series on a busy machine: slower than the helper's 5 s; again
            last.append(int(float(found[0]["value"][1])) if found else 0)
        if min(last) >= expected:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"Prometheus sees {last} Deployments per query, want {expected}")
        await asyncio.sleep(1.0)


def daemon_poll_cycles(daemon: Rollbackd) -> float:
    """Poll cycles the daemon has finished (its ``rollbackd_poll_cycles_total``)."""
    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rollbackd_poll_cycles_total"
    )


async def wait_poll_cycles(daemon: Rollbackd, count: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while daemon_poll_cycles(daemon) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon finished fewer than {count:g} poll cycles")
        await asyncio.sleep(0.2)


# -- CPU per cycle and the longest stall (in this process) --------------------------------------


def _poller(promql: PromQL, emitted: list[Signal]) -> PrometheusPoller:
    async def emit(signal: Signal) -> None:
        emitted.append(signal)

    return PrometheusPoller(
        promql,
        DEFAULT_SIGNALS,
        interval=3600.0,  # cycles are driven by the bench
        emit=emit,
        clock=lambda: datetime.now(UTC),
    )


async def _cpu_of(run: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure_cpu(url: str, rounds: int) -> dict[str, Any]:
    promql = CountingPromQL(url, timeout=120.0, attempts=1)
    emitted: list[Signal] = []
    poller = _poller(promql, emitted)
    minimal = MinimalPoller(url, signal_queries())
    seen: list[int] = []

    async def minimal_cycle() -> None:
        seen[:] = [len(folded) for folded in minimal.cycle()]

    try:
        await poller.evaluate_once()  # warm: connections, caches
        await minimal_cycle()
        ours: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        queries: list[int] = []
        for _ in range(rounds):
            before = promql.queries
            ours.append(await _cpu_of(poller.evaluate_once))
            queries.append(promql.queries - before)
            theirs.append(await _cpu_of(minimal_cycle))
    finally:
        minimal.close()
        await promql.close()
    cpu = statistics.median(c for c, _ in ours)
    base = statistics.median(c for c, _ in theirs)
    return {
        "queries_per_cycle": max(queries),
        "queries_per_cycle_all_rounds": queries,
        "deployments_per_query": seen,
        "rollbackd_cpu_ms": cpu * 1000,
        "minimal_cpu_ms": base * 1000,
        "ratio": cpu / base if base > 0 else math.nan,
        "rollbackd_wall_ms": statistics.median(w for _, w in ours) * 1000,
        "minimal_wall_ms": statistics.median(w for _, w in theirs) * 1000,
        "rollbackd_cpu_ms_rounds": [c * 1000 for c, _ in ours],
        "minimal_cpu_ms_rounds": [c * 1000 for c, _ in theirs],
        "rounds": rounds,
        "signals_emitted": len(emitted),
    }


def runqueue_wait() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Ticker:
    """Wakes every ``TICK_SECONDS``; remembers the latest wake-up.

    ``worst`` is the longest stall as the loop saw it. ``worst_own`` leaves
    out the time the loop's thread was runnable but waited for a CPU (other
    processes, Prometheus and kubesim included, had the machine): what the
    process itself held the loop for. None where schedstat is unavailable.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_own: float | None = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, waited = loop.time(), runqueue_wait()
            await asyncio.sleep(TICK_SECONDS)
            late = loop.time() - before - TICK_SECONDS
            waited_after = runqueue_wait()
            self.worst = max(self.worst, late)
            if waited is None or waited_after is None or self.worst_own is None:
                self.worst_own = None
            else:
                self.worst_own = max(self.worst_own, late - (waited_after - waited))
            self.ticks += 1

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.05)
        # Start-up is not part of the measurement.
        self.worst = 0.0
        self.worst_own = 0.0 if runqueue_wait() is not None else None
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def measure_stall(url: str, cycles: int) -> dict[str, Any]:
    promql = PromQL(url, timeout=120.0, attempts=1)
    poller = _poller(promql, [])
    try:
        await poller.evaluate_once()
        started = time.perf_counter()
        async with Ticker() as busy:
            for _ in range(cycles):
                await poller.evaluate_once()
        seconds = time.perf_counter() - started
        async with Ticker() as idle:
            await asyncio.sleep(seconds)
    finally:
        await promql.close()
    return {
        "rollbackd_longest_stall_ms": busy.worst * 1000,
        "idle_longest_stall_ms": idle.worst * 1000,
        "ratio": busy.worst / idle.worst if idle.worst > 0 else math.nan,
        # Without the time the thread waited for a CPU the machine gave to others.
        "rollbackd_longest_own_stall_ms": _ms(busy.worst_own),
        "idle_longest_own_stall_ms": _ms(idle.worst_own),
        "cycles": cycles,
        "seconds": seconds,
        "tick_ms": TICK_SECONDS * 1000,
    }


# -- the daemon: RSS, start-up, ack latency while polling ----------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"VmRSS of {pid} not found")


def bare_list(children: Children, sim: KubeSimProcess, name: str) -> dict[str, float]:
    child = children.start(name, [sys.executable, str(HERE / "_bare_list.py"), sim.url, sim.token])
    child.process.wait(timeout=600)
    if child.process.returncode != 0:
        raise RuntimeError(f"bare list failed:\n{child.tail()}")
    found = {}
    for line in child.log.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("seconds", "objects", "rss_kib"):
            found[key] = float(value)
    return found


def start_daemon(
    children: Children,
    sim: KubeSimProcess,
    workdir: Path,
    prometheus_url: str,
    scrape: float,
    poll_seconds: float,
) -> tuple[Rollbackd, float]:
    """``rollbackd run`` against kubesim and the real Prometheus; seconds to /readyz."""
    workdir.mkdir()
    started = time.monotonic()
    daemon = start_rollbackd(
        children,
        sim,
        workdir,
        log_level="info",
        overrides={
            "prometheus": {
                "url": prometheus_url,
                "scrape_interval": f"{scrape:g}s",
                "poll_interval": f"{poll_seconds:g}s",
                "timeout": "60s",
                "attempts": 1,
            }
        },
    )
    return daemon, time.monotonic() - started


def unique_bodies(count: int, stream: int) -> list[tuple[bytes, list[str]]]:
    """``count`` webhook bodies of 10 alerts, each fingerprint never sent before."""
    template = BodyTemplate.build(LATENCY_ALERTS_PER_BODY, datetime.now(UTC))
    bodies = UniqueBodies(template, new_prefix(), stream=stream)
    return [bodies.next() for _ in range(count)]


def latency_json(result: LatencyResult) -> dict[str, Any]:
    return {
        **result.summary_ms(),
        "scheduled": result.scheduled,
        "ok": len(result.latencies),
        "non_2xx": result.non_2xx,
        "errors": result.errors,
        # The load generator's own lateness, which the latency from the schedule includes.
        "max_client_send_lag_ms": result.max_send_lag * 1000,
    }


def thread_runqueue_wait(pid: int) -> float:
    """Seconds the main thread of ``pid`` has waited for a CPU (Linux schedstat)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", encoding="ascii") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


async def ack_run(
    plan: Plan,
    url: str,
    headers: dict[str, str],
    daemon: Rollbackd,
    load: BackgroundPolling | None = None,
) -> dict[str, Any]:
    """Open-loop ack latency against ``url``; what the daemon did meanwhile."""
    # Bodies are made before the clock starts: the client's own work must not shift the schedule.
    request_rate = plan.latency_rate / LATENCY_ALERTS_PER_BODY
    bodies = unique_bodies(max(1, round(request_rate * plan.latency_seconds)), stream=1)
    warmup = unique_bodies(3, stream=0)
    pid = daemon.child.process.pid
    await asyncio.to_thread(wait_quiet, pid, timeout=30)
    external_before = load.cycles if load is not None else 0
    cycles_before = daemon_poll_cycles(daemon)
    cpu_before, waited_before = cpu_seconds(pid), thread_runqueue_wait(pid)
    result = await open_loop(url, headers, bodies, rate=request_rate, warmup=warmup)
    figures = latency_json(result)
    external_after = load.cycles if load is not None else 0
    figures["poll_cycles_during_run"] = daemon_poll_cycles(daemon) - cycles_before
    figures["bench_poll_cycles_during_run"] = external_after - external_before
    figures["daemon_cpu_s"] = cpu_seconds(pid) - cpu_before
    # How long the daemon's loop thread was runnable but had no CPU (the machine is shared).
    figures["daemon_loop_runqueue_wait_s"] = thread_runqueue_wait(pid) - waited_before
    return figures


def _webhook(daemon: Rollbackd) -> tuple[str, dict[str, str]]:
    return daemon.url + WEBHOOK_PATH, {"Authorization": f"Bearer {daemon.token}"}


# -- one size ---------------------------------------------------------------------------------


async def measure_daemon(
    plan: Plan,
    size: int,
    children: Children,
    sim: KubeSimProcess,
    prometheus_url: str,
    baseline_url: str,
    workdir: Path,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """RSS and start-up at /readyz, then ack latency: bare handler, daemon polling, daemon idle."""
    progress(f"{size}: bare list, then rollbackd run to /readyz")
    bare = bare_list(children, sim, f"bare-list-{size}")
    polling, startup = start_daemon(
        children,
        sim,
        workdir / f"rollbackd-{size}",
        prometheus_url,
        plan.scrape_seconds,
        DAEMON_POLL_SECONDS,
    )
    rss = rss_kib(polling.child.process.pid)
    memory = {
        "rollbackd_rss_mb": rss / 1024,
        "bare_list_rss_mb": bare["rss_kib"] / 1024,
        "ratio": rss / bare["rss_kib"],
        "objects_listed": int(bare["objects"]),
        "rollbackd_startup_s": startup,
        "bare_list_s": bare["seconds"],
        "startup_ratio": startup / bare["seconds"] if bare["seconds"] > 0 else math.nan,
    }
    ack: dict[str, Any] = {
        "alerts_per_s": plan.latency_rate,
        "alerts_per_body": LATENCY_ALERTS_PER_BODY,
        "seconds": plan.latency_seconds,
        "daemon_poll_interval_s": DAEMON_POLL_SECONDS,
    }
    progress(f"{size}: webhook ack latency, bare handler")
    ack["baseline"] = await ack_run(plan, baseline_url + WEBHOOK_PATH, {}, polling)
    progress(f"{size}: webhook ack latency while the daemon polls every {DAEMON_POLL_SECONDS:g} s")
    ack["rollbackd"] = await ack_run(plan, *_webhook(polling), polling)
    alive = polling.child.process.poll() is None
    polling.child.stop()
    # The same daemon with its poller idle while the bench runs the same queries back
    # to back: the intake under the same load on Prometheus and the machine, unpolled.
    idle, _ = start_daemon(
        children,
        sim,
        workdir / f"rollbackd-idle-{size}",
        prometheus_url,
        plan.scrape_seconds,
        IDLE_POLL_SECONDS,
    )
    # Its one cycle at start is over before the measurement begins.
    await wait_poll_cycles(idle, 1, timeout=300)
    progress(f"{size}: webhook ack latency, daemon not polling, the bench polling instead")
    with BackgroundPolling(prometheus_url, signal_queries()) as load:
        ack["rollbackd_not_polling"] = await ack_run(plan, *_webhook(idle), idle, load)
    alive = alive and idle.child.process.poll() is None
    idle.child.stop()
    base = ack["baseline"]["p99_ms"]
    ack["p99_ratio"] = ack["rollbackd"]["p99_ms"] / base if base > 0 else math.nan
    quiet = ack["rollbackd_not_polling"]["p99_ms"]
    ack["p99_ratio_to_not_polling"] = ack["rollbackd"]["p99_ms"] / quiet if quiet > 0 else math.nan
    return memory, ack, alive


async def measure_size(
    plan: Plan,
    size: int,
    children: Children,
    sim: KubeSimProcess,
    prometheus: PrometheusServer,
    baseline_url: str,
    workdir: Path,
) -> dict[str, Any]:
    progress(f"{size} Deployments: creating")
    created = time.monotonic()
    await create_fleet(sim, FLEET_NAMESPACE, [f"app-{i:05d}" for i in range(size)])
    expected = size + len(DEPLOYMENTS)
    waited = await wait_fleet_in_prometheus(prometheus.url, expected, timeout=600 + size / 10)
    progress(
        f"{size}: created and scraped in {time.monotonic() - created:.0f} s "
        f"({waited:.0f} s waiting for Prometheus); CPU per cycle"
    )
    cpu = await measure_cpu(prometheus.url, plan.cpu_rounds)
    progress(f"{size}: longest event-loop stall")
    stall = await measure_stall(prometheus.url, plan.stall_cycles)
    memory, ack, alive = await measure_daemon(
        plan, size, children, sim, prometheus.url, baseline_url, workdir
    )
    return {
        "deployments": expected,
        "cpu": cpu,
        "stall": stall,
        "memory": memory,
        "ack": ack,
        "rollbackd_alive_at_end": alive,
    }


# -- report -------------------------------------------------------------------------------------


def _ok(ok: bool) -> str:
    return "ok" if ok else "MISSES TARGET"


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    largest = str(max(int(size) for size in results["sizes"]))
    cell = results["sizes"][largest]
    checks = {
        "cpu_ratio": cell["cpu"]["ratio"] <= TARGETS["cpu_ratio_max"],
        "rss_ratio": cell["memory"]["ratio"] <= TARGETS["rss_ratio_max"],
        "rss_mb": cell["memory"]["rollbackd_rss_mb"] < TARGETS["rss_mb_max"],
        "stall_ms": cell["stall"]["rollbackd_longest_stall_ms"] < TARGETS["stall_ms_max"],
        "ack_p99_ms": cell["ack"]["rollbackd"]["p99_ms"] < TARGETS["ack_p99_ms_max"],
    }
    return {"at_deployments": int(largest), "met": checks}


def _own_stall(stall: dict[str, Any]) -> str:
    own = stall.get("rollbackd_longest_own_stall_ms")
    if own is None:
        return ""
    return f" ({own:.1f} ms without the time the loop waited for a CPU another process had)"


def report(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "rollbackd polling at scale, beside baselines measured in the same run",
        f"kubesim + real Prometheus scraping every {env['scrape_interval_s']:g} s; "
        f"load average (1 min) start/end {env['load_average_at_start'][0]:.2f} / "
        f"{env['load_average_at_end'][0]:.2f} on {env['cpus']} CPUs",
        "",
        f"{'deployments':>11} {'queries':>7} {'cpu/cycle ms':>12} {'minimal ms':>10} {'ratio':>6} "
        f"{'stall ms':>8} {'idle ms':>7} {'RSS MB':>7} {'bare MB':>7} {'ratio':>6} "
        f"{'start s':>7} {'bare s':>6} {'ratio':>6} {'ack p99':>8} {'bare p99':>8} {'ratio':>6} "
        f"{'no-poll p99':>11}",
    ]
    for size, cell in results["sizes"].items():
        cpu, stall, mem, ack = cell["cpu"], cell["stall"], cell["memory"], cell["ack"]
        lines.append(
            f"{int(size):>11} {cpu['queries_per_cycle']:>7} {cpu['rollbackd_cpu_ms']:>12.1f} "
            f"{cpu['minimal_cpu_ms']:>10.1f} {cpu['ratio']:>5.2f}x "
            f"{stall['rollbackd_longest_stall_ms']:>8.1f} {stall['idle_longest_stall_ms']:>7.1f} "
            f"{mem['rollbackd_rss_mb']:>7.0f} {mem['bare_list_rss_mb']:>7.0f} {mem['ratio']:>5.2f}x "
            f"{mem['rollbackd_startup_s']:>7.1f} {mem['bare_list_s']:>6.1f} "
            f"{mem['startup_ratio']:>5.1f}x "
            f"{ack['rollbackd']['p99_ms']:>8.1f} {ack['baseline']['p99_ms']:>8.1f} "
            f"{ack['p99_ratio']:>5.2f}x {ack['rollbackd_not_polling']['p99_ms']:>11.1f}"
        )
    lines.append("")
    for size, cell in results["sizes"].items():
        ack, quiet = cell["ack"]["rollbackd"], cell["ack"]["rollbackd_not_polling"]
        lines.append(
            f"{int(size):>6}: ack p50/p99/max {ack['p50_ms']:.1f}/{ack['p99_ms']:.1f}/"
            f"{ack['max_ms']:.1f} ms over {ack['ok']} requests (the client sent at most "
            f"{ack['max_client_send_lag_ms']:.1f} ms late) with "
            f"{ack['poll_cycles_during_run']:.0f} poll cycles in the daemon "
            f"and its loop thread {ack['daemon_loop_runqueue_wait_s']:.1f} s waiting for a CPU "
            f"(not polling: {quiet['p50_ms']:.1f}/{quiet['p99_ms']:.1f}/{quiet['max_ms']:.1f} ms, "
            f"{quiet['poll_cycles_during_run']:.0f} cycles, the bench polled "
            f"{quiet['bench_poll_cycles_during_run']} times, "
            f"{quiet['daemon_loop_runqueue_wait_s']:.1f} s waiting for a CPU); "
            f"poll wall {cell['cpu']['rollbackd_wall_ms']:.0f} ms (minimal "
            f"{cell['cpu']['minimal_wall_ms']:.0f} ms); "
            f"{cell['cpu']['deployments_per_query']} Deployments per query"
            + _own_stall(cell["stall"]).replace(" (", "; longest stall ").rstrip(")")
        )
    v = results["verdicts"]
    cell = results["sizes"][str(v["at_deployments"])]
    met = v["met"]
    lines += [
        "",
        f"targets at {v['at_deployments']} Deployments:",
        f"  CPU per cycle <= {TARGETS['cpu_ratio_max']:g}x minimal: "
        f"{cell['cpu']['ratio']:.2f}x  {_ok(met['cpu_ratio'])}",
        f"  RSS <= {TARGETS['rss_ratio_max']:g}x the bare list: "
        f"{cell['memory']['ratio']:.2f}x  {_ok(met['rss_ratio'])}",
        f"  RSS < {TARGETS['rss_mb_max']:g} MB: {cell['memory']['rollbackd_rss_mb']:.0f} MB  "
        f"{_ok(met['rss_mb'])}",
        f"  longest stall < {TARGETS['stall_ms_max']:g} ms: "
        f"{cell['stall']['rollbackd_longest_stall_ms']:.1f} ms  {_ok(met['stall_ms'])}"
        + _own_stall(cell["stall"]),
        f"  ack p99 < {TARGETS['ack_p99_ms_max']:g} ms: "
        f"{cell['ack']['rollbackd']['p99_ms']:.1f} ms  {_ok(met['ack_p99_ms'])}",
    ]
    return "\n".join(lines)


def environment(plan: Plan) -> dict[str, Any]:
    return {
        **base_environment(),
        "quick": plan.quick,
        "scrape_interval_s": plan.scrape_seconds,
        "series_per_pod": 16,
    }


def make_plan(args: argparse.Namespace) -> Plan:
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    if args.quick:
        return Plan(True, sizes or QUICK_SIZES, 1.0, 2, 2, 2.0, args.rate)
    return Plan(False, sizes or SIZES, 15.0, 5, 3, 30.0, args.rate)


async def run(plan: Plan, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"environment": environment(plan), "targets": TARGETS, "sizes": {}}
    with Children(workdir) as children:
        progress("starting kubesim and the baseline webhook handler")
        sim = start_kubesim(children, workdir)
        baseline_url = start_baseline(children)
        metrics_url = sim.metrics_url.removeprefix("http://")
        await asyncio.to_thread(create_deployments, sim, NAMESPACE, DEPLOYMENTS)
        config = PrometheusConfig(
            targets=(metrics_url,),
            scrape_interval=f"{plan.scrape_seconds:g}s",
            evaluation_interval=f"{plan.scrape_seconds:g}s",
        )
        async with PrometheusServer(config, workdir=workdir / "prometheus") as prometheus:
            for size in sorted(plan.sizes):
                results["sizes"][str(size)] = await measure_size(
                    plan, size, children, sim, prometheus, baseline_url, workdir
                )
    results["environment"]["load_average_at_end"] = list(os.getloadavg())
    results["verdicts"] = verdicts(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny fleet at a 1 s scrape")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--sizes", help="comma-separated fleet sizes (default 100,1000,10000)")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop alerts/s")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    with work_directory("poll", keep=args.keep) as workdir, sigterm_as_exit():
        results = asyncio.run(run(plan, workdir))
    publish(report(results), results, args.json)
    alive = all(cell["rollbackd_alive_at_end"] for cell in results["sizes"].values())
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
