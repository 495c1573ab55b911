"""Fencing: a replica that is not sure it holds the Lease writes nothing and pages nothing.

Leader election alone does not stop a deposed leader: a process frozen
(SIGSTOP, a long GC pause, a starved VM) past its Lease wakes up still
believing it leads, while another replica has taken over. The ``Fence`` is
what every Kubernetes write and every page asks first. It knows, from the
local monotonic clock, when this replica last renewed the Lease and how long
that renewal is good for (the renew deadline, shorter than the lease
duration the other replicas wait): past that, the answer is no, whatever the
renew loop has or has not noticed yet.

Why the deadline is safe: a renewal is timed from *before* its request was
sent, and the other replicas time the lease from when they *saw* it, which is
later; the deadline is shorter than the lease duration. So when another
replica may take over, this one has already stopped acting. The monotonic
clock keeps running while the process is stopped, so a frozen leader that
wakes up is fenced on its first check.

What the clock cannot cover (a check passed just before a freeze, the
request sent after it) the term covers: the Lease's transition count is
written into the rollback state annotation with every write, and a write
that would replace a state from a later term is refused (see
``check_state_term``). Deployment writes carry a resourceVersion
precondition, so a stale writer always re-reads and meets the later term.

Without leader election (one replica, the one-shot CLI, tests) the fence is
open: ``require_lease`` turns fencing on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from rollbackd.errors import FencedError

__all__ = [
    "Fence",
    "FencedError",
    "StaleTermError",
    "Term",
    "check_state_term",
    "fenced_request_class",
    "install",
]

log = structlog.get_logger("rollbackd.kube.fencing")

# Methods that change nothing on the server.
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Set inside ``Fence.exempt()``: this task's writes bypass the fence (Lease
# renewals, which have their own optimistic concurrency; giving up the
# leader label). A ContextVar, so the exemption never leaks into other tasks.
_EXEMPT: ContextVar[str | None] = ContextVar("rollbackd_fence_exempt", default=None)


class StaleTermError(FencedError):
    """The object already carries state from a later leadership term than ours."""


@dataclass(frozen=True)
class Term:
    """Who leads, and which leadership: the Lease's holder and transition count."""

    holder: str
    number: int

    def __str__(self) -> str:
        return f"{self.holder}@{self.number}"


