"""How many inbound connections fit the descriptor limit, with a reserve for the rest."""

from __future__ import annotations

import resource

import structlog

log = structlog.get_logger("rollbackd.serving")

# Descriptors kept free for everything but inbound HTTP: Kubernetes watches and
# API calls, Prometheus queries, pager and chat deliveries, the journal.
FD_RESERVE = 256
MIN_CONNECTIONS = 16
# Raise the soft limit at most this far when the hard limit is unlimited.
_UNLIMITED_TARGET = 1 << 16


def fd_budget(requested_max_connections: int) -> int:
    """The inbound connection cap this process can afford; raises the soft fd limit if allowed.

    The cap is ``min(requested, soft // 2, soft - FD_RESERVE)``, never below
    ``MIN_CONNECTIONS``: at least half of the descriptors, and never fewer than
    the reserve, stay for the daemon's own clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _UNLIMITED_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_not_raised", soft_limit=soft, hard_limit=hard, error=str(exc))
    usable = soft if soft != resource.RLIM_INFINITY else _UNLIMITED_TARGET
    cap = max(MIN_CONNECTIONS, min(requested_max_connections, usable // 2, usable - FD_RESERVE))
    event = log.warning if cap < requested_max_connections else log.info
    event(
        "inbound_connection_budget",
        max_connections=cap,
        requested=requested_max_connections,
        fd_soft_limit=_limit(soft),
        fd_soft_limit_before=_limit(before),
        fd_hard_limit=_limit(hard),
        fd_reserve=FD_RESERVE,
    )
    return cap


def _limit(value: int) -> int | str:
    return "unlimited" if value == resource.RLIM_INFINITY else value
