"""``report ID``: the postmortem draft, from the journal and Prometheus."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rollbackd.cli import records
from rollbackd.cli.common import EXIT_OK, CliError, load
from rollbackd.config.report import ReportSettings
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL

if TYPE_CHECKING:
    from rollbackd.config import Settings
    from rollbackd.promql import PromQL


def _settings(args: argparse.Namespace) -> Settings | None:
    """The config when there is one; with ``--journal`` alone a missing config is fine."""
    if args.journal and not Path(args.config).is_file():
        return None
    return load(args.config)


def _promql(args: argparse.Namespace, settings: Settings | None) -> PromQL | None:
    """The same adapter the daemon uses, for the impact queries; None: no Prometheus known."""
    from rollbackd.promql import PromQL

    if args.prometheus_url:
        return PromQL(args.prometheus_url, timeout=5.0, attempts=2)
    return None if settings is None else settings.prometheus.promql()


def cmd_report(args: argparse.Namespace) -> int:
    path = records.journal_path(args)
    settings = _settings(args)
    report_settings = settings.report if settings is not None else ReportSettings()
    label = (
        settings.prometheus.deployment_label if settings is not None else DEFAULT_DEPLOYMENT_LABEL
    )

    async def read() -> str:
        from rollbackd.postmortem.service import ImpactSource, draft_for, render_draft

        promql = _promql(args, settings)
        try:
            async with records.open_journal_read_only(path) as journal:
                source = ImpactSource(promql, report_settings, label)
                draft = await draft_for(journal, args.id, source, now=datetime.now(UTC))
        finally:
            if promql is not None:
                await promql.close()
        if draft is None:
            raise CliError(f"no rollback with id {args.id!r} in {path}")
        return render_draft(draft, args.format)

    sys.stdout.write(asyncio.run(read()))
    return EXIT_OK
