"""Value types of the configuration: durations, URLs, names, secrets read from files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
)

from rollbackd.durations import parse_duration
from rollbackd.model import ANNOTATION_PREFIX
from rollbackd.redact import redact_text

ENV_PREFIX = "ROLLBACKD__"
ANNOTATION_CHANGE_WINDOW = ANNOTATION_PREFIX + "change-window"
ANNOTATION_COOLDOWN = ANNOTATION_PREFIX + "cooldown"

# Key paths that hold secrets: refused inline in the YAML file, accepted from
# the environment (verbatim, not YAML-parsed) or from the sibling `*_file` key.
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("prometheus", "bearer_token"),
    ("webhook", "bearer_token"),
    ("webhook", "basic_auth", "password"),
    ("webhook", "operator_token"),
    ("notify", "pagerduty", "routing_key"),
    ("notify", "slack", "webhook_url"),
    ("notify", "webhook", "bearer_token"),
)
# The same for every named channel: notify.channels.<name>.<key>.
CHANNEL_SECRET_KEYS = ("routing_key", "webhook_url", "bearer_token")


def is_secret_path(path: tuple[str, ...]) -> bool:
    """A key path that holds a secret (named channels' included)."""
    if path in SECRET_PATHS:
        return True
    return len(path) == 4 and path[:2] == ("notify", "channels") and path[3] in CHANNEL_SECRET_KEYS


def secret_paths(data: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The secret key paths of a raw config: the fixed ones and each named channel's."""
    found = list(SECRET_PATHS)
    notify = data.get("notify")
    channels = notify.get("channels") if isinstance(notify, Mapping) else None
    if isinstance(channels, Mapping):
        found += [
            ("notify", "channels", str(name), key)
            for name in channels
            for key in CHANNEL_SECRET_KEYS
        ]
    return found


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[str]) -> None:
        # Messages quote values back; a URL's credentials must not be among them.
        self.errors: tuple[str, ...] = tuple(redact_text(error) for error in errors)
        super().__init__("\n".join(self.errors))


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)
]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _namespace_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid namespace name (RFC 1123 label)")
    return value


NamespaceName = Annotated[str, AfterValidator(_namespace_name)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


@dataclass(frozen=True)
class SecretFile:
    """A secret read from a file at load time; the path is kept for messages."""

    path: Path
    value: SecretStr


def _read_secret_file(value: object) -> SecretFile:
    if isinstance(value, SecretFile):
        return value
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError("expected the path of a file holding the secret")
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{str(path)!r} is a directory, expected a file") from None
    except PermissionError:
        raise ValueError(f"file {str(path)!r} is not readable (permission denied)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read file {str(path)!r}: {exc}") from None
    if not text:
        raise ValueError(f"file {str(path)!r} is empty")
    return SecretFile(path=path, value=SecretStr(text))


SecretFromFile = Annotated[
    SecretFile,
    PlainValidator(_read_secret_file),
    PlainSerializer(lambda s: str(s.path), return_type=str),
]


def _env_name(*path: str) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _one_secret(
    inline: SecretStr | None, from_file: SecretFile | None, *path: str, required: bool
) -> None:
    """Check that a secret comes from exactly one place (env or file)."""
    key = path[-1]
    if inline is not None and from_file is not None:
        raise ValueError(f"set either {key}_file or env {_env_name(*path)}, not both")
    if required and inline is None and from_file is None:
        raise ValueError(f"{key} is required: set {key}_file or env {_env_name(*path)}")


def _secret_value(inline: SecretStr | None, from_file: SecretFile | None) -> str | None:
    if inline is not None:
        return inline.get_secret_value()
    if from_file is not None:
        return from_file.value.get_secret_value()
    return None


def _required_secret(inline: SecretStr | None, from_file: SecretFile | None) -> str:
    """A secret ``_one_secret(..., required=True)`` has already checked is set."""
    value = _secret_value(inline, from_file)
    assert value is not None  # guaranteed by the section's validator
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def unique_named(items: tuple[N, ...], what: str) -> tuple[N, ...]:
    """``items``, refused when two share a name (an annotation picks them by name)."""
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"two {what} are named {item.name!r}")
        seen.add(item.name)
    return items
