"""The command line: exit codes, messages, and what each command hands to the daemon."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import rollbackd
from rollbackd import cli
from rollbackd.config import Settings
from rollbackd.model import Phase, Rollback, Target

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GOOD = "prometheus:\n  url: http://prom:9090\npolicy:\n  dry_run: true\n"
API_TOKEN = "alertmanager-t0ken"


def config(tmp_path: Path, text: str = GOOD, *, webhook: str | None = None) -> Path:
    """``text`` plus a webhook section: Alertmanager's token from a file unless ``webhook``."""
    if webhook is None:
        token = tmp_path / "api.token"
        token.write_text(API_TOKEN + "\n")
        webhook = f"  bearer_token_file: {token}\n"
    path = tmp_path / "rollbackd.yaml"
    path.write_text(text + "webhook:\n" + webhook)
    return path


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    """Stand in for a lazily imported module (the daemon, the demo, the report)."""
    module = types.SimpleNamespace(**attrs)
    monkeypatch.setitem(sys.modules, f"rollbackd.{name}", module)
    monkeypatch.setattr(rollbackd, name, module, raising=False)


# --- check-config -------------------------------------------------------------------


def test_check_config_ok_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path)
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config OK: {path}\n")
    assert "prometheus: http://prom:9090 (signals: error_ratio, latency_p99)" in out
    assert "dry-run: on (global)" in out
    assert (
        "webhook: listen 0.0.0.0:8080, auth bearer; "
        "manual rollbacks over HTTP: disabled (no webhook.operator_token_file)"
    ) in out
    assert API_TOKEN not in out


def test_check_config_without_api_credentials_names_the_keys_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, webhook="  listen: 0.0.0.0:8080\n")
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "webhook: the API has no credentials: set bearer_token_file" in err
    assert "ROLLBACKD__WEBHOOK__BEARER_TOKEN" in err and "allow_unauthenticated: true" in err


def test_check_config_warns_about_an_open_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, webhook="  allow_unauthenticated: true\n")
    assert cli.main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert (
        "webhook: listen 0.0.0.0:8080, auth NONE (allow_unauthenticated); "
        "manual rollbacks over HTTP: disabled"
    ) in captured.out
    assert captured.err == (
        "WARNING: webhook.allow_unauthenticated is true: anyone who reaches 0.0.0.0:8080 "
        "may post alerts and read rollbacks\n"
    )


def test_check_config_shows_the_operator_token_is_set_never_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "op.token").write_text("operator-s3cret\n")
    (tmp_path / "am.token").write_text("am-s3cret\n")
    webhook = (
        f"  bearer_token_file: {tmp_path / 'am.token'}\n"
        f"  operator_token_file: {tmp_path / 'op.token'}\n"
    )
    assert cli.main(["check-config", str(config(tmp_path, webhook=webhook))]) == 0
    captured = capsys.readouterr()
    assert "auth bearer; manual rollbacks over HTTP: operator token" in captured.out
    assert "s3cret" not in captured.out + captured.err


