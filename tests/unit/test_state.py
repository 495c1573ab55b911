"""The rollbackd.io/rollback annotation round-trips and rejects garbage clearly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rollbackd.model import Phase, Target
from rollbackd.state import REASON_MAX_CHARS, RollbackState, decode_state, encode_state

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_state(**overrides: object) -> RollbackState:
    values: dict[str, object] = {
        "rollback_id": "rb-1",
        "phase": Phase.ROLLING_BACK,
        "from_revision": 2,
        "to_revision": 1,
        "started_at": T0,
        "updated_at": T0 + timedelta(seconds=3),
        "reason_code": "rollback",
        "ready_at": None,
    }
    values.update(overrides)
    return RollbackState(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_round_trips(phase: Phase) -> None:
    state = make_state(phase=phase, ready_at=T0 + timedelta(seconds=9))
    assert decode_state(encode_state(state)) == state


def test_unknown_revisions_round_trip_as_none() -> None:
    state = make_state(from_revision=None, to_revision=None)
    assert decode_state(encode_state(state)) == state


def test_encoding_is_versioned_json() -> None:
    raw = json.loads(encode_state(make_state()))
    assert raw["v"] == 1
    assert raw["phase"] == "ROLLING_BACK"
    assert raw["rollback_id"] == "rb-1"


def test_naive_times_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="timezone"):
        encode_state(make_state(started_at=datetime(2026, 1, 1)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"v": 99}', "version"),
        ('{"v": 1, "rollback_id": ""}', "rollback_id"),
    ],
)
def test_garbage_is_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_state(text)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phase", "EXPLODING", "phase"),
        ("from_revision", -1, "from_revision"),
        ("to_revision", True, "to_revision"),
        ("started_at", "yesterday", "started_at"),
        ("updated_at", "2026-01-01T00:00:00", "timezone"),
        ("ready_at", 5, "ready_at"),
        ("reason_code", 7, "reason_code"),
        ("reason", ["error ratio"], "field reason must"),
    ],
)
def test_each_bad_field_is_named(field: str, value: object, message: str) -> None:
    raw = json.loads(encode_state(make_state()))
    raw[field] = value
    with pytest.raises(ValueError, match=message):
        decode_state(json.dumps(raw))


def test_the_reason_in_words_round_trips_for_the_next_leaders_pages() -> None:
    state = make_state(reason="error_ratio 31% > 5% for 3 polls")
    assert decode_state(encode_state(state)).reason == "error_ratio 31% > 5% for 3 polls"
    assert decode_state(encode_state(state)).rollback(_target()).reason == state.reason


def test_a_state_written_before_the_reason_was_kept_reads_with_none() -> None:
    raw = json.loads(encode_state(make_state()))
    assert "reason" not in raw
    assert decode_state(json.dumps(raw)).reason == ""


def test_a_long_reason_is_cut_to_a_bounded_length() -> None:
    state = make_state(reason="x" * (REASON_MAX_CHARS * 4))
    kept = decode_state(encode_state(state)).reason
    assert len(kept) == REASON_MAX_CHARS and kept.endswith("…")


def _target() -> Target:
    return Target("shop", "web")
