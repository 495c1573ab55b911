"""Where the draft asks for the impact; light, so the daemon can hold one without the renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rollbackd.config.report import ReportSettings
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL

if TYPE_CHECKING:
    from rollbackd.promql import PromQL


@dataclass(frozen=True)
class ImpactSource:
    """The daemon's (or the CLI's) PromQL adapter, the report queries and the workload label."""

    promql: PromQL | None = None  # None: impact "unavailable (no Prometheus configured)"
    settings: ReportSettings = field(default_factory=ReportSettings)
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL  # prometheus.deployment_label
