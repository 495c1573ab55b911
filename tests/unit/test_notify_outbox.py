"""The outbox's pure parts: delivery order, backoff, the stored body, and the notify settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollbackd.config import ConfigError, load_settings
from rollbackd.model import Target
from rollbackd.notify.base import (
    Notification,
    NotificationKind,
    backoff_delay,
    format_age,
    notification_from_json,
    notification_to_json,
)
from rollbackd.notify.outbox import PendingEntry, heads, row_kind

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(row_id: int, key: str, *, resolves: bool = False, due_in: float = 0.0) -> PendingEntry:
    return PendingEntry(
        id=row_id,
        dedup_key=key,
        kind="rollback_completed" if resolves else "rollback_started",
        resolves=resolves,
        created_at=T0,
        next_attempt_at=T0 + timedelta(seconds=due_in),
    )


# --- order -------------------------------------------------------------------


def test_heads_are_the_oldest_row_of_each_key_in_id_order() -> None:
    rows = [entry(1, "a"), entry(2, "b"), entry(3, "a", resolves=True), entry(4, "c")]
    assert [e.id for e in heads(rows)] == [1, 2, 4]


def test_a_resolve_waits_for_a_trigger_of_its_key_even_one_enqueued_later() -> None:
    rows = [entry(1, "a", resolves=True), entry(2, "b"), entry(3, "a")]
    assert [e.id for e in heads(rows)] == [2, 3]
    # Once the trigger is out, the resolve is next.
    assert [e.id for e in heads([entry(1, "a", resolves=True)])] == [1]


def test_failover_copies_have_a_kind_of_their_own() -> None:
    assert row_kind("escalation") == "escalation"
    assert row_kind("escalation", "pagerduty") == "escalation+failover_from=pagerduty"
    copy = PendingEntry(1, "k", row_kind("escalation", "slack"), False, T0, T0)
    assert copy.is_failover_copy and not entry(2, "k").is_failover_copy


# --- backoff -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (3, 2.0, 4.0),
        (6, 16.0, 32.0),
        (7, 30.0, 60.0),
        (500, 30.0, 60.0),
    ],
)
def test_backoff_doubles_with_equal_jitter_up_to_the_cap(
    attempts: int, low: float, high: float
) -> None:
    def delay(r: float) -> float:
        return backoff_delay(attempts, initial=1.0, cap=60.0, rng=lambda: r)

    assert delay(0.0) == low
    assert delay(1.0) == high


def test_backoff_is_never_shorter_than_retry_after() -> None:
    assert backoff_delay(1, initial=1.0, cap=60.0, retry_after=120.0, rng=lambda: 0.5) == 120.0
    assert backoff_delay(7, initial=1.0, cap=60.0, retry_after=2.0, rng=lambda: 0.0) == 30.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (42, "42s"), (303, "5m3s"), (7500, "2h5m"), (90000, "25h0m"), (-3, "0s")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(timedelta(seconds=seconds)) == text


# --- the stored body ---------------------------------------------------------------


def test_a_notification_survives_the_trip_through_the_outbox_body() -> None:
    n = Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key="rb-1",
        target=Target("shop", "checkout"),
        summary="verification failed",
        details={"rollback_id": "rb-1", "from_revision": 7, "to_images": ["img:1.3.2"]},
        created_at=T0 + timedelta(microseconds=123456),
        resolves=False,
    )
    assert notification_from_json(notification_to_json(n)) == n


def test_details_come_back_as_json_values() -> None:
    n = Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key="rb-1",
        target=Target("shop", "checkout"),
        summary="ok",
        details={"at": T0, "target": Target("a", "b"), "images": ("x", "y")},
        created_at=T0,
        resolves=True,
    )
    back = notification_from_json(notification_to_json(n))
    assert back.details == {
        "at": "2026-03-01T12:00:00+00:00",
        "target": "a/b",
        "images": ["x", "y"],
    }
    assert back.resolves is True and back.created_at == T0


# --- settings ----------------------------------------------------------------------


def _settings_file(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        "prometheus:\n  url: http://prom:9090\n"
        "webhook:\n  allow_unauthenticated: true\n"
        "notify:\n" + notify
    )
    return path


def test_outbox_settings_default_to_a_day_five_minutes_and_one_minute(tmp_path: Path) -> None:
    notify = load_settings(_settings_file(tmp_path, "  {}\n"), env={}).notify
    assert notify.max_age == timedelta(hours=24)
    assert notify.failover_after == timedelta(minutes=5)
    assert notify.backoff_initial == timedelta(seconds=1)
    assert notify.backoff_max == timedelta(minutes=1)


def test_outbox_settings_take_durations_and_null_disables_failover(tmp_path: Path) -> None:
    path = _settings_file(tmp_path, "  max_age: 6h\n  failover_after: null\n  backoff_max: 5m\n")
    notify = load_settings(path, env={}).notify
    assert (notify.max_age, notify.failover_after) == (timedelta(hours=6), None)
    assert notify.backoff_max == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ("  failover_after: 2h\n  max_age: 1h\n", "expected failover_after < max_age"),
        ("  backoff_initial: 2m\n  backoff_max: 1m\n", "expected backoff_initial <= backoff_max"),
        ("  max_age: 0s\n", "notify.max_age: must be greater than zero"),
    ],
)
def test_outbox_settings_are_checked(tmp_path: Path, notify: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_settings_file(tmp_path, notify), env={})
    assert any(message in error for error in caught.value.errors), caught.value.errors
