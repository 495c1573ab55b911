"""Time to mitigate: bad pods Ready -> ... -> ROLLBACK_COMPLETED on the whole loop, beside its floor.

Each run starts the loopback stack (``rollbackd.testing.stack``: kubesim, the
real Prometheus and Alertmanager with group_wait 0, the pager sink and the
daemon in this process), creates healthy Deployments (2 replicas, 20 req/s
each), lets them run stable, and then rolls them out one at a time to a v2
that fails 30 % of its requests. For every bad rollout it records:

    bad pods Ready      the v2 rollout complete (all bad pods Ready)
    first bad sample    the scrape time of the first sample counting a 5xx of a v2 pod
    webhook             the first Alertmanager notification rollbackd received
    poller FIRING       the poller's first FIRING signal
    patch               the Deployment's template back at v1 (kubesim's store)
    rollback Ready      the v1 rollout complete again
    ROLLBACK_COMPLETED  verification over three fresh scrape intervals done

Runs: ``loop`` (the stack's alert rules and the poller, 1 s scrape);
``poller`` (no alert rules for rollbackd, 1 s scrape); ``slow`` (a 15 s
scrape, as production uses: the default signals with a 1 m window, rules with
the same window and ``for`` two evaluations). In every run the
Prometheus+Alertmanager floor is measured for the same rollouts
(``_floor.py``): first bad sample -> delivery of an alert with the poller's
own query and no ``for``, routed to the sink so it changes no decision.

    .venv/bin/python bench/mttr.py [--quick] [--json out.json] [--rollouts 10]

Nothing here is a timed test: the figures are printed beside their targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from _common import base_environment, progress_printer, publish, work_directory
from _floor import FLOOR_PATH, FloorAlertmanagerConfig, first_floor_alert, with_floor_rule
from _timeline import (
    ClusterWatch,
    first_bad_sample,
    first_signal,
    rule_first_true,
    trigger_source,
)

from rollbackd.logs import configure_logging
from rollbackd.model import Target
from rollbackd.signals import DEFAULT_SIGNALS
from rollbackd.testing.stack import ALERT_RULES, Stack, deployment_manifest, knobs

NAMESPACE = "default"
V1 = "registry.example/shop:1.0.0"
V2 = "registry.example/shop:1.1.0"
RPS = 20.0
BAD_ERROR_RATE = 0.3
REPLICAS = 2
MIN_STABLE_SECONDS = 3.5  # the stack's policy.min_stable is 3 s
TARGET_PATCH_MEDIAN_S = 2.5
TARGET_COMPLETED_S = 8.0
NO_RULES = "groups: []\n"
DONE_PHASES = ("ROLLBACK_COMPLETED", "ROLLBACK_FAILED", "ESCALATED", "SKIPPED", "SUPERSEDED")

# Stage name -> (from, to) event names in a rollout's times.
STAGES: dict[str, tuple[str, str]] = {
    "ready_to_first_bad_sample": ("bad_ready", "first_bad_sample"),
    "first_bad_sample_to_floor_alert": ("first_bad_sample", "floor_alert"),
    "first_bad_sample_to_webhook": ("first_bad_sample", "webhook"),
    "first_bad_sample_to_rule_true": ("first_bad_sample", "rule_true"),
    "first_bad_sample_to_poller_firing": ("first_bad_sample", "poller_firing"),
    "first_bad_sample_to_patch": ("first_bad_sample", "patch"),
    "poller_firing_to_patch": ("poller_firing", "patch"),
    "ready_to_patch": ("bad_ready", "patch"),
    "first_bad_pod_ready_to_patch": ("first_bad_pod_ready", "patch"),
    "patch_to_rollback_ready": ("patch", "rollback_ready"),
    "rollback_ready_to_completed": ("rollback_ready", "completed"),
    "ready_to_completed": ("bad_ready", "completed"),
}


@dataclass(frozen=True)
class RunPlan:
    name: str
    scrape_seconds: float
    rules: str
    rollouts: int
    note: str
    window: str  # the poller's signal window (and the floor rule's)


def rules_for(scrape_seconds: float) -> str:
    """The stack's alert rules with windows and ``for`` scaled to the scrape interval."""
    if scrape_seconds == 1:
        return ALERT_RULES
    window = int(4 * scrape_seconds) if scrape_seconds > 1 else 10
    return (
        ALERT_RULES.replace("[10s]", f"[{window}s]")
        .replace("* 10 >= 10", f"* {window} >= 10")
        .replace("for: 2s", f"for: {int(2 * scrape_seconds)}s")
        .replace("interval: 1s", f"interval: {int(scrape_seconds)}s")
    )


