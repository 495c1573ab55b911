"""Approve mode: which targets wait for a human, and what a silence means.

``policy.mode`` (global) and ``policy.namespace_modes`` (per namespace) are
the operator's; a Deployment may ask for approval with the annotation
``rollbackd.io/mode: approve`` but cannot lift the operator's ``approve``
(like dry-run, it is a safety switch a Deployment owner must not override).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

from rollbackd.config.types import PositiveDuration, _Section
from rollbackd.model import ANNOTATION_MODE

Mode = Literal["auto", "approve"]
MODES: tuple[Mode, ...] = ("auto", "approve")


class ApprovalSettings(_Section):
    """How long a proposal waits, and what happens when nobody answers."""

    timeout: PositiveDuration = timedelta(minutes=15)
    # escalate: page that nobody answered and end ESCALATED (approval_timeout);
    # rollback: proceed as if approved by "timeout".
    on_timeout: Literal["escalate", "rollback"] = "escalate"


def effective_mode(configured: Mode, annotations: Mapping[str, str], problems: list[str]) -> Mode:
    """The mode for one Deployment: the operator's, tightened (never loosened) by its annotation."""
    raw = annotations.get(ANNOTATION_MODE)
    if raw is None:
        return configured
    asked = raw.strip().lower()
    if asked not in MODES:
        problems.append(
            f'{ANNOTATION_MODE}: ignored bad value {raw!r}, expected "auto" or "approve"'
        )
        return configured
    if asked == "auto" and configured == "approve":
        problems.append(
            f'{ANNOTATION_MODE}: "auto" ignored: approve mode is set globally or for the namespace'
        )
        return configured
    return "approve" if asked == "approve" else configured
