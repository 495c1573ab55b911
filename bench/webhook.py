"""Webhook intake: rollbackd against a bare aiohttp JSON handler, same machine, same run.

Starts kubesim (with Deployments the alerts name), the real daemon
(``python -m rollbackd run``, dry-run, bearer auth, journal in a temp dir) and
the baseline server, each as its own process, then measures:

- closed-loop throughput (wrk; in --quick mode, or when wrk is absent, this
  script's own client) for Alertmanager v4 bodies of 1, 10 and 100 alerts, (a) the
  same body repeated and (b) a unique fingerprint per alert per request;
- after every unique run against rollbackd: that every alert answered 2xx is
  in the journal (``lost`` must be 0);
- open-loop ack latency, 500 alerts/s as 10-alert bodies on a fixed schedule,
  measured from each request's scheduled send time.

    .venv/bin/python bench/webhook.py [--quick] [--json out.json]

Nothing here is a timed test: the figures are printed beside their targets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from _alertmanager import (
    DEPLOYMENTS,
    NAMESPACE,
    BodyTemplate,
    UniqueBodies,
    new_prefix,
    repeated_body,
)
from _common import (
    Children,
    base_environment,
    ensure_debian_tool,
    progress_printer,
    publish,
    sigterm_as_exit,
    wait_quiet,
    work_directory,
)
from _httpload import Body, ClosedLoopResult, LatencyResult, closed_loop, open_loop
from _servers import (
    WEBHOOK_PATH,
    Rollbackd,
    create_deployments,
    start_baseline,
    start_kubesim,
    start_rollbackd,
)
from _wrk import lua_script, run_wrk

SIZES = (1, 10, 100)
MODES = ("repeated", "unique")
TARGET_RATIO = {"repeated": 0.8, "unique": 0.5}
TARGET_P99_MS = 20.0
LATENCY_ALERTS_PER_BODY = 10


@dataclass(frozen=True)
class Plan:
    quick: bool
    client: str  # "wrk" or "python"
    wrk: str | None
    client_note: str
    connections: int
    duration: float
    rounds: int
    warmup: float
    latency_seconds: float
    latency_rate: float  # alerts/s


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    headers: dict[str, str]


# -- closed loop ----------------------------------------------------------------------------


def closed_run(
    plan: Plan, endpoint: Endpoint, template: BodyTemplate, mode: str, prefix: str, workdir: Path
) -> ClosedLoopResult:
    """One closed-loop measurement; ``prefix`` makes the fingerprints of this run its own."""
    fixed = repeated_body(template, prefix)
    if plan.client == "wrk":
        assert plan.wrk is not None
        authorization = endpoint.headers.get("Authorization", "")
        script = (
            lua_script(authorization, body=fixed[0])
            if mode == "repeated"
            else lua_script(authorization, template=template, prefix=prefix)
        )
        return run_wrk(
            plan.wrk,
            endpoint.url,
            script,
            workdir,
            connections=plan.connections,
            duration=plan.duration,
        )

    def bodies(stream: int) -> Callable[[], Body]:
        if mode == "repeated":
            return lambda: fixed
        return UniqueBodies(template, prefix, stream).next

    return asyncio.run(
        closed_loop(
            endpoint.url,
            endpoint.headers,
            bodies,
            connections=plan.connections,
            duration=plan.duration,
        )
    )


def throughput_json(result: ClosedLoopResult, alerts: int) -> dict[str, Any]:
    seconds = max(result.seconds, 1e-9)
    return {
        "req_per_s": result.ok / seconds,
        "alerts_per_s": result.ok * alerts / seconds,
        "ok": result.ok,
        "non_2xx": result.non_2xx,
        "errors": result.errors,
        "seconds": result.seconds,
    }


# -- the journal ------------------------------------------------------------------------------


def journaled_fingerprints(journal: Path, prefix: str) -> set[str]:
    """Fingerprints with ``prefix`` among accepted signals (read-only; the daemon keeps writing)."""
    pattern = re.compile(re.escape(prefix) + "[0-9a-f]{10}")
    uri = f"file:{journal}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT key FROM signals WHERE accepted = 1 AND key LIKE ?", (f"%{prefix}%",)
        ).fetchall()
    return {fp for (key,) in rows for fp in pattern.findall(key)}


def journal_totals(journal: Path) -> dict[str, int]:
    """Accepted signals, and how many of them the dispatcher has decided so far."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30) as conn:
        accepted, decided = conn.execute(
            "SELECT count(*), count(decided_at) FROM signals WHERE accepted = 1"
        ).fetchone()
    return {"accepted": accepted, "decided": decided}


