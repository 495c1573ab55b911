"""Step 1: decode the body and check only its envelope; cheap keys for raw alerts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rollbackd.sources.jsonsafe import json_type, nesting_exceeds, safe_text

SUPPORTED_VERSION = "4"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
# Alertmanager's body nests four levels (body, alerts, alert, labels); far
# deeper is an attack or a bug, and deep enough makes Python's json recurse out.
MAX_NESTING = 32

# Bounds for the best-effort fields of a rejected alert: stored, logged, shown.
_MAX_KEPT_LABELS = 64
_MAX_LABEL_NAME = 128
_MAX_LABEL_VALUE = 1024
# Envelope text kept from a body.
_MAX_ENVELOPE_TEXT = 4096


class PayloadError(ValueError):
    """The body as a whole is unusable; the sender must not retry it.

    ``status`` is the HTTP answer: 400 when the body is not JSON at all (not
    UTF-8, malformed, nested too deeply, a number too big, not an object),
    422 when it is JSON but not a usable v4 payload. ``path`` is the JSON
    path of the problem (``$`` for the whole body).
    """

    def __init__(self, message: str, *, status: int = 400, path: str = "$") -> None:
        super().__init__(message)
        self.status = status
        self.path = path


@dataclass(frozen=True)
class RawPayload:
    """A body whose envelope is a usable v4 payload; the alerts are not yet validated.

    The envelope fields are informational and best-effort: a malformed one
    is replaced by its default rather than costing the alerts. All text is
    safe to log and store.
    """

    raw_alerts: list[Any]
    group_key: str = ""
    receiver: str = ""
    status: str = ""
    external_url: str = ""
    truncated_alerts: int = 0
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)


def _decode(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise PayloadError(f"body nests deeper than {MAX_NESTING} levels") from None
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits.
        raise PayloadError("body holds a number too large to read") from None
    # Counting brackets is a C-speed upper bound on the depth: most bodies skip the walk.
    if body.count(b"[") + body.count(b"{") > MAX_NESTING and nesting_exceeds(data, MAX_NESTING):
        raise PayloadError(f"body nests deeper than {MAX_NESTING} levels")
    return data


def _show(value: Any) -> str:
    if isinstance(value, str):
        return safe_text(json.dumps(value, ensure_ascii=False), 64)
    return f"a JSON {json_type(value)}"


def _envelope_text(value: Any) -> str:
    return safe_text(value, _MAX_ENVELOPE_TEXT) if isinstance(value, str) else ""


def safe_labels(value: Any) -> dict[str, str]:
    """The string-to-string pairs of ``value``, made safe and bounded; never raises."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, str] = {}
    for key, item in value.items():
        if len(kept) >= _MAX_KEPT_LABELS:
            break
        if isinstance(key, str) and isinstance(item, str):
            kept[safe_text(key, _MAX_LABEL_NAME)] = safe_text(item, _MAX_LABEL_VALUE)
    return kept


def parse_body(body: bytes) -> RawPayload:
    """Decode a webhook body and check its envelope; raises only ``PayloadError``."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {json_type(data)}")
    if "version" not in data:
        raise PayloadError('version is missing (expected "4")', status=422, path="$.version")
    version = data["version"]
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            f'unsupported webhook version {_show(version)} (expected "4")',
            status=422,
            path="$.version",
        )
    if "alerts" not in data:
        raise PayloadError("alerts is missing", status=422, path="$.alerts")
    alerts = data["alerts"]
    if not isinstance(alerts, list):
        raise PayloadError(
            f"alerts must be a JSON array, got {json_type(alerts)}", status=422, path="$.alerts"
        )
    truncated = data.get("truncatedAlerts")
    return RawPayload(
        raw_alerts=alerts,
        group_key=_envelope_text(data.get("groupKey")),
        receiver=_envelope_text(data.get("receiver")),
        status=_envelope_text(data.get("status")),
        external_url=_envelope_text(data.get("externalURL")),
        truncated_alerts=(
            truncated if isinstance(truncated, int) and not isinstance(truncated, bool) else 0
        ),
        group_labels=safe_labels(data.get("groupLabels")),
        common_labels=safe_labels(data.get("commonLabels")),
    )


def raw_alert_key(raw: Any) -> str | None:
    """A dedupe key for a raw alert, computed without validating it.

    Built from the fingerprint (or, without one, the labels in canonical
    order), the status and startsAt exactly as sent, so byte-identical
    repeats share it and a resolve or a new firing does not. None when
    ``raw`` is not an object or those fields are not plain strings.
    """
    if not isinstance(raw, dict):
        return None
    status, starts_at, fingerprint = raw.get("status"), raw.get("startsAt"), raw.get("fingerprint")
    if not isinstance(status, str) or not isinstance(starts_at, str):
        return None
    identity: list[Any]
    if isinstance(fingerprint, str) and fingerprint:
        plain = f"{fingerprint}\x1f{status}\x1f{starts_at}"
        if len(plain) <= 96 and plain.isascii():
            # The common case (16 hex digits), kept cheap: no hashing.
            return "am-raw:f\x1f" + plain
        identity = ["fingerprint", fingerprint]
    elif fingerprint is None or fingerprint == "":
        labels = raw.get("labels")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            return None
        identity = ["labels", sorted(labels.items())]
    else:
        return None
    # ensure_ascii keeps even lone surrogates hashable.
    canonical = json.dumps([identity, status, starts_at], separators=(",", ":"))
    return "am-raw:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def may_hold_surrogates(body: bytes) -> bool:
    """False when no string in ``body`` can decode to a lone surrogate.

    A UTF-8 body cannot carry one raw; only a ``\\uD800``-``\\uDFFF`` escape
    makes one. One C-speed scan of the body spares the per-string check for
    every alert of the (usual) clean body; a false positive only costs time.
    """
    return _SURROGATE_ESCAPE.search(body) is not None
