"""The ``rollbackd`` command line.

Exit codes are part of the interface (scripts and CI use them): 0 ok,
1 runtime failure (the daemon failed, a rollback was refused, the journal is
missing), 2 usage or configuration error. Heavy modules (the daemon, the
journal, the demo) are imported inside the commands that need them, so
``check-config`` works on a machine without a cluster and stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rollbackd.config import ConfigError, Settings, format_duration, load_settings
from rollbackd.model import RecordKind, Rollback, Target
from rollbackd.redact import redact_text

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = "rollbackd.yaml"
CONFIG_ENV = "ROLLBACKD_CONFIG"


class CliError(Exception):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def default_config_path(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return env.get(CONFIG_ENV) or DEFAULT_CONFIG


def _err(message: str) -> None:
    print(f"rollbackd: {redact_text(message)}", file=sys.stderr)


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise CliError(_config_problems(path, exc), EXIT_USAGE) from None


def _config_problems(path: str, exc: ConfigError) -> str:
    lines = [f"invalid configuration {path} ({len(exc.errors)} problem(s)):"]
    lines += [f"  {error}" for error in exc.errors]
    return "\n".join(lines)


# --- commands ------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or default_config_path()
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(_config_problems(path, exc), file=sys.stderr)
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
        f"(signals: {', '.join(sig.name for sig in s.prometheus.signals)})",
        f"webhook: listen {s.webhook.listen}, {_auth_summary(s)}",
        f"namespaces: {namespaces} (excluded: {', '.join(s.cluster.exclude_namespaces) or 'none'})",
        f"dry-run: {dry_run}",
        f"policy: change window {format_duration(s.policy.change_window)}, "
        f"min stable {format_duration(s.policy.min_stable)}, "
        f"cooldown {format_duration(s.policy.cooldown)}",
        f"notify: {', '.join(s.notify.channel_names()) or 'NONE (escalations only logged)'}",
        f"journal: {s.journal.path}",
        f"leader election: {leader}",
    ]
    # URLs may carry user:password@ or ?token=: the summary must not show them.
    return [redact_text(line) for line in lines]


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    from rollbackd import daemon

    try:
        result = asyncio.run(daemon.run(settings))
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
    settings = _load(args.config)
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


def _journal_path(args: argparse.Namespace) -> str:
    """The journal to read; it must exist: a typo must not look like 'no history'."""
    path = str(args.journal) if args.journal else _load(args.config).journal.path
    if not Path(path).is_file():
        raise CliError(
            f"journal {path} does not exist: nothing was recorded yet, "
            "or --config/--journal points at the wrong place"
        )
    return path


@asynccontextmanager
async def open_journal_read_only(path: str) -> AsyncIterator[Any]:
    """Open a journal that ``_journal_path`` found; the CLI only reads from it."""
    from rollbackd.journal import Journal

    journal = await Journal.open(path, create=False)
    try:
        yield journal
    finally:
        await journal.close()


def cmd_history(args: argparse.Namespace) -> int:
    target = None
    if args.target:
        try:
            target = Target.parse(args.target)
        except ValueError as exc:
            raise CliError(f"--target: {exc}", EXIT_USAGE) from None
    path = _journal_path(args)

    async def read() -> list[Rollback]:
        async with open_journal_read_only(path) as journal:
            rollbacks: list[Rollback] = await journal.list_rollbacks(
                limit=args.limit, target=target, kind=RecordKind(args.kind) if args.kind else None
            )
            return rollbacks

    print_history(asyncio.run(read()), sys.stdout)
    return EXIT_OK


def print_history(rollbacks: Sequence[Rollback], out: TextIO) -> None:
    if not rollbacks:
        print("no rollbacks recorded", file=out)
        return
    rows = [("ID", "KIND", "TARGET", "PHASE", "REVISIONS", "STARTED", "REASON")]
    rows += [
        (
            r.id,
            str(r.kind),
            str(r.target),
            str(r.phase),
            _revisions(r),
            _when(r.started_at),
            r.reason_code,
        )
        for r in rollbacks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def _revisions(rollback: Rollback) -> str:
    if rollback.from_revision is None and rollback.to_revision is None:
        return "-"
    return f"{rollback.from_revision or '?'} -> {rollback.to_revision or '?'}"


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def cmd_show(args: argparse.Namespace) -> int:
    path = _journal_path(args)

    async def read() -> tuple[Rollback, list[Any]]:
        async with open_journal_read_only(path) as journal:
            rollback = await journal.get_rollback(args.id)
            if rollback is None:
                raise CliError(f"no rollback with id {args.id!r} in {path}")
            return rollback, list(await journal.timeline(args.id))

    rollback, timeline = asyncio.run(read())
    out = sys.stdout
    print(f"rollback {rollback.id}", file=out)
    print(f"  target:    {rollback.target}", file=out)
    print(f"  phase:     {rollback.phase}", file=out)
    print(f"  revisions: {_revisions(rollback)}", file=out)
    print(f"  reason:    {rollback.reason_code}: {redact_text(rollback.reason)}", file=out)
    print(f"  started:   {_when(rollback.started_at)}", file=out)
    print(f"  updated:   {_when(rollback.updated_at)}", file=out)
    print(f"  finished:  {_when(rollback.finished_at)}", file=out)
    print("timeline:", file=out)
    for entry in timeline:
        print(f"  {_when(entry.at)}  {entry.kind:<12} {redact_text(entry.message)}", file=out)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    path = _journal_path(args)

    async def read() -> str:
        async with open_journal_read_only(path) as journal:
            rollback = await journal.get_rollback(args.id)
            if rollback is None:
                raise CliError(f"no rollback with id {args.id!r} in {path}")
            timeline = await journal.timeline(args.id)
            details = await journal.rollback_details(args.id)
        from rollbackd.report import render_report

        text: str = render_report(rollback, timeline, details)
        return text

    sys.stdout.write(redact_text(asyncio.run(read())))
    return EXIT_OK


# --- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollbackd",
        description="Rolls back a bad Kubernetes rollout, verifies it, and pages when it cannot.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "--config",
        default=default_config_path(),
        help=f"config file (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})",
    )
    with_journal = argparse.ArgumentParser(add_help=False)
    with_journal.add_argument(
        "--journal", help="journal file to read (default: journal.path from the config)"
    )

    run = commands.add_parser("run", parents=[with_config], help="run the daemon")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("file", nargs="?", help=f"default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}")
    check.set_defaults(handler=cmd_check_config)

    # Parsed by rollbackd.demo itself; listed here for --help.
    commands.add_parser(
        "demo", help="run the whole loop locally (kubesim, Prometheus, Alertmanager)"
    )

    history = commands.add_parser(
        "history", parents=[with_config, with_journal], help="list recorded rollbacks"
    )
    history.add_argument("--limit", type=_positive_int, default=20)
    history.add_argument("--target", metavar="NAMESPACE/NAME")
    history.add_argument(
        "--kind",
        choices=[k.value for k in RecordKind],
        help="only rollbacks, dry runs or escalations (pages with no rollback)",
    )
    history.set_defaults(handler=cmd_history)

    show = commands.add_parser(
        "show", parents=[with_config, with_journal], help="one rollback and its timeline"
    )
    show.add_argument("id")
    show.set_defaults(handler=cmd_show)

    report = commands.add_parser(
        "report", parents=[with_config, with_journal], help="Markdown post-incident report"
    )
    report.add_argument("id")
    report.set_defaults(handler=cmd_report)

    rollback = commands.add_parser(
        "rollback", parents=[with_config], help="roll a Deployment back now (same safety rules)"
    )
    rollback.add_argument("target", metavar="NAMESPACE/NAME")
    rollback.add_argument(
        "--dry-run", action="store_true", help="decide and record, change nothing"
    )
    rollback.add_argument(
        "--force",
        action="store_true",
        help="override the change window and the cooldown; the guards (template diff, "
        "mutable image, GitOps, paused) always apply",
    )
    rollback.add_argument("--reason", default="", help="recorded in the journal and the Event")
    rollback.set_defaults(handler=cmd_rollback)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rollbackd`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        return _guard(lambda: cmd_demo(args_list[1:]))
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:  # argparse's usage errors and --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    return _guard(lambda: handler(args))


def _guard(command: Callable[[], int]) -> int:
    """Turn expected failures into one clear line and an exit code, not a traceback."""
    try:
        return command()
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _err(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
