"""Credentials out of everything rollbackd prints.

URLs carry secrets more often than anyone intends: ``http://user:password@``
for a Prometheus behind basic auth, ``?access_token=`` for a proxy, a Slack
incoming-webhook URL whose path is the secret. One helper masks them, and
every place that prints goes through it: ``check-config``, configuration
errors, log events (a structlog processor), CLI errors, API error bodies,
``show``/``report`` output and the API's rollback records.

What is masked, and why only that:

* the password of ``user:password@`` (the user name stays: it says which
  account is meant), or the whole user part when it has no password (a token
  used as the user name, as Git hosts do);
* the value of every query or fragment parameter whose name looks like a
  credential (token, key, secret, password, auth, signature, ...);
* the path of a Slack incoming webhook (the path is the credential);
* a ``Bearer``/``Basic`` credential written out in text.

Masking is textual: the rest of the URL is kept byte for byte, so the output
still says which host and path were meant.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = [
    "MASK",
    "looks_secret",
    "redact_event",
    "redact_text",
    "redact_url",
    "redact_value",
    "redacted_exceptions",
]

MASK = "***"

# A URL inside free text: scheme://, then anything up to whitespace, a quote or a
# bracket, not counting punctuation that ends the sentence ("...: 500", "(see URL).").
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,:;)!?]")
_URL_PARTS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:(?P<userinfo>[^/?#\s]*)@)?(?P<host>[^/?#\s]*)"
    r"(?P<rest>.*)",
    re.DOTALL,
)
# name=value after ?, &, ; or # (OAuth puts tokens in the fragment).
_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")
_SENSITIVE_NAME = re.compile(
    r"token|key|secret|pass|pwd|auth|sig|credential|session|private", re.IGNORECASE
)
_AUTH_HEADER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_SECRET_PATH_HOSTS = ("hooks.slack.com",)


def redact_url(url: str) -> str:
    """``url`` with its credentials masked; text that is not a URL comes back unchanged."""
    match = _URL_PARTS.fullmatch(url)
    if match is None:
        return url
    userinfo, host, rest = match["userinfo"], match["host"], match["rest"]
    out = match["scheme"]
    if userinfo is not None:
        user, colon, _password = userinfo.partition(":")
        out += f"{user}:{MASK}@" if colon else f"{MASK}@"
    out += host
    if host.lower().split(":")[0].endswith(_SECRET_PATH_HOSTS) and rest.startswith("/"):
        path_end = len(rest.split("?", 1)[0].split("#", 1)[0])
        rest = f"/{MASK}" + rest[path_end:]
    return out + _PARAM.sub(_mask_param, rest)


def _mask_param(match: re.Match[str]) -> str:
    if match["value"] and _SENSITIVE_NAME.search(match["name"]):
        return f"{match['lead']}{match['name']}={MASK}"
    return match.group(0)


def looks_secret(name: str) -> bool:
    """True for a name that suggests a credential (``DB_PASSWORD``, ``api_key``, ``token``)."""
    return _SENSITIVE_NAME.search(name) is not None


def redact_text(text: str) -> str:
    """Every URL and written-out Authorization credential in ``text``, masked."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _AUTH_HEADER.sub(lambda m: f"{m['scheme']} {MASK}", text)


def redact_value(value: Any) -> Any:
    """``value`` with every string inside it (mappings, lists, tuples) redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # not a namedtuple
        return tuple(redact_value(item) for item in value)
    return value


def redact_event(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog processor: no log line carries a credential found in a URL or header."""
    return {key: redact_value(item) for key, item in event_dict.items()}


def redacted_exceptions(
    formatter: Callable[[TextIO, Any], None],
) -> Callable[[TextIO, Any], None]:
    """A console exception formatter whose tracebacks are redacted like everything else.

    The console renderer formats ``exc_info`` itself, after every processor
    ran, so ``redact_event`` never sees that text.
    """

    def render(out: TextIO, exc_info: Any) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        out.write(redact_text(buffer.getvalue()))

    return render
