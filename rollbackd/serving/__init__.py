"""The HTTP listener's defences: hostile or broken clients cost nothing that matters.

rollbackd's HTTP port faces whatever can reach it. Without limits, clients
that open connections and never finish their headers hold one file
descriptor each until the process runs out; then the executor's own
Kubernetes, Prometheus and pager clients fail with EMFILE (a rollback is lost,
its escalation page too) and asyncio logs every failed ``accept()``.
aiohttp's server has neither a connection cap nor a header timeout, so:

* ``fd_budget`` sizes the inbound cap from ``RLIMIT_NOFILE``, keeping a
  reserve of descriptors for everything else the daemon opens;
* ``start_site`` serves the app on a site whose connections are guarded:
  at most ``max_connections`` open; a connection that has not delivered
  complete request headers within ``header_timeout`` of opening (or of the
  end of its previous response) is closed; when every slot is taken, the
  connection that has waited longest for its headers gives its slot to the
  newcomer, so a health probe still gets through a slow-loris flood; only
  when every slot is busy with a real request is a newcomer refused (503);
* ``install_accept_error_limiter`` collapses asyncio's per-attempt
  "socket.accept() out of system resource" reports into one line per
  interval with a count.

One module each: ``budget``, ``guard`` (with ``site``) and ``accept``.
"""

from rollbackd.serving.accept import (
    ACCEPT_ERROR_MESSAGE,
    AcceptErrorLimiter,
    install_accept_error_limiter,
)
from rollbackd.serving.budget import fd_budget
from rollbackd.serving.guard import ConnectionGuard
from rollbackd.serving.site import GuardedSite, start_site

__all__ = [
    "ACCEPT_ERROR_MESSAGE",
    "AcceptErrorLimiter",
    "ConnectionGuard",
    "GuardedSite",
    "fd_budget",
    "install_accept_error_limiter",
    "start_site",
]