def lost_alerts(
    journal: Path, prefix: str, ok_fingerprints: list[str] | None, ok_requests: int, alerts: int
) -> dict[str, int]:
    """Alerts answered 2xx but not journaled.

    Exact (by fingerprint) when the client kept the fingerprints; with wrk, by
    count: 2xx answers x alerts per body against distinct journaled
    fingerprints. Requests cut off when wrk stops may be journaled without an
    answer, so the journal can hold more ("unanswered_journaled"), never less.
    """
    journaled = journaled_fingerprints(journal, prefix)
    if ok_fingerprints is not None:
        acked = set(ok_fingerprints)
        return {
            "acked": len(acked),
            "journaled": len(journaled),
            "lost": len(acked - journaled),
            "unanswered_journaled": len(journaled - acked),
        }
    acked_count = ok_requests * alerts
    return {
        "acked": acked_count,
        "journaled": len(journaled),
        "lost": max(0, acked_count - len(journaled)),
        "unanswered_journaled": max(0, len(journaled) - acked_count),
    }


# -- open loop --------------------------------------------------------------------------------


def latency_run(
    plan: Plan, endpoint: Endpoint, template: BodyTemplate, prefix: str
) -> LatencyResult:
    rate = plan.latency_rate / template.alerts  # requests/s
    count = max(1, round(rate * plan.latency_seconds))
    # Bodies are made before the clock starts: the client's own work must not shift the schedule.
    stream = UniqueBodies(template, prefix, stream=1)
    bodies = [stream.next() for _ in range(count)]
    warmup = [UniqueBodies(template, prefix, stream=0).next() for _ in range(3)]
    return asyncio.run(open_loop(endpoint.url, endpoint.headers, bodies, rate=rate, warmup=warmup))


def latency_json(result: LatencyResult) -> dict[str, Any]:
    return {
        **result.summary_ms(),
        "scheduled": result.scheduled,
        "ok": len(result.latencies),
        "non_2xx": result.non_2xx,
        "errors": result.errors,
        "max_client_send_lag_ms": result.max_send_lag * 1000,
    }


# -- running it all -------------------------------------------------------------------------


