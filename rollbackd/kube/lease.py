"""Leader election on a coordination.k8s.io Lease, timed by the monotonic clock.

The algorithm is client-go's: a follower takes the Lease once its record has
not changed for ``leaseDurationSeconds`` of *its own* observation (clocks of
different machines are never compared); the leader renews every
``retry_period`` and gives up when it has not renewed for ``renew_deadline``.
What this module adds for rollbackd:

- every successful acquire or renew grants the :class:`~rollbackd.kube.fencing.Fence`
  until ``renew_deadline`` after the request was sent, so a leader that
  stalls is fenced by the clock, not by the renew loop noticing;
- the Lease's ``leaseTransitions`` is the term: it goes up every time a
  process acquires the Lease (a restarted process with the same identity
  included), and writes carry it;
- a Lease that cannot be used because of the configuration (its namespace is
  missing, RBAC forbids it) is a :class:`LeaseProblem` naming the key to fix,
  reported once, not a traceback every retry period;
- on shutdown the leader stops its work first, then hands the Lease over
  (empty holder), so a standby takes over at its next retry instead of
  after a whole lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog

from rollbackd.kube.errors import ConflictError, ForbiddenError, KubeError, NotFoundError
from rollbackd.kube.fencing import Fence, Term
from rollbackd.kube.leaserecord import (
    NAMESPACE_KEY,
    PROBLEM_BACKOFF_CAP,
    LeaseProblem,
    LeaseSettings,
    Misconfigured,
    Outcome,
    Request,
    micro_time,
    utcnow,
)
from rollbackd.supervision import cancel_and_wait

__all__ = ["LeaseElector", "LeaseProblem", "LeaseSettings"]

log = structlog.get_logger("rollbackd.kube.lease")


class LeaseElector:
    """Campaigns for one Lease and keeps a Fence in step with what it knows."""

    def __init__(
        self,
        request: Request,
        fence: Fence,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._request = request
        self._fence = fence
        self.settings = settings
        self._clock = clock
        self._now = now
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(settings.namespace)}/leases"
        # The record as last seen, and when (our clock): a follower waits a
        # lease duration from the moment it saw the record change.
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._renewed_at = -float("inf")
        self._failures_logged: str | None = None
        self.leading = False
        self.holder: str | None = None  # the holder last seen ("" when released)
        self.term: Term | None = None  # ours, while leading
        self.problem: LeaseProblem | None = None
        self._on_problem: Callable[[LeaseProblem | None], None] | None = None

    # --- the campaign ---------------------------------------------------------

    async def run(
        self,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
        *,
        on_problem: Callable[[LeaseProblem | None], None] | None = None,
        release_on_cancel: bool = True,
    ) -> None:
        """Campaign until cancelled; ``on_started`` runs (as a task) while leading.

        On losing the Lease the task is cancelled and ``on_stopped`` awaited
        before campaigning again. Cancelled while leading: the work is
        stopped, then the Lease is handed over (``release_on_cancel``).
        """
        self._fence.require_lease()
        self._on_problem = on_problem
        s = self.settings
        log.info(
            "leader_election_started",
            namespace=s.namespace,
            lease=s.name,
            identity=s.identity,
            lease_duration=s.lease_duration,
            renew_deadline=s.renew_deadline,
            retry_period=s.retry_period,
        )
        problems = 0
        while True:
            outcome = await self._bounded_attempt(s.renew_deadline)
            if outcome is Outcome.LEADING:
                problems = 0
                work_failed = await self._lead(on_started, on_stopped, release_on_cancel)
                _raise_if_cancelling()
                if work_failed:
                    # Our own work failed: give another replica the chance first.
                    await asyncio.sleep(s.lease_duration)
                continue
            if self.problem is not None:
                problems += 1
                delay = min(PROBLEM_BACKOFF_CAP, s.retry_period * 2.0**problems)
            else:
                problems = 0
                delay = s.retry_period * random.uniform(1.0, 1.2)
            await asyncio.sleep(delay)

    async def _lead(
        self,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
        release_on_cancel: bool,
    ) -> bool:
        """Lead until the Lease is lost; True when leadership ended because the work failed."""
        self.leading = True
        log.info("lease_acquired", term=str(self.term))
        failed = asyncio.Event()
        work = asyncio.create_task(self._work(on_started, failed), name="rollbackd-leading")
        voluntary = False
        try:
            voluntary = await self._renew_until_lost(failed)
            return voluntary
        except asyncio.CancelledError:
            voluntary = True
            raise
        finally:
            self.leading = False
            if not voluntary:
                # Lost: nothing may be written from here on, before any cleanup runs.
                self._fence.revoke()
            await cancel_and_wait([work])
            try:
                # A voluntary step-down still holds the Lease while on_stopped
                # runs: pages pending can go out until the fence runs out.
                await on_stopped()
            finally:
                self._fence.revoke()
                self.term = None
                if voluntary and release_on_cancel:
                    await self._release()

    async def _work(self, on_started: Callable[[], Awaitable[None]], failed: asyncio.Event) -> None:
        try:
            await on_started()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leader_work_failed")
            failed.set()

    async def _renew_until_lost(self, failed: asyncio.Event) -> bool:
        """Renew every retry period; returns when leadership is lost (True: work failed)."""
        s = self.settings
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.retry_period):
                    await failed.wait()
            if failed.is_set():
                log.warning("leadership_given_up", reason="the leader's work failed")
                return True
            deadline = self._renewed_at + s.renew_deadline
            outcome = await self._bounded_attempt(deadline - self._clock())
            if outcome is Outcome.LEADING:
                continue
            if outcome is Outcome.HELD:
                log.warning("leadership_lost", reason="held by another replica", holder=self.holder)
                return False
            if self._clock() >= deadline:
                log.warning(
                    "leadership_lost",
                    reason="not renewed within the renew deadline",
                    renew_deadline=s.renew_deadline,
                )
                return False

    # --- one attempt ----------------------------------------------------------

    async def _bounded_attempt(self, budget: float) -> Outcome:
        try:
            async with asyncio.timeout(max(0.05, budget)):
                return await self.attempt()
        except TimeoutError:
            self._note_failure("lease request timed out")
            return Outcome.FAILED

    async def attempt(self) -> Outcome:
        """Acquire or renew once (client-go's tryAcquireOrRenew)."""
        started = self._clock()  # before any request: the grant is timed from here
        try:
            with self._fence.exempt("lease"):
                outcome = await self._acquire_or_renew(started)
        except Misconfigured as exc:
            self._set_problem(exc.problem)
            return Outcome.FAILED
        except KubeError as exc:
            self._note_failure(str(exc))
            return Outcome.FAILED
        self._set_problem(None)
        self._failures_logged = None
        return outcome

    async def _acquire_or_renew(self, started: float) -> Outcome:
        s = self.settings
        try:
            lease = await self._request("GET", f"{self._path}/{quote(s.name)}")
        except NotFoundError:
            return await self._create(started)
        except KubeError as exc:
            self._raise_if_misconfigured(exc, "get")
            raise
        spec = lease.get("spec") or {}
        if self._held_by_another(lease, spec):
            if self.leading:
                self._fence.revoke()  # someone else holds it: stop at once
            return Outcome.HELD
        renewing = self.holder == s.identity and self.leading and self.term is not None
        transitions = int(spec.get("leaseTransitions") or 0)
        if not renewing:
            transitions += 1  # a new term: this process was not leading
        wall = micro_time(self._now())
        lease["spec"] = {
            **spec,
            "holderIdentity": s.identity,
            "leaseDurationSeconds": s.lease_duration,
            "acquireTime": spec.get("acquireTime") if renewing else wall,
            "renewTime": wall,
            "leaseTransitions": transitions,
        }
        try:
            updated = await self._request("PUT", f"{self._path}/{quote(s.name)}", body=lease)
        except (ConflictError, NotFoundError):
            return Outcome.FAILED  # someone else wrote it first; look again next time
        except KubeError as exc:
            self._raise_if_misconfigured(exc, "update")
            raise
        self._granted(updated, transitions, started)
        return Outcome.LEADING

    def _held_by_another(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        """Another holder's term still runs: timed from when this process saw its version."""
        version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        now = self._clock()
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = now
        holder = str(spec.get("holderIdentity") or "")
        self.holder = holder
        duration = int(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        mine = holder == self.settings.identity
        return bool(holder) and not mine and self._observed_at + duration > now

    async def _create(self, started: float) -> Outcome:
        s = self.settings
        wall = micro_time(self._now())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": {
                "holderIdentity": s.identity,
                "leaseDurationSeconds": s.lease_duration,
                "acquireTime": wall,
                "renewTime": wall,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._request("POST", self._path, body=body)
        except ConflictError:
            return Outcome.FAILED  # created by another replica just now
        except NotFoundError as exc:
            raise Misconfigured(
                LeaseProblem(
                    NAMESPACE_KEY,
                    f'namespace "{s.namespace}" does not exist, so the Lease '
                    f"{s.namespace}/{s.name} cannot be created ({exc}). Create the namespace, "
                    "or set leader_election.namespace to the namespace rollbackd runs in "
                    "(the Helm chart sets it to the release namespace).",
                )
            ) from exc
        except KubeError as exc:
            self._raise_if_misconfigured(exc, "create")
            raise
        self._granted(created, 0, started)
        return Outcome.LEADING

    def _granted(self, lease: dict[str, Any], transitions: int, started: float) -> None:
        s = self.settings
        self._observed_version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        self._observed_at = self._clock()
        self._renewed_at = started
        self.holder = s.identity
        self.term = Term(s.identity, transitions)
        self._fence.grant(self.term, renewed_at=started, valid_for=s.renew_deadline)

    def _raise_if_misconfigured(self, exc: KubeError, verb: str) -> None:
        if not (isinstance(exc, ForbiddenError) or exc.status in (401, 403)):
            return
        s = self.settings
        raise Misconfigured(
            LeaseProblem(
                NAMESPACE_KEY,
                f"the API server refuses to {verb} the Lease {s.namespace}/{s.name} "
                f"({exc}). Grant rollbackd's service account get, create and update on "
                f'leases in namespace "{s.namespace}" (the Helm chart does, in the release '
                "namespace), or set leader_election.namespace and leader_election.lease_name "
                "to a Lease it may use.",
            )
        ) from exc

    # --- handing over -----------------------------------------------------------

    async def _release(self) -> None:
        """Give the Lease up (empty holder), only if it is still ours; best effort."""
        s = self.settings
        try:
            async with asyncio.timeout(s.renew_deadline):
                with self._fence.exempt("lease release"):
                    lease = await self._request("GET", f"{self._path}/{quote(s.name)}")
                    spec = lease.get("spec") or {}
                    if spec.get("holderIdentity") != s.identity:
                        return
                    wall = micro_time(self._now())
                    lease["spec"] = {
                        **spec,
                        "holderIdentity": "",
                        "leaseDurationSeconds": 1,
                        "acquireTime": wall,
                        "renewTime": wall,
                    }
                    await self._request("PUT", f"{self._path}/{quote(s.name)}", body=lease)
            log.info("lease_released", lease=f"{s.namespace}/{s.name}")
        except (TimeoutError, KubeError) as exc:
            log.warning("lease_release_failed", error=str(exc))

    # --- reporting ------------------------------------------------------------------

    def _set_problem(self, problem: LeaseProblem | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        if problem is not None:
            # Once per distinct problem, with the key to fix: no traceback per retry.
            log.error("leader_election_misconfigured", key=problem.key, error=problem.message)
        else:
            log.info("leader_election_ok")
        if self._on_problem is not None:
            self._on_problem(problem)

    def _note_failure(self, error: str) -> None:
        if error != self._failures_logged:
            log.warning("lease_attempt_failed", error=error)
            self._failures_logged = error


def _raise_if_cancelling() -> None:
    """Stop when this task was told to, even if the CancelledError was swallowed on the way.

    Stopping a lost leadership's work awaits tasks that were just cancelled
    (``suppress(CancelledError)`` around them, here and in the daemon); a
    stop that lands in that moment is indistinguishable from theirs and was
    lost, so the campaign went on, won the Lease back and never ended: the
    daemon's stop waited its 15 s bound and left it running, and the event
    loop's own teardown could wait for it forever. ``cancelling()`` still
    counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
