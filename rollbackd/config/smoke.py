"""Smoke checks: named HTTP requests that verification sends to the restored version.

A check is a path on the Service that selects the Deployment's pods (its
``url`` is a template of ``{namespace}``, ``{service}`` and ``{deployment}``),
the status it must answer and JSON fields it must carry. Deployments pick
their checks by name with the annotation ``rollbackd.io/smoke-checks``;
``verify.smoke_via`` says how the Service is reached.
"""

from __future__ import annotations

import json
import string
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rollbackd.config.types import NonEmptyStr, PositiveDuration, _Section, unique_named
from rollbackd.model import ANNOTATION_PREFIX

ANNOTATION_SMOKE_CHECKS = ANNOTATION_PREFIX + "smoke-checks"
TEMPLATE_FIELDS = frozenset({"namespace", "service", "deployment"})
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SmokeVia = Literal["service-proxy", "cluster-dns"]


class JsonAssertion(_Section):
    """The JSON body's field at ``path`` (dotted; list items by index) equals ``equals``."""

    path: NonEmptyStr
    equals: Any


class SmokeCheck(_Section):
    """One named HTTP check; only ``name`` and ``url`` have no default."""

    name: NonEmptyStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    method: str = "GET"
    # A path on the Service, e.g. "/api/v1/orders?probe={deployment}".
    url: NonEmptyStr
    # The Service port (name or number); the Service's first port when absent.
    port: str | int | None = None
    headers: dict[str, str] = {}
    body: str | None = None
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_json: tuple[JsonAssertion, ...] = ()
    timeout: PositiveDuration = timedelta(seconds=5)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"must be one of {', '.join(HTTP_METHODS)}")
        return method

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be a path starting with '/' (verify.smoke_via says how)")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad template: {exc}") from exc
        unknown = sorted(names - TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}}: use {{namespace}}, {{service}} "
                "or {deployment}"
            )
        return value

    @model_validator(mode="after")
    def _json_body(self) -> SmokeCheck:
        content_type = {k.lower(): v for k, v in self.headers.items()}.get("content-type", "")
        if self.body is not None and "json" in content_type.lower():
            try:
                json.loads(self.body)
            except ValueError as exc:
                raise ValueError(f"body is not JSON but Content-Type says so: {exc}") from exc
        return self

    def render_url(self, *, namespace: str, service: str, deployment: str) -> str:
        """The path with its placeholders filled in."""
        return self.url.format(namespace=namespace, service=service, deployment=deployment)


def unique_names(checks: tuple[SmokeCheck, ...]) -> tuple[SmokeCheck, ...]:
    """The checks, refused when two share a name (the annotation picks by name)."""
    return unique_named(checks, "smoke checks")


def checks_named(annotation: str | None) -> tuple[str, ...]:
    """The names listed in a ``rollbackd.io/smoke-checks`` value, in order, without blanks."""
    if not annotation:
        return ()
    names = (name.strip() for name in annotation.split(","))
    return tuple(dict.fromkeys(name for name in names if name))
