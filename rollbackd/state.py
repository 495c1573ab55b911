"""Codec for the ``rollbackd.io/rollback`` annotation on a Deployment.

The annotation is the durable record of a rollback in flight: it is written
before each step, so a restarted (or newly elected) daemon reads it back and
resumes instead of starting a second rollback. It is JSON with a version field
so an older daemon refuses a newer format loudly instead of misreading it.

This module is also the one reader of the ``rollbackd.io/restored`` annotation
(which pod template a rollback restored, and the revision it became): the
no-ping-pong rule and resumption depend on both sides reading it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from rollbackd.model import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_RESTORED,
    ANNOTATION_ROLLBACK,
    Phase,
    Rollback,
    Target,
)

log = structlog.get_logger("rollbackd.state")

STATE_VERSION = 1
# The reason travels with the state so that a new leader's pages say why, not
# only a code; bounded, as an annotation is (256 KiB for all of them).
REASON_MAX_CHARS = 500


@dataclass(frozen=True)
class RollbackState:
    """What the Deployment says about the rollback rollbackd is running on it."""

    rollback_id: str
    phase: Phase
    from_revision: int | None
    to_revision: int | None
    started_at: datetime
    updated_at: datetime
    reason_code: str
    # When the restored version reported the rollout complete: verification
    # only uses samples taken after this moment.
    ready_at: datetime | None = None
    # Fencing: the Lease holder and transition count (term) that wrote this
    # state; a replica never replaces state from a later term. None without
    # leader election.
    holder: str | None = None
    term: int | None = None
    # Why, in words (the decision's reason): what a resumed rollback pages.
    reason: str = ""

    def rollback(self, target: Target) -> Rollback:
        """The rollback this state records, as the executor and dispatcher know it."""
        return Rollback(
            id=self.rollback_id,
            target=target,
            phase=self.phase,
            started_at=self.started_at,
            updated_at=self.updated_at,
            from_revision=self.from_revision,
            to_revision=self.to_revision,
            reason_code=self.reason_code,
            reason=self.reason,
        )


def encode_state(s: RollbackState) -> str:
    """Serialise ``s`` as compact, key-sorted JSON (stable diffs in ``kubectl get -o yaml``)."""
    payload: dict[str, Any] = {
        "v": STATE_VERSION,
        "rollback_id": s.rollback_id,
        "phase": s.phase.value,
        "from_revision": s.from_revision,
        "to_revision": s.to_revision,
        "started_at": _encode_time(s.started_at),
        "updated_at": _encode_time(s.updated_at),
        "reason_code": s.reason_code,
        "ready_at": _encode_time(s.ready_at) if s.ready_at is not None else None,
    }
    if s.term is not None:
        payload["holder"] = s.holder
        payload["term"] = s.term
    if s.reason:
        payload["reason"] = _bounded(s.reason)
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def decode_state(text: str) -> RollbackState:
    """Parse the annotation; raises ValueError naming what is wrong on anything else."""
    try:
        raw = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"rollback state is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("rollback state must be a JSON object")
    version = raw.get("v")
    if version != STATE_VERSION:
        raise ValueError(
            f"unsupported rollback state version {version!r} (expected {STATE_VERSION})"
        )
    rollback_id = raw.get("rollback_id")
    if not isinstance(rollback_id, str) or not rollback_id:
        raise ValueError("rollback state field rollback_id must be a non-empty string")
    try:
        phase = Phase(str(raw.get("phase")))
    except ValueError as exc:
        raise ValueError(f"rollback state field phase is unknown: {raw.get('phase')!r}") from exc
    reason_code = raw.get("reason_code", "")
    if not isinstance(reason_code, str):
        raise ValueError("rollback state field reason_code must be a string")
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("rollback state field reason must be a string")
    ready_raw = raw.get("ready_at")
    return RollbackState(
        rollback_id=rollback_id,
        phase=phase,
        from_revision=_decode_revision(raw, "from_revision"),
        to_revision=_decode_revision(raw, "to_revision"),
        started_at=_decode_time(raw.get("started_at"), "started_at"),
        updated_at=_decode_time(raw.get("updated_at"), "updated_at"),
        reason_code=reason_code,
        ready_at=None if ready_raw is None else _decode_time(ready_raw, "ready_at"),
        holder=_decode_holder(raw),
        term=_decode_term(raw),
        reason=reason,
    )


def _bounded(reason: str) -> str:
    if len(reason) <= REASON_MAX_CHARS:
        return reason
    return reason[: REASON_MAX_CHARS - 1] + "…"


def _decode_holder(raw: dict[str, Any]) -> str | None:
    value = raw.get("holder")
    if value is None or isinstance(value, str):
        return value
    raise ValueError("rollback state field holder must be a string or null")


def _decode_term(raw: dict[str, Any]) -> int | None:
    value = raw.get("term")
    # A Lease's transition count starts at 0; bool is not a count.
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError("rollback state field term must be a non-negative integer or null")


def _encode_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("rollback state times must be timezone-aware")
    return at.isoformat()


def _decode_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"rollback state field {name} must be an ISO 8601 string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"rollback state field {name} is not ISO 8601: {value!r}") from exc
    if at.tzinfo is None:
        raise ValueError(f"rollback state field {name} has no timezone: {value!r}")
    return at


def _decode_revision(raw: dict[str, Any], name: str) -> int | None:
    value = raw.get(name)
    # bool is an int subclass; a revision of True is garbage, not 1.
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"rollback state field {name} must be a positive integer or null")


def state_from_annotations(annotations: Mapping[str, str]) -> RollbackState | None:
    """The state recorded in ``annotations``; None when absent or unreadable.

    Unreadable state is not evidence of a rollback in flight: every reader
    treats it as none (the executor replaces it with its own).
    """
    text = annotations.get(ANNOTATION_ROLLBACK)
    if not text:
        return None
    try:
        return decode_state(text)
    except ValueError:
        return None


def recorded_state(obj: Mapping[str, Any]) -> RollbackState | None:
    """:func:`state_from_annotations` of a Deployment; an unreadable one is logged."""
    annotations = _annotations(obj)
    state = state_from_annotations(annotations)
    if state is None and annotations.get(ANNOTATION_ROLLBACK):
        log.warning("rollback_state_unreadable", annotation=ANNOTATION_ROLLBACK)
    return state


def restored_record(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ``rollbackd.io/restored`` record of a Deployment; {} when absent or unreadable.

    Keys: ``rollback_id``, ``template_hash`` (of the restored ReplicaSet) and
    ``revision`` (predicted by the plan, then the one the controller assigned).
    """
    text = _annotations(obj).get(ANNOTATION_RESTORED)
    if not text:
        return {}
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        log.warning("restored_record_unreadable", annotation=ANNOTATION_RESTORED)
        return {}
    return record if isinstance(record, dict) else {}


