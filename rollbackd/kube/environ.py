"""The API client's HTTP session without per-request environment look-ups it cannot use.

kubernetes-asyncio builds its aiohttp session with ``trust_env=True``, so
every request first reads the proxy variables and a ``.netrc`` file, each in
a worker thread of its own: two thread hops per request, each handing the
GIL back and forth with the event loop. Pod health lists the pods of every
Deployment with a recent rollout, thousands of requests a cycle after a
fleet-wide rollout, and every webhook answer waited behind those hand-overs.

When the process has neither a proxy variable nor a netrc file, trusting the
environment changes nothing about any request, so it is turned off. With
either one present the session is left as it is: a proxy set in the
environment keeps working.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["environment_unused", "skip_unused_environment"]


def _netrc_path() -> Path | None:
    # Where aiohttp looks (helpers.netrc_from_env): $NETRC, else ~/.netrc.
    configured = os.environ.get("NETRC")
    if configured is not None:
        return Path(configured)
    try:
        return Path.home() / ".netrc"
    except RuntimeError:
        return None


def environment_unused() -> bool:
    """True when no proxy variable is set and no netrc file exists."""
    if urllib.request.getproxies():
        return False
    netrc = _netrc_path()
    return netrc is None or not netrc.exists()


def skip_unused_environment(api_client: Any) -> bool:
    """Stop ``api_client``'s session from reading an environment that is empty; True if so."""
    session = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if not isinstance(session, aiohttp.ClientSession) or not hasattr(session, "_trust_env"):
        return False
    if not environment_unused():
        return False
    # aiohttp takes trust_env only at construction; the client built the session.
    session._trust_env = False
    return True