def test_check_config_redacts_credentials_in_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "prometheus:\n  url: https://rollbackd:hunter2@prom.example:9090/?access_token=s3cr3t\n"
        "notify:\n  alertmanager: {url: 'http://am:pw0rd@alertmanager:9093'}\n"
        "  report_base_url: https://reports.example/?key=k3y\n"
    )
    assert cli.main(["check-config", str(config(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "s3cr3t", "pw0rd", "k3y"):
        assert secret not in out
    assert "prometheus: https://rollbackd:***@prom.example:9090/?access_token=*** " in out


def test_check_config_errors_redact_credentials_in_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "prometheus:\n  url: prom://ops:hunter2@prom:9090\n")
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "got 'prom://ops:***@prom:9090'" in err


def test_check_config_lists_each_error_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(
        tmp_path, "prometheus:\n  url: http://p\npolicy:\n  cooldwn: 5m\n  dry_run: maybe\n"
    )
    assert cli.main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"invalid configuration {path} (2 problem(s)):"
    assert sorted(line.strip() for line in lines[1:]) == [
        "policy.cooldwn: Extra inputs are not permitted",
        "policy.dry_run: Input should be a valid boolean, unable to interpret input",
    ]


def test_check_config_of_a_missing_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", str(tmp_path / "absent.yaml")]) == 2
    assert "config file does not exist" in capsys.readouterr().err


def test_check_config_defaults_to_the_env_named_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path)
    monkeypatch.setenv("ROLLBACKD_CONFIG", str(path))
    assert cli.main(["check-config"]) == 0
    assert f"config OK: {path}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["history", "--limit", "0"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage: rollbackd" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


# --- run, demo, rollback --------------------------------------------------------------


def test_run_hands_the_loaded_settings_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []

    async def run(settings: Settings) -> int:
        seen.append(settings)
        return 0

    fake_module(monkeypatch, "process", run=run)
    assert cli.main(["run", "--config", str(config(tmp_path))]) == 0
    assert [s.policy.dry_run for s in seen] == [True]


def test_run_with_a_bad_config_never_starts_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(settings: Settings) -> int:
        raise AssertionError("must not start")

    fake_module(monkeypatch, "process", run=run)
    assert cli.main(["run", "--config", str(config(tmp_path, "prometheus: {}\n"))]) == 2
    assert "prometheus.url: Field required" in capsys.readouterr().err


def test_a_failure_never_prints_url_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(settings: Settings) -> int:
        raise OSError("cannot reach http://ops:hunter2@prom:9090/api/v1/query")

    fake_module(monkeypatch, "process", run=run)
    assert cli.main(["run", "--config", str(config(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err == "rollbackd: OSError: cannot reach http://ops:***@prom:9090/api/v1/query\n"


def test_a_daemon_failure_is_exit_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run(settings: Settings) -> int:
        raise OSError("address already in use")

    fake_module(monkeypatch, "process", run=run)
    assert cli.main(["run", "--config", str(config(tmp_path))]) == 1
    assert "rollbackd: OSError: address already in use" in capsys.readouterr().err


def test_demo_gets_its_own_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    fake_module(monkeypatch, "demo", main=main)
    assert cli.main(["demo", "--hold", "5"]) == 3
    assert seen == [["--hold", "5"]]


def test_rollback_prints_the_rollback_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Target, bool, str, bool]] = []

    async def manual_rollback(
        settings: Settings, target: Target, *, dry_run: bool, reason: str, force: bool
    ) -> str:
        calls.append((target, dry_run, reason, force))
        return "rb-42"

    fake_module(monkeypatch, "daemon", manual_rollback=manual_rollback)
    argv = ["rollback", "shop/checkout", "--dry-run", "--reason", "bad deploy", "--config"]
    assert cli.main([*argv, str(config(tmp_path))]) == 0
    assert capsys.readouterr().out == "rb-42\n"
    # No --force: the change window and the cooldown apply like for any signal.
    assert calls == [(Target("shop", "checkout"), True, "bad deploy", False)]
    assert (
        cli.main(["rollback", "shop/checkout", "--force", "--config", str(config(tmp_path))]) == 0
    )
    assert calls[-1] == (Target("shop", "checkout"), False, "", True)


@dataclass(frozen=True)
class FakeDecision:
    reason_code: str


class FakeRefusal(ValueError):
    """Shaped like manual.RollbackRefused: a ValueError carrying the decision."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(f"{reason_code}: {message}")
        self.decision = FakeDecision(reason_code)


@pytest.mark.parametrize(
    ("reason_code", "argv", "hinted"),
    [
        ("cooldown", [], True),
        ("no_recent_rollout", [], True),
        ("cooldown", ["--force"], False),
        ("guard_mutable_image", [], False),
        ("guard_disallowed_fields", [], False),
    ],
)
def test_a_refused_rollback_says_when_force_would_override_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reason_code: str,
    argv: list[str],
    hinted: bool,
) -> None:
    async def manual_rollback(settings: Settings, target: Target, **_: Any) -> str:
        raise FakeRefusal(reason_code, "refused by the rules")

    fake_module(monkeypatch, "daemon", manual_rollback=manual_rollback)
    assert cli.main(["rollback", "shop/a", *argv, "--config", str(config(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert f"rollback refused: {reason_code}: refused by the rules" in err
    assert ("--force overrides the change window and the cooldown" in err) is hinted


def test_rollback_refused_is_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def manual_rollback(settings: Settings, target: Target, **_: Any) -> str:
        raise RuntimeError("cooldown: rolled back 5 minutes ago")

    fake_module(monkeypatch, "daemon", manual_rollback=manual_rollback)
    assert cli.main(["rollback", "shop/a", "--config", str(config(tmp_path))]) == 1
    assert "cooldown: rolled back 5 minutes ago" in capsys.readouterr().err


def test_rollback_of_a_malformed_target_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["rollback", "checkout"]) == 2
    assert "expected NAMESPACE/NAME" in capsys.readouterr().err


# --- journal readers ----------------------------------------------------------------------


ROLLBACK = Rollback(
    id="rb-1",
    target=Target("shop", "checkout"),
    phase=Phase.ESCALATED,
    started_at=T0,
    updated_at=T0,
    from_revision=7,
    to_revision=6,
    reason_code="verification_failed",
    reason="error ratio still 0.2",
)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)  # as the journal's TimelineEntry


class FakeJournal:
    def __init__(self) -> None:
        self.list_calls: list[tuple[int, Target | None]] = []

    async def list_rollbacks(
        self, *, limit: int = 50, target: Target | None = None, kind: object = None
    ) -> list[Rollback]:
        self.list_calls.append((limit, target))
        return [ROLLBACK] if kind in (None, ROLLBACK.kind) else []

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return ROLLBACK if rollback_id == "rb-1" else None

    async def timeline(self, rollback_id: str) -> list[Entry]:
        return [Entry(T0, "phase", "PLANNING"), Entry(T0, "phase", "ESCALATED")]

    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None:
        return None


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeJournal, Path]:
    fake = FakeJournal()
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"")
    opened: list[str] = []

    @asynccontextmanager
    async def open_journal(p: str) -> AsyncIterator[FakeJournal]:
        opened.append(p)
        yield fake

    monkeypatch.setattr(cli.records, "open_journal_read_only", open_journal)
    return fake, path


def test_history_lists_rollbacks(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, path = journal
    argv = ["history", "--journal", str(path), "--limit", "5", "--target", "shop/checkout"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "TARGET", "PHASE", "REVISIONS", "STARTED", "REASON"]
    assert lines[1].split() == [
        "rb-1",
        "rollback",
        "shop/checkout",
        "ESCALATED",
        "7",
        "->",
        "6",
        "2025-03-01T12:00:00+00:00",
        "verification_failed",
    ]
    assert fake.list_calls == [(5, Target("shop", "checkout"))]


def test_history_filters_by_kind(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    assert cli.main(["history", "--journal", str(path), "--kind", "escalation"]) == 0
    assert "no rollbacks recorded" in capsys.readouterr().out
    assert cli.main(["history", "--journal", str(path), "--kind", "outage"]) != 0


def test_history_reads_the_journal_named_in_the_config(
    tmp_path: Path, journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    conf = config(tmp_path, GOOD + f"journal:\n  path: {path}\n")
    assert cli.main(["history", "--config", str(conf)]) == 0
    assert "rb-1" in capsys.readouterr().out


def test_show_prints_the_rollback_and_its_timeline(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    assert cli.main(["show", "rb-1", "--journal", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rollback rb-1" in out
    assert "reason:    verification_failed: error ratio still 0.2" in out
    assert out.count("phase") == 3  # the phase line and two timeline entries


def test_show_and_report_redact_credentials_in_urls(
    journal: tuple[FakeJournal, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, path = journal
    leaky = "page failed: POST https://hooks.slack.com/services/T0/B0/s3cr3t: 500"
    monkeypatch.setattr(fake, "timeline", _timeline_with(leaky))
    assert cli.main(["show", "rb-1", "--journal", str(path)]) == 0
    assert cli.main(["report", "rb-1", "--journal", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out
    assert out.count("POST https://hooks.slack.com/***: 500") == 2


def test_show_says_which_strategy_ran_and_what_it_changed(
    journal: tuple[FakeJournal, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, path = journal
    changes = {
        "service": "checkout",
        "selector_before": {"app": "checkout", "version": "green"},
        "selector_after": {"app": "checkout", "version": "blue"},
        "replicas_scaled": [{"deployment": "checkout-blue", "from": 0, "to": 3}],
    }

    async def timeline(rollback_id: str) -> list[Entry]:
        data = {"strategy": "blue-green", "changes": changes}
        return [Entry(T0, "plan", "blue-green: switching Service checkout", data)]

    monkeypatch.setattr(fake, "timeline", timeline)
    assert cli.main(["show", "rb-1", "--journal", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "strategy:  blue-green: Service checkout selector version=green -> version=blue; "
        "scaled checkout-blue 0 -> 3"
    ) in out


def _timeline_with(message: str) -> Any:
    async def timeline(rollback_id: str) -> list[Entry]:
        return [Entry(T0, "notify", message)]

    return timeline


def test_show_of_an_unknown_id_is_exit_1(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    assert cli.main(["show", "rb-404", "--journal", str(path)]) == 1
    assert "no rollback with id 'rb-404'" in capsys.readouterr().err


def test_report_prints_the_postmortem_draft_in_markdown_or_json(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    assert cli.main(["report", "rb-1", "--journal", str(path)]) == 0
    out = capsys.readouterr().out
    for heading in ("## Summary", "## Impact", "## Action items", "## Timeline"):
        assert heading in out
    # Nothing says when the incident began: the impact says why it is missing, never 0.
    assert "**Requests failed:** unavailable (the incident window is unknown" in out
    assert cli.main(["report", "rb-1", "--journal", str(path), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["schema"] == "rollbackd.postmortem/v1"
    assert body["rollback"]["id"] == "rb-1"
    assert body["impact"]["status"] == "unavailable"
    assert body["impact"]["failed_requests"] is None


def test_report_asks_the_configured_prometheus_with_the_configured_queries(
    journal: tuple[FakeJournal, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake, path = journal
    bad_sample = {"started_at": T0.isoformat(), "name": "error_ratio"}

    async def timeline(rollback_id: str) -> list[Entry]:
        return [Entry(T0, "signal", "error_ratio firing", bad_sample)]

    monkeypatch.setattr(fake, "timeline", timeline)
    # Nothing listens on port 1: Prometheus is down.
    text = (
        "prometheus:\n  url: http://127.0.0.1:1\n  attempts: 1\n"
        "report:\n"
        '  failed_requests_query: sum(increase(app_errors_total{app="{deployment}"}[{window}]))\n'
        "  total_requests_query: sum(increase(app_requests_total[{window}]))\n"
    )
    cfg = config(tmp_path, text)
    argv = ["report", "rb-1", "--config", str(cfg), "--journal", str(path), "--format", "json"]
    assert cli.main(argv) == 0
    impact = json.loads(capsys.readouterr().out)["impact"]
    assert impact["status"] == "unavailable"
    assert impact["reason"].startswith("Prometheus unreachable")
    assert impact["failed_query"].startswith('sum(increase(app_errors_total{app="checkout"}[')


def test_report_of_an_unknown_id_or_format_fails(
    journal: tuple[FakeJournal, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = journal
    assert cli.main(["report", "rb-404", "--journal", str(path)]) == 1
    assert "no rollback with id 'rb-404'" in capsys.readouterr().err
    assert cli.main(["report", "rb-1", "--journal", str(path), "--format", "pdf"]) == 2


def test_a_missing_journal_is_a_clear_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.sqlite"
    for argv in (["history"], ["show", "rb-1"], ["report", "rb-1"]):
        assert cli.main([*argv, "--journal", str(path)]) == 1
        assert f"journal {path} does not exist" in capsys.readouterr().err
    assert not path.exists()


def test_history_show_and_report_read_a_real_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rollbackd.journal import Journal

    path = tmp_path / "journal.sqlite"

    async def record() -> None:
        async with await Journal.open(path) as journal:
            await journal.save_rollback(ROLLBACK)
            await journal.record_event(
                ROLLBACK.id, ROLLBACK.target, "phase", "verification failed", at=T0
            )

    asyncio.run(record())
    assert cli.main(["history", "--journal", str(path)]) == 0
    assert "rb-1" in capsys.readouterr().out
    assert cli.main(["show", "rb-1", "--journal", str(path)]) == 0
    assert "verification failed" in capsys.readouterr().out
    assert cli.main(["report", "rb-1", "--journal", str(path)]) == 0
    assert "rb-1" in capsys.readouterr().out


def test_a_file_that_is_not_a_journal_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not sqlite at all, " * 100)
    assert cli.main(["history", "--journal", str(path)]) == 1
    assert str(path) in capsys.readouterr().err
    assert path.read_text().startswith("not sqlite")  # left untouched