def overrides_for(plan: RunPlan) -> dict[str, dict[str, Any]]:
    signals = [{**asdict(spec), "window": plan.window, "for_count": 2} for spec in DEFAULT_SIGNALS]
    if plan.scrape_seconds == 1:
        # The stack's own settings, with this run's signal window.
        return {"prometheus": {"signals": signals}}
    interval = f"{int(plan.scrape_seconds)}s"
    return {
        "prometheus": {"signals": signals, "poll_interval": interval, "scrape_interval": interval},
        "verify": {"intervals": 3, "timeout": f"{int(6 * plan.scrape_seconds + 60)}s"},
        "rollout": {"timeout": "120s"},
    }


progress = progress_printer("mttr")


def signal_window(scrape_seconds: float) -> str:
    """The stack's 10 s window at a 1 s scrape; four scrapes otherwise (1 m at 15 s)."""
    return "10s" if scrape_seconds == 1 else f"{int(4 * scrape_seconds)}s"


async def start_stack(plan: RunPlan, workdir: Path) -> Stack:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    stack = Stack(
        workdir,
        overrides=overrides_for(plan),
        alert_rules=with_floor_rule(plan.rules, plan.scrape_seconds, plan.window),
        with_daemon=False,
    )
    await stack.start()
    # Floor alerts go to the sink; everything else still goes to rollbackd.
    await stack.alertmanager.reload(
        FloorAlertmanagerConfig.around(stack.alertmanager.config, stack.sink.url + FLOOR_PATH)
    )
    if plan.scrape_seconds != 1:
        interval = f"{int(plan.scrape_seconds)}s"
        config = stack.prometheus.config
        await stack.prometheus.reload(
            replace(config, scrape_interval=interval, evaluation_interval=interval)
        )
    await stack.start_daemon()
    return stack


async def create_healthy(stack: Stack, names: list[str]) -> None:
    for name in names:
        await stack.create_deployment(
            deployment_manifest(name, image=V1, behaviour=knobs(rps=RPS), replicas=REPLICAS),
            NAMESPACE,
        )
    for name in names:
        await stack.wait_rollout_complete(name, NAMESPACE, timeout=60)
    await asyncio.sleep(MIN_STABLE_SECONDS)


async def one_rollout(stack: Stack, name: str, plan: RunPlan) -> dict[str, Any]:
    target = Target(NAMESPACE, name)
    watch = ClusterWatch(stack.sim.store, target, good_image=V1, bad_image=V2)
    watch.start()
    started = time.time()
    try:
        await stack.roll_out(
            name, image=V2, behaviour=knobs(rps=RPS, error_rate=BAD_ERROR_RATE), namespace=NAMESPACE
        )
        timeout = 60 + 20 * plan.scrape_seconds
        rollback = await stack.wait_rollback(target, phases=DONE_PHASES, timeout=timeout)
    finally:
        await watch.stop()
    journal = stack.daemon.journal
    times = asdict(watch.times)
    times["rollout_started"] = started
    times["first_bad_sample"] = await first_bad_sample(stack.prometheus.url, target)
    times["rule_true"] = await rule_first_true(stack.prometheus.url, target)
    times["webhook"] = await first_signal(journal, target, "alertmanager", started)
    times["floor_alert"] = first_floor_alert(stack.sink, target, started)
    times["poller_firing"] = await first_signal(journal, target, "prometheus", started)
    completed = rollback.finished_at if str(rollback.phase) == "ROLLBACK_COMPLETED" else None
    times["completed"] = completed.timestamp() if completed else None
    stages = {
        stage: (times[end] - times[begin])
        if times.get(begin) is not None and times.get(end) is not None
        else None
        for stage, (begin, end) in STAGES.items()
    }
    return {
        "target": str(target),
        "phase": str(rollback.phase),
        "trigger": await trigger_source(journal, target),
        "times": times,
        "stages_s": stages,
    }