def encode_restored(record: Mapping[str, Any]) -> str:
    """Serialise a ``rollbackd.io/restored`` record (key-sorted JSON)."""
    return json.dumps(dict(record), sort_keys=True)


def plan_record(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A strategy's plan record (JSON under ``key``) of the rollback the state names; {} else.

    A record another rollback left (it escalated before its cleanup) is not
    this one's: only the record naming the state annotation's rollback counts.
    """
    annotations = _annotations(obj)
    text = annotations.get(key)
    try:
        record = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    state = state_from_annotations(annotations)
    if not isinstance(record, dict) or state is None:
        return {}
    return record if record.get("rollback_id") == state.rollback_id else {}


def recorded_owners(
    obj: Mapping[str, Any], key: str, owned: Sequence[tuple[str, str, str]]
) -> list[dict[str, str]]:
    """GitOps owners beside the target's that the recorded plan paused, for the pages.

    ``owned``: (the record's owner key, the object's kind, the record's key of
    its name) for each object the strategy writes besides the target.
    """
    record = plan_record(obj, key)
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [
        {"owner": str(record[owner]), "of": f"{kind} {namespace}/{record.get(name)}"}
        for owner, kind, name in owned
        if record.get(owner)
    ]


def with_plan_record(
    annotations: Mapping[str, str], key: str, record: Mapping[str, Any]
) -> dict[str, str | None]:
    """The executor's annotations for a strategy that writes no template, plus its record.

    No change-cause (the target's template does not change); the record names
    its rollback, so a later rollback never takes an old record for its own.
    """
    changes: dict[str, str | None] = {
        k: v for k, v in annotations.items() if k != ANNOTATION_CHANGE_CAUSE
    }
    state = state_from_annotations(annotations)
    stamped = {**record, "rollback_id": state.rollback_id if state else None}
    changes[key] = json.dumps(stamped, sort_keys=True)
    return changes


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}
