"""``verify.smoke_checks`` and ``verify.smoke_via``: what check-config accepts and refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rollbackd.config import ConfigError, load_settings


def settings_with(tmp_path: Path, verify: str):  # type: ignore[no-untyped-def]
    token = tmp_path / "api.token"
    token.write_text("alertmanager-token\n")
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        f"webhook:\n  bearer_token_file: {token}\nprometheus:\n  url: http://prom:9090\n"
        "verify:\n" + verify
    )
    return load_settings(path, env={})


def errors_with(tmp_path: Path, verify: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, verify)
    return caught.value.errors


def test_a_check_needs_only_a_name_and_a_path(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "  smoke_checks:\n    - {name: orders, url: /orders}\n")
    (check,) = settings.verify.smoke_checks
    assert (check.method, check.expect_status, check.timeout) == ("GET", 200, timedelta(seconds=5))
    assert check.port is None and check.expect_json == () and check.headers == {}
    # Least privilege by default: the service proxy needs RBAC on services/proxy.
    assert settings.verify.smoke_via == "cluster-dns"


def test_every_field_is_read(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        "  smoke_via: service-proxy\n"
        "  smoke_checks:\n"
        "    - name: create-order\n"
        "      method: post\n"
        "      url: /api/{namespace}/{deployment}/orders\n"
        "      port: 8080\n"
        "      headers: {Content-Type: application/json}\n"
        "      body: '{\"sku\": 1}'\n"
        "      expect_status: 201\n"
        "      expect_json: [{path: order.state, equals: created}]\n"
        "      timeout: 2s\n",
    )
    (check,) = settings.verify.smoke_checks
    assert settings.verify.smoke_via == "service-proxy"
    assert check.method == "POST" and check.port == 8080 and check.expect_status == 201
    assert check.expect_json[0].path == "order.state"
    assert check.render_url(namespace="shop", service="s", deployment="d") == "/api/shop/d/orders"


def test_mistakes_are_reported_with_their_key_path(tmp_path: Path) -> None:
    errors = errors_with(
        tmp_path,
        "  smoke_via: dns\n"
        "  smoke_checks:\n"
        "    - {name: a, url: /x, expect_staus: 200}\n"
        "    - {name: b, url: 'http://svc/x'}\n"
        "    - {name: c, url: '/x/{pod}'}\n"
        "    - {name: d, url: /x, method: FETCH}\n"
        "    - {name: e, url: /x, expect_json: [{path: a, equal: 1}]}\n",
    )
    text = "\n".join(errors)
    assert "verify.smoke_via:" in text
    assert "verify.smoke_checks[0].expect_staus: Extra inputs are not permitted" in errors
    assert "verify.smoke_checks[1].url:" in text and "starting with '/'" in text
    assert "verify.smoke_checks[2].url:" in text and "{pod}" in text
    assert "verify.smoke_checks[3].method:" in text
    assert "verify.smoke_checks[4].expect_json[0].equal: Extra inputs are not permitted" in errors


def test_names_are_unique_because_the_annotation_picks_by_name(tmp_path: Path) -> None:
    errors = errors_with(
        tmp_path, "  smoke_checks:\n    - {name: a, url: /x}\n    - {name: a, url: /y}\n"
    )
    assert any("two smoke checks are named 'a'" in error for error in errors)


def test_a_json_body_must_be_json(tmp_path: Path) -> None:
    errors = errors_with(
        tmp_path,
        "  smoke_checks:\n    - name: a\n      url: /x\n"
        "      headers: {content-type: application/json}\n      body: 'not json'\n",
    )
    assert any("body is not JSON" in error for error in errors)
