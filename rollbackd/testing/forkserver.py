"""Start ``rollbackd`` commands by forking a process that has already imported them.

A ``python -m rollbackd run`` spends about a second of CPU starting the
interpreter and importing the package before it does anything; the test
suite starts some sixty daemons, on two cores. The fork server pays that
once: it imports what ``rollbackd run`` imports, then forks a child per
command. The child is set up as ``DaemonProcess`` sets up an exec'd one (its
own session, the kernel's SIGKILL if its parent dies, rlimits, working
directory, environment, stdout and stderr files) and runs ``rollbackd.cli.main``
with the command's arguments: the same entry point, the same code, minus the
import. Its exit status is what the interpreter would have returned.

What a fork cannot give, the caller gets from a real exec instead
(``DaemonProcess`` decides): a ``preexec`` callable, or an environment that
changes how the interpreter itself starts (``PYTHON*`` variables).

The protocol is JSON lines: requests on the server's stdin, answers
(``{"pid": N}`` or ``{"error": "..."}``) and exits (``{"exit": pid,
"status": code}``, negative for a signal, as ``subprocess`` reports it) on
its stdout. End of input stops the server and SIGKILLs what it started.

This module is runtime code (the demo may use it): it must not import pytest.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import resource
import selectors
import signal
import sys
import traceback
from typing import Any

__all__ = ["serve"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _preload() -> None:
    """Import what ``rollbackd run`` imports, in the order its entry point does."""
    from rollbackd import leanimport

    leanimport.install()
    import rollbackd.cli
    import rollbackd.process  # noqa: F401


def _status(wait_status: int) -> int:
    """``subprocess``'s returncode for a ``waitpid`` status."""
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the command, run it, never return."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        os.chdir(request["cwd"])
        _redirect(request["stdout"], request["stderr"])
        for which, soft, hard in request.get("rlimits", []):
            resource.setrlimit(which, (soft, hard))
        os.environ.clear()
        os.environ.update(request["env"])
        # As a fresh interpreter has them (it ignores SIGPIPE itself).
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = [request["argv0"], *request["argv"]]
        code = _run_command(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _redirect(stdout: str, stderr: str) -> None:
    """stdin from /dev/null, stdout and stderr appended to files; nothing else open."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(stdout, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    err = os.open(stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for source, target in ((devnull, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
    # Nothing of the server's (its pipes, its selector) stays open: as after an exec.
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _run_command(argv: list[str]) -> int:
    """``raise SystemExit(main())`` as ``python -m rollbackd`` does, then the exit hooks."""
    from rollbackd.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


class _Server:
    def __init__(self) -> None:
        self.children: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        os.set_blocking(self.wake_read, False)
        self.selector = selectors.DefaultSelector()
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    def spawn(self, request: dict[str, Any]) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self.send({"error": f"fork failed: {exc}"})
            return
        if pid == 0:
            _child(request)
        self.children.add(pid)
        self.send({"pid": pid})

    def reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "status": _status(wait_status)})

    def read_requests(self) -> bool:
        """Handle every complete request line; False at end of input."""
        chunk = os.read(0, 65536)
        if not chunk:
            return False
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.spawn(json.loads(line))
        return True

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(0, selectors.EVENT_READ, "requests")
        self.selector.register(self.wake_read, selectors.EVENT_READ, "signal")
        self.send({"ready": os.getpid()})
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.data == "signal":
                        while True:
                            try:
                                if not os.read(self.wake_read, 512):
                                    break
                            except BlockingIOError:
                                break
                        self.reap()
                    elif not self.read_requests():
                        return
        finally:
            for pid in self.children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def serve() -> None:
    """Run the fork server on stdin/stdout until end of input."""
    _die_with_parent()
    _preload()
    _Server().run()


if __name__ == "__main__":
    serve()