class Fence:
    """Whether this replica may act now, from the monotonic clock and its last renewal."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leased = False
        self._deadline = -math.inf
        self._renewed_at = -math.inf
        self._term: Term | None = None

    # --- what the leader election tells it ---------------------------------

    def require_lease(self) -> None:
        """From now on only a valid Lease grant lets this replica act."""
        self._leased = True

    @property
    def leased(self) -> bool:
        """True once fencing is on (leader election in use)."""
        return self._leased

    def grant(self, term: Term, *, renewed_at: float, valid_for: float) -> None:
        """The Lease was acquired or renewed by a request sent at ``renewed_at``.

        ``valid_for`` is the renew deadline: how long this replica may act on
        that renewal alone.
        """
        if term != self._term:
            log.info("fence_granted", term=str(term), valid_for=valid_for)
        self._term = term
        self._renewed_at = renewed_at
        self._deadline = renewed_at + valid_for

    def revoke(self) -> None:
        """Leadership is over (lost, or given up): nothing more until the next grant."""
        if self._deadline > -math.inf:
            log.info("fence_revoked", term=str(self._term) if self._term else None)
        self._deadline = -math.inf

    # --- what writers and pagers ask ------------------------------------------

    def may_act(self) -> bool:
        """True when writes and pages are allowed right now."""
        return not self._leased or self._clock() < self._deadline

    def remaining(self) -> float:
        """Seconds this replica may still act without another renewal (inf when unfenced)."""
        if not self._leased:
            return math.inf
        return max(0.0, self._deadline - self._clock())

    @property
    def term(self) -> Term | None:
        """The term writes are made in; None when unfenced or not leading."""
        if not self._leased or not self.may_act():
            return None
        return self._term

    def check(self, action: str) -> None:
        """Raise ``FencedError`` unless this replica may act (or the caller is exempt)."""
        if self.may_act() or _EXEMPT.get() is not None:
            return
        since = self._clock() - self._renewed_at
        renewed = "never renewed" if math.isinf(since) else f"last renewed {since:.1f}s ago"
        log.warning("write_fenced", action=action, term=str(self._term) if self._term else None)
        raise FencedError(f"not sure this replica holds the Lease ({renewed}): refusing {action}")

    @contextlib.contextmanager
    def exempt(self, why: str) -> Iterator[None]:
        """Writes in this block (and tasks it starts) bypass the fence.

        Only for writes that are safe from a deposed leader: the Lease itself
        (guarded by its resourceVersion) and giving up the leader label.
        """
        token = _EXEMPT.set(why)
        try:
            yield
        finally:
            _EXEMPT.reset(token)


def check_state_term(fence: Fence, holder: str | None, term: int | None, what: str) -> None:
    """Refuse to replace rollback state written in a later term than ours.

    ``holder`` and ``term`` are what the state on the object records (None
    when it records none). Unfenced replicas (no leader election) have no
    term to compare.
    """
    if term is None or not fence.leased:
        return
    ours = fence.term
    if ours is None:
        fence.check(what)  # not leading at all: FencedError says why
        return
    if term > ours.number:
        log.warning("stale_term_refused", what=what, ours=str(ours), theirs=f"{holder}@{term}")
        raise StaleTermError(
            f"{what}: state was written by {holder} in term {term}, "
            f"after this replica's term {ours.number}"
        )


def install(api_client: Any, fence: Fence) -> None:
    """Check ``fence`` before every write the ApiClient sends, as late as possible.

    Two hooks. The REST client's single ``request`` method refuses a write
    before any I/O: every path to the API server goes through it (the
    adapter's calls and each retry, typed calls such as the GitOps pause,
    anything added later). Then the HTTP session's request class checks
    again when the connection is ready and right before the first byte is
    written, so a process stopped in between (waiting for a connection,
    under load) does not send on waking what it checked before sleeping.
    """
    rest = api_client.rest_client
    send = rest.request

    async def fenced_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in _READ_METHODS:
            fence.check(f"{method.upper()} {urlsplit(url).path}")
        return await send(method, url, *args, **kwargs)

    rest.request = fenced_request
    session = getattr(rest, "pool_manager", None)
    if isinstance(session, aiohttp.ClientSession) and hasattr(session, "_request_class"):
        # aiohttp takes request_class only at construction; the client built it.
        session._request_class = fenced_request_class(fence)
    else:
        log.warning("fence_late_check_unavailable", reason="unexpected HTTP client")


def fenced_request_class(fence: Fence) -> type[aiohttp.ClientRequest]:
    """An aiohttp request class that asks ``fence`` when the connection is ready and
    again before the first byte of a write (any method but GET, HEAD, OPTIONS).

    The Kubernetes client's session and the pager's use it: a process stopped
    after an earlier check sends nothing on waking past its Lease.
    """

    class FencedClientRequest(aiohttp.ClientRequest):
        def _what(self) -> str:
            return f"{self.method} {self.url.path}"

        async def send(self, conn: Any) -> aiohttp.ClientResponse:
            if self.method not in _READ_METHODS:
                fence.check(self._what())
            return await super().send(conn)

        async def write_bytes(self, writer: Any, conn: Any, content_length: Any = None) -> None:
            # The body (and the headers buffered with it) leaves the process in
            # the same step as this check: nothing written yet, so drop the
            # connection instead; the caller's next attempt is refused cleanly.
            if self.method not in _READ_METHODS and not fence.may_act() and not _EXEMPT.get():
                log.warning("write_fenced", action=self._what(), stage="before the first byte")
                conn.close()
                return
            await super().write_bytes(writer, conn, content_length)

    return FencedClientRequest
