"""Helpers shared by benchmarks that run servers as subprocesses.

``Children`` starts processes whose output goes to log files and stops every
one of them when the bench ends, however it ends: normal exit, exception,
Ctrl-C, SIGTERM, or (through PR_SET_PDEATHSIG) the bench being killed.
Servers bind port 0 on 127.0.0.1 and the bench reads the bound address from
their output, so there is no window in which a "free" port gets taken.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 5.0


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the bench process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ChildExited(RuntimeError):
    """A child process ended while the bench was waiting on it."""


class Child:
    """One started subprocess, its output in ``log``."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    def tail(self, lines: int = 30) -> str:
        """The last lines of the child's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_line(self, match: Callable[[str], T | None], *, timeout: float) -> T:
        """Scan the output until ``match(line)`` returns something; raise if the child dies."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with contextlib.suppress(OSError):
                # Only complete lines: the text after the last newline may still be written.
                lines = self.log.read_text(errors="replace").split("\n")[:-1]
                for line in lines[seen:]:
                    found = match(line)
                    if found is not None:
                        return found
                seen = len(lines)
            if self.process.poll() is not None:
                raise ChildExited(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no expected output in {timeout:.0f}s:\n{self.tail()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Children:
    """Every subprocess a bench started; ``with Children(dir) as c`` stops them all on exit."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._children: list[Child] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Child:
        log = self._logdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                # Own process group: a Ctrl-C in the terminal reaches only the
                # bench, which then stops the children in order.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = Child(name, process, log)
        self._children.append(child)
        return child

    def stop_all(self) -> None:
        """Stop children, newest first (dependants before what they depend on)."""
        while self._children:
            self._children.pop().stop()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``with``/``finally`` blocks stop the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_until(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; fields after it are fixed.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(
    pid: int, *, busy_below: float = 0.05, window: float = 0.5, timeout: float = 120
) -> float:
    """Wait until ``pid`` uses less than ``busy_below`` of a core over ``window`` seconds.

    A server still working off the previous run (a dispatcher backlog, say)
    would otherwise take CPU from the next measurement, whichever server it
    measures. Returns the seconds waited; gives up quietly after ``timeout``.
    """
    started = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        after = cpu_seconds(pid)
        if (after - before) / window < busy_below:
            break
        before = after
    return time.monotonic() - started


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (no interpolation hides the tail)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ensure_debian_tool(command: str, package: str, *, install: bool) -> str | None:
    """The path of ``command``; installs Debian's ``package`` when allowed and root.

    Returns None when the tool is missing and cannot be installed here, after
    telling the user the command that would install it.
    """
    found = shutil.which(command)
    if found or not install:
        return found
    hint = f"apt-get update && apt-get install -y {package}"
    if os.geteuid() != 0:
        print(f"{command} not found; install it with: sudo {hint}", file=sys.stderr)
        return None
    print(f"{command} not found; installing Debian package {package}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        result = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"{' '.join(step)} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            print(f"install it with: {hint}", file=sys.stderr)
            return None
    return shutil.which(command)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def base_environment() -> dict[str, Any]:
    """What every bench's figures were measured on: the commit, the machine, its load."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "--short", "HEAD") or None,
        # Uncommitted changes in the work tree were measured too.
        "dirty": bool(status) if status is not None else None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def progress_printer(name: str) -> Callable[[str], None]:
    """A bench's progress lines: on stderr, so stdout keeps only the report."""

    def progress(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return progress


@contextlib.contextmanager
def work_directory(name: str, *, keep: bool) -> Iterator[Path]:
    """A fresh directory for logs and journals, removed at the end unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"rollbackd-bench-{name}-"))
    try:
        yield workdir
    finally:
        if keep:
            print(f"[{name}] work directory kept: {workdir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def publish(report: str, results: Mapping[str, Any], json_path: Path | None) -> None:
    """The report on stdout, and the figures as JSON when asked."""
    print(report)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
