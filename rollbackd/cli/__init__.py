"""The ``rollbackd`` command line.

Exit codes are part of the interface (scripts and CI use them): 0 ok,
1 runtime failure (the daemon failed, a rollback was refused, the journal is
missing), 2 usage or configuration error. Heavy modules (the daemon, the
journal, the demo) are imported inside the commands that need them, so
``check-config`` works on a machine without a cluster and stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rollbackd.cli.approve import add_commands as add_approval_commands
from rollbackd.cli.commands import cmd_check_config, cmd_demo, cmd_rollback, cmd_run
from rollbackd.cli.common import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    EXIT_FAILURE,
    EXIT_USAGE,
    CliError,
    default_config_path,
    print_error,
)
from rollbackd.cli.records import cmd_history, cmd_show
from rollbackd.cli.report import cmd_report
from rollbackd.model import RecordKind

__all__ = ["main"]


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
        "report", parents=[with_config, with_journal], help="postmortem draft of one rollback"
    )
    report.add_argument("id")
    report.add_argument(
        "--format", choices=["markdown", "json"], default="markdown", help="default: markdown"
    )
    report.add_argument(
        "--prometheus-url",
        help="Prometheus to ask for the impact (default: prometheus.url from the config)",
    )
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
    add_approval_commands(commands, with_config)
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
        print_error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print_error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
