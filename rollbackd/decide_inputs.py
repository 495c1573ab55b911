"""The decision's inputs, with the derived facts several rules share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from rollbackd.guard import TemplateDiffMemo
from rollbackd.model import Action, ClusterFacts, Decision, History, Policy, RevisionInfo, Signal
from rollbackd.reasons import ReasonCode

__all__ = ["TEMPLATE_DIFFS", "Check", "Inputs"]

# Across decisions: a target's templates change per rollout, its decisions come
# several a second in an alert storm.
TEMPLATE_DIFFS = TemplateDiffMemo()


@dataclass(frozen=True)
class Inputs:
    """The decision's inputs plus the derived facts several rules share."""

    signal: Signal
    facts: ClusterFacts
    history: History
    policy: Policy
    now: datetime

    @property
    def target(self) -> str:
        return str(self.facts.target)

    @cached_property
    def current(self) -> RevisionInfo | None:
        """The current revision: the highest number, as the controller assigns them."""
        if not self.facts.revisions:
            return None
        return max(self.facts.revisions, key=lambda r: r.revision)

    @cached_property
    def current_template(self) -> dict[str, Any]:
        """The Deployment's pod template (what a rollback replaces)."""
        if self.facts.template:
            return dict(self.facts.template)
        return dict(self.current.template) if self.current else {}

    def template_diff(self, revision: RevisionInfo) -> list[str]:
        """``template_diff_paths`` from the current template to ``revision``'s, remembered.

        The choice of a revision and the guard both need it, and later
        decisions on the same templates too; a real pod template's diff is
        the costliest step of a decision (``TEMPLATE_DIFFS``).
        """
        key = (self.facts.target, revision.revision, revision.replicaset)
        return TEMPLATE_DIFFS.paths(key, self.current_template, revision.template)

    @property
    def current_revision(self) -> int | None:
        return self.current.revision if self.current else None

    def decision(
        self,
        action: Action,
        code: ReasonCode,
        reason: str,
        *,
        to_revision: int | None = None,
        rollback_id: str | None = None,
    ) -> Decision:
        return Decision(
            action=action,
            target=self.facts.target,
            reason_code=code.value,
            reason=reason,
            from_revision=self.current_revision,
            to_revision=to_revision,
            rollback_id=rollback_id,
        )


Check = Callable[[Inputs], Decision | None]
