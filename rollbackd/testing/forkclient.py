"""The test process's side of the fork server (:mod:`rollbackd.testing.forkserver`).

One server per process, started on first use from the calling thread (the
kernel SIGKILLs it when that thread's process dies, and it SIGKILLs what it
started). :func:`spawn` returns a :class:`ForkedProcess`, which offers what
``DaemonProcess`` uses of ``asyncio.subprocess.Process``: ``pid``,
``returncode``, ``send_signal``, ``kill`` and an awaitable ``wait``. Signals
go straight to the pid; the exit status comes from the server, which is the
child's parent and reaps it.

Off unless :func:`enable` was called (the test suite's plugin does).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkServerError", "ForkedProcess", "enable", "enabled", "server_pid", "spawn"]

ANSWER_TIMEOUT = 60.0  # the first answer waits for the server's imports
_MAIN = str(Path(__file__).resolve().parent.parent / "__main__.py")

_state: dict[str, Any] = {"enabled": False, "server": None}
_state_lock = threading.Lock()


class ForkServerError(RuntimeError):
    """The fork server could not start the command (the caller execs instead)."""


def enable(on: bool = True) -> None:
    """Start ``rollbackd`` commands through the fork server from now on (or not)."""
    _state["enabled"] = on


def enabled() -> bool:
    return bool(_state["enabled"])


def server_pid() -> int | None:
    """The running fork server's pid, if one was started (for tests of the server itself)."""
    server: _Server | None = _state["server"]
    return server.pid if server is not None and server.alive else None


def interpreter_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that change how the interpreter itself starts: a fork cannot apply them."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


class ForkedProcess:
    """A command the fork server started: signals by pid, the exit status from the server."""

    def __init__(self, server: _Server, pid: int) -> None:
        self._server = server
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self._server.status(self.pid)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        return await self._server.wait_exit(self.pid)


class _Server:
    """One running fork server: requests in, pids and exit statuses out."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rollbackd.testing.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self.pid = self._proc.pid
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._requests = threading.Lock()  # one request (and its answer) at a time
        self._lock = threading.Lock()  # guards the maps below
        self._statuses: dict[int, int] = {}
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._started: set[int] = set()
        self.alive = True
        threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="forkserver-reader", daemon=True
        ).start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not the server's: a child wrote before its stdout was redirected
            if "exit" in message:
                self._exited(int(message["exit"]), int(message["status"]))
            elif "ready" not in message:
                self._answers.put(message)
        # The server is gone, and with it (the kernel's doing) every child it started.
        with self._lock:
            self.alive = False
            orphans = self._started - self._statuses.keys()
        for pid in orphans:
            self._exited(pid, -signal.SIGKILL)
        self._answers.put({"error": "the fork server exited"})

    def _exited(self, pid: int, status: int) -> None:
        with self._lock:
            self._statuses[pid] = status
            waiters = self._waiters.pop(pid, [])
        for future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                future.get_loop().call_soon_threadsafe(_settle, future, status)

    def spawn(self, request: Mapping[str, Any]) -> ForkedProcess:
        """Blocking: the first request waits for the server's imports."""
        with self._requests:
            with self._lock:
                if not self.alive:
                    raise ForkServerError("the fork server exited")
            try:
                self._stdin.write((json.dumps(request) + "\n").encode())
                self._stdin.flush()
                answer = self._answers.get(timeout=ANSWER_TIMEOUT)
            except (OSError, queue.Empty) as exc:
                # A server that wakes later must not fork this request behind the
                # caller's back (the caller execs it instead): it is ended now.
                self._abandon()
                raise ForkServerError(f"the fork server did not answer: {exc!r}") from None
            if "pid" not in answer:
                raise ForkServerError(str(answer.get("error", answer)))
            pid = int(answer["pid"])
            with self._lock:
                self._started.add(pid)
        return ForkedProcess(self, pid)

    def _abandon(self) -> None:
        """SIGKILL the server (its children die with it); the next spawn starts another."""
        with self._lock:
            self.alive = False
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def status(self, pid: int) -> int | None:
        with self._lock:
            return self._statuses.get(pid)

    async def wait_exit(self, pid: int) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with self._lock:
            status = self._statuses.get(pid)
            if status is None:
                self._waiters.setdefault(pid, []).append(future)
        if status is not None:
            return status
        try:
            return await future
        finally:
            with self._lock:
                waiting = self._waiters.get(pid, [])
                if future in waiting:
                    waiting.remove(future)


def _settle(future: asyncio.Future[int], status: int) -> None:
    if not future.done():
        future.set_result(status)


async def spawn(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: Path,
    stderr: Path,
    rlimits: Mapping[int, tuple[int, int]],
) -> ForkedProcess:
    """Start ``rollbackd ARGV`` forked from the server (ForkServerError: exec it instead).

    The server is started here, on the calling thread (the kernel ties its
    life to that thread's); the wait for the answer runs on a worker thread,
    so a first request, which waits for the server's imports, does not hold
    the caller's event loop.
    """
    with _state_lock:
        server: _Server | None = _state["server"]
        if server is None or not server.alive:
            if threading.current_thread() is not threading.main_thread():
                # The kernel would end the server with this thread, and its children with it.
                raise ForkServerError("the fork server starts only from the main thread")
            server = _state["server"] = _Server(_server_env(env))
    if interpreter_env(env) != interpreter_env(server.env):
        raise ForkServerError("the command's PYTHON* variables differ from the server's")
    started = asyncio.ensure_future(
        asyncio.to_thread(
            server.spawn,
            {
                "argv": argv,
                "argv0": _MAIN,
                "cwd": str(cwd),
                "env": dict(env),
                "stdout": str(stdout),
                "stderr": str(stderr),
                "rlimits": [[which, soft, hard] for which, (soft, hard) in rlimits.items()],
            },
        )
    )
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        # Nobody will hold the child: it must not outlive the caller's wait.
        started.add_done_callback(_kill_unwanted)
        raise


def _kill_unwanted(started: asyncio.Future[ForkedProcess]) -> None:
    if not started.cancelled() and started.exception() is None:
        started.result().kill()


@atexit.register
def _stop_server() -> None:
    """End of input stops the server, which SIGKILLs its children; then it is reaped."""
    server: _Server | None = _state["server"]
    if server is not None:
        server.close()


def _server_env(env: Mapping[str, str]) -> dict[str, str]:
    """The first command's interpreter variables, without its other settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    base.update(interpreter_env(env))
    return base
