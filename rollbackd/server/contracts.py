"""What the API needs from the daemon: the alert sink, the journal's read side, manual rollbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rollbackd.errors import AcceptResult
from rollbackd.model import RecordKind, Rollback, Target

if TYPE_CHECKING:  # the report module loads only when a report is asked for
    from rollbackd.report import TimelineEntryLike


class AlertSink(Protocol):
    async def accept_alerts(self, body: bytes) -> AcceptResult:
        """Validate, dedupe, journal and enqueue; raise PayloadError or AcceptError."""
        ...


class JournalReader(Protocol):
    """The journal's read side, as much of it as the API needs."""

    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None, kind: RecordKind | None = None
    ) -> list[Rollback]: ...
    async def get_rollback(self, rollback_id: str) -> Rollback | None: ...
    async def timeline(self, rollback_id: str) -> Sequence[TimelineEntryLike]: ...
    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None: ...


class ManualRollback(Protocol):
    def __call__(
        self, target: Target, dry_run: bool, *, force: bool, reason: str
    ) -> Awaitable[str]:
        """Start a manual rollback; return its id, raise LookupError or ValueError.

        ``force`` lifts the change window and the cooldown, nothing else: the
        guards (template diff, mutable image, GitOps, paused) always apply.
        """
        ...
