"""``run``, ``check-config``, ``demo`` and ``rollback``: the commands that load the config."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from typing import Any

from rollbackd import leanimport
from rollbackd.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    config_problems,
    default_config_path,
    load,
)
from rollbackd.config import ConfigError, Settings, format_duration, load_settings
from rollbackd.model import Target
from rollbackd.redact import redact_text


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or default_config_path()
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(config_problems(path, exc), file=sys.stderr)
        return EXIT_USAGE
    print(f"config OK: {path}")
    for line in summarize(settings):
        print(f"  {line}")
    for warning in warnings(settings):
        print(f"WARNING: {warning}", file=sys.stderr)
    return EXIT_OK


def warnings(settings: Settings) -> list[str]:
    """What is valid but unsafe, said every time the config is checked."""
    webhook = settings.webhook
    if not webhook.allow_unauthenticated:
        return []
    return [
        "webhook.allow_unauthenticated is true: anyone who reaches "
        f"{webhook.listen} may post alerts and read rollbacks"
    ]


def _auth_summary(settings: Settings) -> str:
    webhook = settings.webhook
    schemes = [
        name
        for name, on in (
            ("bearer", webhook.bearer_token_value() is not None),
            ("basic", webhook.basic_auth is not None),
        )
        if on
    ]
    alerts = " or ".join(schemes)
    if webhook.allow_unauthenticated:
        alerts = "NONE (allow_unauthenticated)" + (f", {alerts} accepted" if alerts else "")
    manual = (
        "operator token"
        if webhook.operator_token_value() is not None
        else "disabled (no webhook.operator_token_file)"
    )
    return f"auth {alerts}; manual rollbacks over HTTP: {manual}"


def summarize(settings: Settings) -> list[str]:
    """A few lines an operator can eyeball to confirm what will run; no credential in them."""
    s = settings
    namespaces = ", ".join(s.cluster.namespaces) or "all"
    dry_run = "on (global)" if s.policy.dry_run else "off"
    if s.cluster.dry_run_namespaces and not s.policy.dry_run:
        dry_run = f"namespaces {', '.join(s.cluster.dry_run_namespaces)}"
    leader = (
        f"lease {s.leader_election.namespace}/{s.leader_election.lease_name}"
        if s.leader_election.enabled
        else "disabled"
    )
    lines = [
        f"prometheus: {s.prometheus.url} "
        f"(signals: {', '.join(sig.name for sig in s.prometheus.poll_specs())})",
        f"pod health: {_pod_health_summary(s)}",
        f"webhook: listen {s.webhook.listen}, {_auth_summary(s)}",
        f"namespaces: {namespaces} (excluded: {', '.join(s.cluster.exclude_namespaces) or 'none'})",
        f"dry-run: {dry_run}",
        f"policy: change window {format_duration(s.policy.change_window)}, "
        f"min stable {format_duration(s.policy.min_stable)}, "
        f"cooldown {format_duration(s.policy.cooldown)}",
        f"mode: {s.policy.mode}"
        + "".join(f", {ns}: {mode}" for ns, mode in sorted(s.policy.namespace_modes.items()))
        + f" (approval timeout {format_duration(s.approval.timeout)}, "
        f"then {s.approval.on_timeout})",
        f"notify: {', '.join(s.notify.channel_names()) or 'NONE (escalations only logged)'}",
        *_routes_summary(s),
        f"journal: {s.journal.path}",
        f"leader election: {leader}",
    ]
    # URLs may carry user:password@ or ?token=: the summary must not show them.
    return [redact_text(line) for line in lines]


def _pod_health_summary(settings: Settings) -> str:
    p = settings.sources.kubernetes.pod_health
    if not p.enabled:
        return "off"
    return (
        f"on ({p.min_restarts} restarts, {p.min_pods} pods and {p.min_fraction:.0%} of the "
        f"new ReplicaSet, not ready after {format_duration(p.not_ready_after)}, "
        f"every {format_duration(p.interval)})"
    )


def _routes_summary(s: Settings) -> list[str]:
    """One line per escalation route: who is on call, who is the lead, and when."""
    from rollbackd.notify.routing import routes_from_settings

    if not s.notify.routes:
        return []
    lines = []
    for route in routes_from_settings(s.notify):
        when = (
            f"also after {format_duration(route.escalate_after)} unresolved"
            if route.escalate_after
            else "not by time"
        )
        lines.append(
            f"route {route.name}: on-call {', '.join(route.oncall)};"
            f" lead {', '.join(route.lead)} ({when})"
        )
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    settings = load(args.config)
    leanimport.install()  # before the daemon imports kubernetes_asyncio
    from rollbackd import process

    try:
        result = asyncio.run(process.run(settings))
    except KeyboardInterrupt:
        return EXIT_OK  # a second Ctrl-C during shutdown: the user insists
    return EXIT_OK if result is None else int(result)


def cmd_demo(argv: list[str]) -> int:
    from rollbackd import demo

    result = demo.main(argv)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return EXIT_OK if result is None else int(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        target = Target.parse(args.target)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    settings = load(args.config)
    leanimport.install()
    from rollbackd import daemon

    try:
        rollback_id = asyncio.run(
            daemon.manual_rollback(
                settings, target, dry_run=args.dry_run, reason=args.reason, force=args.force
            )
        )
    except ValueError as exc:  # manual.RollbackRefused: the rules said no
        raise CliError(_refusal(exc, force=args.force)) from None
    print(rollback_id)
    return EXIT_OK


def _refusal(exc: ValueError, *, force: bool) -> str:
    from rollbackd.server import FORCE_OVERRIDES

    decision = getattr(exc, "decision", None)
    message = f"rollback refused: {exc}"
    if not force and getattr(decision, "reason_code", None) in FORCE_OVERRIDES:
        message += "\n  --force overrides the change window and the cooldown (guards still apply)"
    return message
