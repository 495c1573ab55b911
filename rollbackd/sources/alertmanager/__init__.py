"""Alertmanager webhook (payload version 4) -> Signals.

A body is taken in two steps, so one bad alert never costs the good ones
beside it and repeats can be dropped before any object is built:

1. ``parse_body`` decodes the bytes and checks only the envelope (a JSON
   object, ``version`` "4", ``alerts`` a list). Anything wrong here is the
   sender's fault for the whole body: ``PayloadError`` with an HTTP status
   (400 not JSON at all, 422 JSON but not a v4 payload) and the JSON path.
2. ``validate_alert`` checks one raw alert and never raises: a bad one comes
   back as ``RejectedAlert`` naming its path, with best-effort fields that
   are safe to store. ``raw_alert_key`` gives a cheap dedupe key in between.

Validation is strict where a mistake would mislead (each alert's status,
startsAt, labels, text that is not valid Unicode) and tolerant elsewhere:
Alertmanager adds fields over time, so unknown keys are ignored.

Each alert's own ``status`` is used: the top-level status says "firing" as
soon as one alert of a group fires, even when others in the same body are
resolved. Repeats are normal (Alertmanager re-sends on every
group_interval/repeat_interval, and an HA pair sends everything twice), so
each signal carries the key ``am:<fingerprint>:<status>:<startsAt>`` and
``SignalDeduper`` tells first sightings from repeats.

The package follows those steps: ``envelope`` (the body and its envelope,
raw keys), ``alert`` (one alert's validation) and ``mapping`` (targets,
signals, the in-memory deduper).
"""

from rollbackd.sources.alertmanager.alert import (
    RejectedAlert,
    WebhookAlert,
    WebhookPayload,
    parse_payload,
    validate_alert,
)
from rollbackd.sources.alertmanager.envelope import (
    MAX_NESTING,
    SUPPORTED_VERSION,
    PayloadError,
    RawPayload,
    may_hold_surrogates,
    parse_body,
    raw_alert_key,
)
from rollbackd.sources.alertmanager.mapping import (
    SignalDeduper,
    TargetMapping,
    UnresolvedAlert,
    alert_to_signal,
    alerts_to_signals,
)

__all__ = [
    "MAX_NESTING",
    "SUPPORTED_VERSION",
    "PayloadError",
    "RawPayload",
    "RejectedAlert",
    "SignalDeduper",
    "TargetMapping",
    "UnresolvedAlert",
    "WebhookAlert",
    "WebhookPayload",
    "alert_to_signal",
    "alerts_to_signals",
    "may_hold_surrogates",
    "parse_body",
    "parse_payload",
    "raw_alert_key",
    "validate_alert",
]