def choose_client(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(client, wrk path, note): wrk when there (installing it in full runs), else our own.

    --quick takes our own unless told otherwise: wrk measures whole seconds
    (``-d`` has no finer unit), so a 0.4 s cell would load both servers for 1 s.
    """
    if args.client == "python":
        return "python", None, "own asyncio client (--client python)"
    if args.quick and args.client == "auto":
        return "python", None, "own asyncio client (--quick; --client wrk to use wrk)"
    wrk = ensure_debian_tool("wrk", "wrk", install=not args.quick)
    if wrk is not None:
        return "wrk", wrk, "wrk, 1 thread"
    if args.client == "wrk":
        raise SystemExit("wrk is required by --client wrk but is not available")
    note = "wrk not available: own asyncio client (a Python client caps the baseline, ratios read high)"
    print(f"warning: {note}", file=sys.stderr)
    return "python", None, note


def make_plan(args: argparse.Namespace) -> Plan:
    client, wrk, note = choose_client(args)
    return Plan(
        quick=args.quick,
        client=client,
        wrk=wrk,
        client_note=note,
        connections=args.connections,
        duration=args.duration or (0.4 if args.quick else 10.0),
        rounds=args.rounds or (1 if args.quick else 2),
        warmup=0.0 if args.quick else 2.0,
        latency_seconds=args.latency_seconds or (1.0 if args.quick else 10.0),
        latency_rate=args.rate,
    )


progress = progress_printer("webhook")


def settle(rollbackd: Rollbackd) -> float:
    """Let rollbackd finish the previous run's work first, so it takes no CPU from this one."""
    waited = wait_quiet(rollbackd.child.process.pid)
    if waited > 1:
        progress(f"  waited {waited:.1f}s for rollbackd to go quiet")
    return waited


def _merged(results: list[ClosedLoopResult]) -> ClosedLoopResult:
    return ClosedLoopResult(
        client=results[0].client,
        seconds=sum(r.seconds for r in results),
        ok=sum(r.ok for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        errors=sum(r.errors for r in results),
    )


def measure_cell(
    plan: Plan,
    endpoints: list[Endpoint],
    template: BodyTemplate,
    mode: str,
    rollbackd: Rollbackd,
    workdir: Path,
) -> tuple[dict[str, Any], dict[str, int] | None]:
    """One (size, mode) cell and, for unique bodies, its journal check.

    The servers take turns (A B A B ...) for ``plan.rounds`` rounds, so a
    neighbour's load on a shared machine hits both alike instead of one.
    """
    per_round = replace(plan, duration=plan.duration / plan.rounds)
    runs: dict[str, list[ClosedLoopResult]] = {endpoint.name: [] for endpoint in endpoints}
    settled = dict.fromkeys(runs, 0.0)
    checks: list[dict[str, int]] = []
    for _ in range(plan.rounds):
        for endpoint in endpoints:
            prefix = new_prefix()
            settled[endpoint.name] += settle(rollbackd)
            result = closed_run(per_round, endpoint, template, mode, prefix, workdir)
            runs[endpoint.name].append(result)
            if mode == "unique" and endpoint.name == "rollbackd":
                checks.append(
                    lost_alerts(
                        rollbackd.journal,
                        prefix,
                        result.ok_fingerprints,
                        result.ok,
                        template.alerts,
                    )
                )
    cell: dict[str, Any] = {
        name: {
            **throughput_json(_merged(results), template.alerts),
            "rounds_req_per_s": [r.ok / max(r.seconds, 1e-9) for r in results],
            "settle_s": settled[name],
        }
        for name, results in runs.items()
    }
    cell["ratio"] = _ratio(cell["rollbackd"]["req_per_s"], cell["baseline"]["req_per_s"])
    cell["target"] = TARGET_RATIO[mode]
    integrity = {key: sum(c[key] for c in checks) for key in checks[0]} if checks else None
    return cell, integrity


def measure_throughput(
    plan: Plan,
    endpoints: list[Endpoint],
    templates: dict[int, BodyTemplate],
    rollbackd: Rollbackd,
    workdir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every (size, mode) cell against both servers, and the journal check of unique runs."""
    throughput: dict[str, Any] = {mode: {} for mode in MODES}
    integrity: dict[str, Any] = {}
    for size in SIZES:
        for mode in MODES:
            progress(f"closed loop: {size:>3}-alert bodies, {mode}")
            cell, check = measure_cell(plan, endpoints, templates[size], mode, rollbackd, workdir)
            throughput[mode][str(size)] = cell
            if check is not None:
                integrity[str(size)] = check
    return throughput, integrity


def measure_latency(
    plan: Plan, endpoints: list[Endpoint], template: BodyTemplate, rollbackd: Rollbackd
) -> dict[str, Any]:
    """Open-loop ack latency against both endpoints, and the journal check for rollbackd."""
    latency: dict[str, Any] = {
        "alerts_per_s": plan.latency_rate,
        "alerts_per_body": template.alerts,
        "seconds": plan.latency_seconds,
        "target_p99_ms": TARGET_P99_MS,
    }
    for endpoint in endpoints:
        prefix = new_prefix()
        progress(f"open loop: {plan.latency_rate:g} alerts/s, {endpoint.name}")
        settled = settle(rollbackd)
        result = latency_run(plan, endpoint, template, prefix)
        latency[endpoint.name] = {**latency_json(result), "settle_s": settled}
        if endpoint.name == "rollbackd":
            latency["integrity"] = lost_alerts(
                rollbackd.journal,
                prefix,
                result.ok_fingerprints,
                len(result.latencies),
                template.alerts,
            )
    latency["p99_ratio"] = _ratio(latency["rollbackd"]["p99_ms"], latency["baseline"]["p99_ms"])
    return latency


def measure(plan: Plan, rollbackd: Rollbackd, baseline_url: str, workdir: Path) -> dict[str, Any]:
    endpoints = [
        Endpoint("baseline", baseline_url + WEBHOOK_PATH, {}),
        Endpoint(
            "rollbackd",
            rollbackd.url + WEBHOOK_PATH,
            {"Authorization": f"Bearer {rollbackd.token}"},
        ),
    ]
    # After the Deployments' v2 rollouts (so they are the likely cause), the same in every body.
    starts_at = datetime.now(UTC)
    templates = {size: BodyTemplate.build(size, starts_at) for size in SIZES}
    for endpoint in endpoints if plan.warmup else []:
        progress(f"warm-up {endpoint.name}")
        warmup = replace(plan, duration=plan.warmup)
        closed_run(warmup, endpoint, templates[10], "unique", new_prefix(), workdir)
    throughput, integrity = measure_throughput(plan, endpoints, templates, rollbackd, workdir)
    latency = measure_latency(plan, endpoints, templates[LATENCY_ALERTS_PER_BODY], rollbackd)
    return {
        "throughput": throughput,
        "integrity": integrity,
        "lost": sum(check["lost"] for check in integrity.values()),
        "lost_open_loop": latency["integrity"]["lost"],
        "latency": latency,
        "journal_at_end": journal_totals(rollbackd.journal),
        "headline": {
            "repeated_ratio_10": throughput["repeated"]["10"]["ratio"],
            "unique_ratio_10": throughput["unique"]["10"]["ratio"],
            "p99_ms": latency["rollbackd"]["p99_ms"],
        },
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def environment(plan: Plan) -> dict[str, Any]:
    return {
        **base_environment(),
        "aiohttp": aiohttp.__version__,
        "closed_loop_client": plan.client,
        "closed_loop_note": plan.client_note,
        "connections": plan.connections,
        "seconds_per_cell": plan.duration,
        "rounds_per_cell": plan.rounds,
        "quick": plan.quick,
    }


# -- report -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def report(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "rollbackd webhook intake vs a bare aiohttp JSON handler (same machine, same run)",
        f"closed loop: {env['closed_loop_note']}, {env['connections']} connections, "
        f"{env['seconds_per_cell']:g} s per cell in {env['rounds_per_cell']} alternating rounds; "
        "req/s counts 2xx answers only",
        "load average (1 min) at start/end: "
        f"{env['load_average_at_start'][0]:.2f} / {env['load_average_at_end'][0]:.2f} "
        f"on {env['cpus']} CPUs (other work on the machine skews the figures)",
        "",
        f"{'alerts/body':>11} {'mode':<9} {'rollbackd req/s':>15} {'alerts/s':>10} "
        f"{'baseline req/s':>14} {'alerts/s':>10} {'ratio':>7} {'target':>7}  {'non-2xx':>7}",
    ]
    for size in SIZES:
        for mode in MODES:
            cell = results["throughput"][mode][str(size)]
            r, b = cell["rollbackd"], cell["baseline"]
            lines.append(
                f"{size:>11} {mode:<9} {r['req_per_s']:>15.1f} {r['alerts_per_s']:>10.0f} "
                f"{b['req_per_s']:>14.1f} {b['alerts_per_s']:>10.0f} {cell['ratio']:>6.3f}x "
                f">={cell['target']:.1f}x  {r['non_2xx'] + r['errors']:>7}  "
                f"{_verdict(cell['ratio'] >= cell['target'])}"
            )
    lines.append("")
    for size, check in results["integrity"].items():
        lines.append(
            f"unique {size:>3}-alert bodies: {check['acked']} alerts answered 2xx, "
            f"{check['journaled']} journaled, lost {check['lost']}"
        )
    lines.append(f"lost: {results['lost']}" + ("" if results["lost"] == 0 else "   MUST BE 0"))
    lat = results["latency"]
    lines += [
        "",
        f"open loop: {lat['alerts_per_s']:g} alerts/s as {lat['alerts_per_body']}-alert bodies, "
        f"{lat['seconds']:g} s, latency from the scheduled send time",
        f"{'':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'2xx':>6} {'other':>6}",
    ]
    for name in ("rollbackd", "baseline"):
        s = lat[name]
        lines.append(
            f"{name:>10} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f} "
            f"{s['ok']:>6} {s['non_2xx'] + s['errors']:>6}"
        )
    p99 = lat["rollbackd"]["p99_ms"]
    lines.append(
        f"p99 ratio rollbackd/baseline {lat['p99_ratio']:.2f}x; target p99 < {lat['target_p99_ms']:g} ms: "
        f"{_verdict(p99 < lat['target_p99_ms'])}"
    )
    lines.append(f"lost (open loop): {results['lost_open_loop']}")
    totals = results["journal_at_end"]
    lines.append(
        f"journal at the end: {totals['accepted']} signals accepted, "
        f"{totals['decided']} decided by the dispatcher so far"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--duration", type=float, help="seconds per closed-loop cell")
    parser.add_argument("--rounds", type=int, help="turns each server takes per cell (A B A B ...)")
    parser.add_argument("--latency-seconds", type=float, help="open-loop duration")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop alerts/s")
    parser.add_argument("--log-level", default="info", help="rollbackd's logging.level")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, journal)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    with (
        work_directory("webhook", keep=args.keep) as workdir,
        sigterm_as_exit(),
        Children(workdir) as children,
    ):
        progress("starting kubesim, rollbackd and the baseline")
        sim = start_kubesim(children, workdir)
        create_deployments(sim, NAMESPACE, DEPLOYMENTS)
        rollbackd = start_rollbackd(children, sim, workdir, log_level=args.log_level)
        baseline_url = start_baseline(children)
        results = {
            "environment": environment(plan),
            **measure(plan, rollbackd, baseline_url, workdir),
        }
        alive = rollbackd.child.process.poll() is None
        results["rollbackd_alive_at_end"] = alive
        results["environment"]["load_average_at_end"] = list(os.getloadavg())
    publish(report(results), results, args.json)
    return 0 if results["lost"] == 0 and results["lost_open_loop"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
