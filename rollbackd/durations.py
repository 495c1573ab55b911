"""Every way rollbackd reads or writes a duration, in one place.

Two grammars are read: the configuration's (``"500ms"``, ``"1h30m"``, a
number of seconds, signed) and Prometheus's (``"15s"``, ``"1m30s"``, whole
numbers, ``w`` and ``y`` too). Several forms are written, one per audience:
the config's compact form, a PromQL range selector, a page's short form, the
decision sentences and the report's table.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_CONFIG_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_CONFIG_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PROM_PART = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_PROM_FULL = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")
_UNIT_SECONDS = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}


def parse_duration(value: object) -> timedelta:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or a number of seconds (the config)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):  # bool is an int: `cooldown: true` is a mistake
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        if _NUMBER.fullmatch(text):
            return timedelta(seconds=float(text))
        unsigned = text.removeprefix("-")
        if unsigned and _CONFIG_FULL.fullmatch(unsigned):
            seconds = sum(
                float(amount) * _UNIT_SECONDS[unit]
                for amount, unit in _CONFIG_PART.findall(unsigned)
            )
            return timedelta(seconds=sign * seconds)
    raise ValueError(
        f'invalid duration {value!r}: expected e.g. "500ms", "30s", "5m", "1h30m" '
        "or a number of seconds"
    )


def is_prometheus_duration(text: str) -> bool:
    """True for a duration PromQL takes in a range selector, as written (no blanks)."""
    return _PROM_FULL.fullmatch(text) is not None


def parse_prometheus_duration(text: str) -> timedelta:
    """Parse a Prometheus duration ("15s", "1m30s", "500ms"); raises ValueError."""
    text = text.strip()
    pos = 0
    total = 0.0
    for match in _PROM_PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The compact form the config accepts ("1h30m", "500ms"), for messages and summaries."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    sign, millis = ("-", -millis) if millis < 0 else ("", millis)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, millis = divmod(millis, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)


def format_range(delta: timedelta) -> str:
    """A PromQL range-selector duration in whole seconds, at least 1s ("37s")."""
    return f"{max(1, round(delta.total_seconds()))}s"


def format_brief(delta: timedelta) -> str:
    """Compact human duration, unsigned: ``2h``, ``1h30m``, ``4m10s``, ``3d2h``, ``0s``.

    Seconds are left out from one hour on; they are noise at that scale
    (the decision's sentences).
    """
    seconds = int(abs(delta.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    if days or hours:
        seconds = 0
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
    return "".join(f"{n}{unit}" for n, unit in units if n) or "0s"


def format_age(age: timedelta) -> str:
    """``42s``, ``5m3s``, ``2h5m``: how long a page has waited, for humans."""
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_elapsed(delta: timedelta | None) -> str:
    """Signed, with spaces, sub-second precise: ``350 ms``, ``4.2 s``, ``1 h 2 min 3 s``.

    The post-incident report's figures; None (not known) is a dash.
    """
    if delta is None:
        return "—"
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours} h {minutes} min {secs} s"
    return f"{sign}{minutes} min {secs} s"
