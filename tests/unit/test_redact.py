"""Redaction: no credential inside a URL or an Authorization header is ever printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from rollbackd.logs import configure_logging
from rollbackd.redact import redact_text, redact_url, redact_value


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # user:password@ keeps the user name (which account) and masks the password.
        ("http://admin:hunter2@prom:9090/api", "http://admin:***@prom:9090/api"),
        # A password containing "@" is masked whole.
        ("https://u:p@ss@host/x", "https://u:***@host/x"),
        # A user part without a password is a token used as the user name.
        ("https://ghp_abc123@git.example/repo", "https://***@git.example/repo"),
        # Token-like query and fragment parameters; others stay as they were.
        (
            "http://prom/q?query=up&access_token=abc&limit=5",
            "http://prom/q?query=up&access_token=***&limit=5",
        ),
        (
            "http://h/x?apiKey=1&X-Amz-Signature=2&sig=3",
            "http://h/x?apiKey=***&X-Amz-Signature=***&sig=***",
        ),
        ("http://h/cb#access_token=zz&state=1", "http://h/cb#access_token=***&state=1"),
        ("http://h/x?password=&q=1", "http://h/x?password=&q=1"),  # nothing to hide
        # A Slack incoming webhook's path is the credential.
        ("https://hooks.slack.com/services/T0/B0/XyZ", "https://hooks.slack.com/***"),
        # Nothing secret: unchanged byte for byte.
        ("http://[::1]:8080/api/v1/alerts?x=%20", "http://[::1]:8080/api/v1/alerts?x=%20"),
        ("prometheus-operated:9090", "prometheus-operated:9090"),
    ],
)
def test_redact_url_masks_exactly_the_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_urls_and_authorization_values_in_free_text() -> None:
    text = (
        "Cannot connect: url='http://am:pw1@prom:9090/api/v1/query?token=t0k' "
        "(headers {'Authorization': 'Bearer abcdef123456'}; Basic YW06cHc=)"
    )
    shown = redact_text(text)
    assert "pw1" not in shown and "t0k" not in shown
    assert "abcdef123456" not in shown and "YW06cHc=" not in shown
    assert "http://am:***@prom:9090/api/v1/query?token=***" in shown
    assert "Bearer ***" in shown and "Basic ***" in shown


def test_punctuation_after_a_url_in_a_sentence_is_kept() -> None:
    assert redact_text("POST https://h/x?token=t: 500") == "POST https://h/x?token=***: 500"
    assert redact_text("(see http://u:p@h/a).") == "(see http://u:***@h/a)."


def test_redact_value_walks_records_and_keeps_everything_else() -> None:
    record = {
        "reason": "http://u:p@h/",
        "data": [{"url": "http://h/?key=k"}, 3, None],
        "pair": ("http://u:p@h/", 1.5),
    }
    assert redact_value(record) == {
        "reason": "http://u:***@h/",
        "data": [{"url": "http://h/?key=***"}, 3, None],
        "pair": ("http://u:***@h/", 1.5),
    }


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("aiohttp", "asyncio")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_lines_never_carry_url_credentials(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("info", fmt, stream=out)  # type: ignore[arg-type]
    structlog.get_logger("rollbackd.test").warning(
        "prometheus_query_failed", error="GET http://am:hunter2@prom:9090/q failed"
    )
    # Libraries log through the standard library: the same rule applies.
    logging.getLogger("aiohttp.client").warning("retrying %s", "http://h/?token=s3cr3t")
    text = out.getvalue()
    assert "hunter2" not in text and "s3cr3t" not in text
    assert "am:***@prom:9090" in text and "token=***" in text
    if fmt == "json":
        events = [json.loads(line) for line in text.splitlines()]
        assert events[0]["error"] == "GET http://am:***@prom:9090/q failed"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logged_tracebacks_never_carry_url_credentials(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("info", fmt, stream=out)  # type: ignore[arg-type]
    try:
        raise ConnectionError("cannot connect to https://svc:hunter2@pager.example/v2")
    except ConnectionError:
        structlog.get_logger("rollbackd.test").exception("notification_failed")
    text = out.getvalue()
    assert "ConnectionError" in text and "Traceback" in text
    assert "hunter2" not in text
    assert "https://svc:***@pager.example/v2" in text
