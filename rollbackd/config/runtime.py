"""The journal and its retention, leader election, logging."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from rollbackd.config.types import NamespaceName, NonEmptyStr, PositiveDuration, _Section


class RetentionSettings(_Section):
    # History older than this is pruned; the live part (rollbacks in flight,
    # undecided signals, undelivered pages) never is.
    max_age: PositiveDuration = timedelta(days=30)
    # Past this many bytes of pages, older history goes first. Half the
    # chart's 1 GiB volume: room for the WAL and a checkpoint.
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    interval: PositiveDuration = timedelta(hours=1)


class JournalSettings(_Section):
    path: NonEmptyStr = "/var/lib/rollbackd/journal.sqlite"
    # normal: a 2xx survives any process crash; full: also a power cut (an
    # fsync per commit), for a journal on a persistent volume.
    synchronous: Literal["normal", "full"] = "normal"
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


class LeaderElectionSettings(_Section):
    enabled: bool = True
    namespace: NamespaceName = "rollbackd"
    lease_name: NonEmptyStr = "rollbackd"
    identity: NonEmptyStr | None = None  # None: the host name (the pod name)
    lease_duration: PositiveDuration = timedelta(seconds=15)
    renew_deadline: PositiveDuration = timedelta(seconds=10)
    retry_period: PositiveDuration = timedelta(seconds=2)

    @model_validator(mode="after")
    def _check(self) -> LeaderElectionSettings:
        # As in client-go: a leader must give up before others may take over.
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("expected retry_period < renew_deadline < lease_duration")
        return self

    def effective_identity(self) -> str:
        return self.identity or socket.gethostname()


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class LoggingSettings(_Section):
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = "auto"