def summarise(rollouts: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for stage in STAGES:
        values = sorted(r["stages_s"][stage] for r in rollouts if r["stages_s"][stage] is not None)
        summary[stage] = {
            "n": len(values),
            "median_s": statistics.median(values) if values else None,
            "max_s": values[-1] if values else None,
            "min_s": values[0] if values else None,
        }
    return summary


async def measure_run(plan: RunPlan, workdir: Path) -> dict[str, Any]:
    progress(f"{plan.name}: starting the stack ({plan.scrape_seconds:g} s scrape)")
    stack = await start_stack(plan, workdir)
    try:
        names = [f"{plan.name}-{i}" for i in range(plan.rollouts)]
        await create_healthy(stack, names)
        rollouts = []
        for index, name in enumerate(names):
            result = await one_rollout(stack, name, plan)
            stages = result["stages_s"]
            progress(
                f"{plan.name} {index + 1}/{plan.rollouts}: {result['phase']} by {result['trigger']}, "
                f"patch {_fmt(stages['ready_to_patch'])} s and completed "
                f"{_fmt(stages['ready_to_completed'])} s after the bad pods were Ready"
            )
            rollouts.append(result)
    finally:
        await stack.stop()
    completed = sum(1 for r in rollouts if r["phase"] == "ROLLBACK_COMPLETED")
    signals = stack.settings.prometheus.signals
    return {
        "config": {
            "poll_interval_s": _seconds(stack.settings.prometheus.poll_interval),
            "signal_windows": sorted({str(s.window) for s in signals}),
            "for_count": sorted({s.for_count for s in signals}),
            "rule_for": sorted(set(re.findall(r"for: (\S+)", plan.rules))),
        },
        "scrape_interval_s": plan.scrape_seconds,
        "alert_rules": plan.rules != NO_RULES,
        "note": plan.note,
        "rollouts": rollouts,
        "completed": completed,
        "summary": summarise(rollouts),
    }


def _seconds(value: Any) -> float | None:
    return value.total_seconds() if hasattr(value, "total_seconds") else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def environment(quick: bool) -> dict[str, Any]:
    return {
        **base_environment(),
        "quick": quick,
        "bad_error_rate": BAD_ERROR_RATE,
        "rps_per_pod": RPS,
        "replicas": REPLICAS,
    }


def plans(args: argparse.Namespace) -> list[RunPlan]:
    rollouts = args.rollouts or (1 if args.quick else 10)
    slow_rollouts = args.slow_rollouts or (1 if args.quick else 3)
    slow = args.slow_scrape or (2.0 if args.quick else 15.0)
    window = args.window or signal_window(1)
    return [
        RunPlan("loop", 1.0, ALERT_RULES, rollouts, "alert rules (for: 2s) and the poller", window),
        RunPlan("poller", 1.0, NO_RULES, rollouts, "the poller alone, no alert rules", window),
        RunPlan(
            "slow",
            slow,
            rules_for(slow),
            slow_rollouts,
            f"{slow:g} s scrape: alert rules and the poller, windows of four scrapes",
            signal_window(slow),
        ),
    ]


def report(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "rollbackd time to mitigate on the loopback stack (kubesim, real Prometheus and "
        "Alertmanager with group_wait 0, in-process daemon)",
        f"bad v2: {env['bad_error_rate']:.0%} of requests fail, {env['replicas']} replicas at "
        f"{env['rps_per_pod']:g} req/s; times in seconds, median / max over the rollouts",
        f"load average (1 min) at start/end: {env['load_average_at_start'][0]:.2f} / "
        f"{env['load_average_at_end'][0]:.2f} on {env['cpus']} CPUs",
    ]
    for name, run in results["runs"].items():
        lines += [
            "",
            f"{name}: {run['note']} ({run['scrape_interval_s']:g} s scrape), "
            f"{run['completed']}/{len(run['rollouts'])} ROLLBACK_COMPLETED, triggered by "
            + ", ".join(
                f"{src} x{sum(1 for r in run['rollouts'] if r['trigger'] == src)}"
                for src in sorted({str(r["trigger"]) for r in run["rollouts"]})
            ),
        ]
        config = run["config"]
        lines.append(
            f"  poll every {config['poll_interval_s']:g} s, signal window "
            f"{'/'.join(config['signal_windows'])}, for_count {config['for_count']}, "
            f"alert rules for: {'/'.join(config['rule_for']) or '-'}"
        )
        for stage, figures in run["summary"].items():
            if figures["n"] == 0:
                continue
            lines.append(
                f"  {stage:<36} {_fmt(figures['median_s']):>7} / {_fmt(figures['max_s']):>7}"
                f"   (n={figures['n']})"
            )
    lines.append("")
    for line in results["verdicts"]:
        lines.append(line)
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("loop", "poller"):
        summary = results["runs"][name]["summary"]
        patch = summary["ready_to_patch"]["median_s"]
        done = summary["ready_to_completed"]["median_s"]
        done_max = summary["ready_to_completed"]["max_s"]
        lines.append(
            f"{name}: bad pods Ready -> patch median {_fmt(patch)} s "
            f"(target <= {TARGET_PATCH_MEDIAN_S:g}: "
            f"{'ok' if patch is not None and patch <= TARGET_PATCH_MEDIAN_S else 'ABOVE TARGET'}); "
            f"-> ROLLBACK_COMPLETED median {_fmt(done)} s, max {_fmt(done_max)} s "
            f"(target <= {TARGET_COMPLETED_S:g}: "
            f"{'ok' if done is not None and done <= TARGET_COMPLETED_S else 'ABOVE TARGET'})"
        )
    for name, run in results["runs"].items():
        summary = run["summary"]
        floor = summary["first_bad_sample_to_floor_alert"]["median_s"]
        patch = summary["first_bad_sample_to_patch"]["median_s"]
        if floor is not None and patch is not None:
            lines.append(
                f"{name}: first bad sample -> patch {_fmt(patch)} s against the "
                f"Prometheus+Alertmanager floor (first bad sample -> a for-less alert with the "
                f"same query delivered) {_fmt(floor)} s: {patch - floor:+.2f} s, "
                f"{patch / floor:.2f}x"
            )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one rollout per run, 2 s slow scrape")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--rollouts", type=int, help="bad rollouts per 1 s run (default 10)")
    parser.add_argument("--slow-rollouts", type=int, help="bad rollouts in the slow run (3)")
    parser.add_argument("--slow-scrape", type=float, help="scrape seconds of the slow run (15)")
    parser.add_argument("--only", choices=("loop", "poller", "slow"), action="append")
    parser.add_argument(
        "--window", help="the poller's signal window in the 1 s runs (default the stack's 10s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"environment": environment(args.quick), "runs": {}}
    for plan in plans(args):
        if args.only and plan.name not in args.only:
            continue
        results["runs"][plan.name] = await measure_run(plan, workdir / plan.name)
    results["environment"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = {
        "ready_to_patch_median_s": TARGET_PATCH_MEDIAN_S,
        "ready_to_completed_s": TARGET_COMPLETED_S,
    }
    results["verdicts"] = verdicts(results) if {"loop", "poller"} <= set(results["runs"]) else []
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        work_directory("mttr", keep=args.keep) as workdir,
        (workdir / "rollbackd.log").open("w") as log,
    ):
        configure_logging("info", "json", stream=log)
        results = asyncio.run(run_all(args, workdir))
    publish(report(results), results, args.json)
    completed = all(run["completed"] == len(run["rollouts"]) for run in results["runs"].values())
    return 0 if completed else 1


if __name__ == "__main__":
    sys.exit(main())
