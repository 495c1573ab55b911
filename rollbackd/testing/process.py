"""``rollbackd run`` as a real subprocess, for tests that kill it or starve it.

An in-process ``Daemon`` shares the test's event loop, file descriptors and
signal handlers, so it cannot be SIGKILLed, cannot run under its own
``RLIMIT_NOFILE`` and cannot show what an operator's process would log.
``DaemonProcess`` runs ``python -m rollbackd run --config FILE`` instead:
the config is written into a working directory, stdout and stderr go to files
there, and the process is started only once ``GET /healthz`` answers.

No process is ever left behind: ``stop`` (and the async context manager) end
it, every live child is SIGKILLed at interpreter exit, and on Linux the child
is also SIGKILLed by the kernel if the thread that started it dies
(``PR_SET_PDEATHSIG``), which covers a test runner that is killed itself.

This module is runtime code (the demo and benchmarks may use it): it must not
import pytest.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from pydantic import SecretStr

from rollbackd.config import Settings, format_duration
from rollbackd.testing.promstack import free_port

from . import forkclient
from .lifecycle import StartStop

__all__ = [
    "DaemonProcess",
    "DaemonStartError",
    "nofile_limit",
    "settings_to_config",
]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40
CONFIG_NAME = "rollbackd.yaml"

# What DaemonProcess uses of a child: an exec'd one or a forked one.
_Child = asyncio.subprocess.Process | forkclient.ForkedProcess

# pid -> process, for the exit hook; entries leave when the process is reaped.
_LIVE: dict[int, _Child] = {}


@atexit.register
def _kill_leftovers() -> None:
    """Last line of defence: a test that forgot ``stop`` must not leak a daemon."""
    for pid, proc in list(_LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
    _LIVE.clear()


class DaemonStartError(RuntimeError):
    """The daemon exited or never answered /healthz; the message carries its stderr tail."""


def nofile_limit(soft: int, hard: int | None = None) -> dict[int, tuple[int, int]]:
    """``rlimits`` for ``DaemonProcess``: RLIMIT_NOFILE as ``ulimit -n`` would set it.

    ``hard`` defaults to ``soft``, like ``ulimit -n N`` in a shell, so the
    daemon cannot raise it back.
    """
    return {resource.RLIMIT_NOFILE: (soft, soft if hard is None else hard)}


# --- config ----------------------------------------------------------------------


def settings_to_config(
    settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """``settings`` as the YAML-ready dict ``load_settings`` reads back to the same values.

    Durations become "1s"/"500ms" strings, secrets read from files become
    their paths again. A secret set inline (env-only in a config file) cannot
    be written: pass it to the subprocess through ``DaemonProcess(env=...)``.
    ``overrides`` update whole sections shallowly, as ``stack_settings`` does.
    """
    raw = _plain(settings.model_dump(mode="python", exclude_none=True), ())
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(_plain(dict(values), (section,)))
    return raw


def _plain(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, SecretStr):
        raise ValueError(
            f"{'.'.join(path)}: an inline secret cannot go into a config file; "
            "pass it through env ROLLBACKD__SECTION__KEY instead"
        )
    if isinstance(value, Mapping):
        return {str(k): _plain(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, path) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


# --- the child's set-up, run between fork and exec --------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: have the kernel SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return arm


_ARM_DEATH_SIGNAL = _parent_death_signal()


def _child_setup(
    rlimits: Mapping[int, tuple[int, int]], preexec: Callable[[], None] | None
) -> Callable[[], None]:
    # Resolved in the parent: only plain calls run in the forked child.
    limits = list(rlimits.items())

    def setup() -> None:
        if _ARM_DEATH_SIGNAL is not None:
            _ARM_DEATH_SIGNAL()
        for which, limit in limits:
            resource.setrlimit(which, limit)
        if preexec is not None:
            preexec()

    return setup


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    # The test runner's own overrides must not leak into the daemon's config.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ROLLBACKD__") and k != "ROLLBACKD_CONFIG"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# --- the process -------------------------------------------------------------------


class DaemonProcess(StartStop):
    """One ``rollbackd run --config FILE`` child process on a fixed loopback port.

    ``config`` is a Settings-shaped dict (see ``settings_to_config`` and
    ``Stack.daemon_config``) or YAML text. A ``webhook.listen`` port of 0 is
    replaced by a free port before the first start, so the URL stays the same
    across restarts (Alertmanager and crash tests rely on that). Relative paths
    in the config are relative to ``workdir``, the child's working directory.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | str,
        workdir: Path | str,
        *,
        rlimits: Mapping[int, tuple[int, int]] | None = None,
        preexec: Callable[[], None] | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.workdir = Path(workdir)
        self.config = _as_dict(config)
        self.config_path = self.workdir / CONFIG_NAME
        self.stdout_path = self.workdir / "rollbackd.stdout.log"
        self.stderr_path = self.workdir / "rollbackd.stderr.log"
        self.rlimits = dict(rlimits or {})
        self._preexec = preexec
        self._env = dict(env or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: _Child | None = None
        self.host, self.port = self._fix_listen()

    def _fix_listen(self) -> tuple[str, int]:
        webhook = self.config.setdefault("webhook", {})
        listen = str(webhook.get("listen", "127.0.0.1:0"))
        host, _, port_text = listen.rpartition(":")
        host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        port = int(port_text) if port_text.isdigit() else 0
        if port == 0:
            port = free_port()
        webhook["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return host, port

    # -- what tests look at --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The daemon's base URL, e.g. ``http://127.0.0.1:PORT``."""
        host = _client_host(self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the daemon has not been started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); the exit status once reaped."""
        return None if self._proc is None else self._proc.returncode

    @property
    def forked(self) -> bool:
        """Started by the fork server (``forkclient``), not by an exec of the interpreter."""
        return isinstance(self._proc, forkclient.ForkedProcess)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def stderr_size(self) -> int:
        """Bytes the daemon wrote to stderr (its log) over all its runs."""
        try:
            return self.stderr_path.stat().st_size
        except FileNotFoundError:
            return 0

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.stderr_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(nothing on stderr)"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> DaemonProcess:
        """Write the config, start the child, return once /healthz answers 200.

        May be called again after the child exited or was killed: a restart
        with the same config, port and journal; logs are appended.
        """
        if self.running:
            return self
        self._write_config()
        proc = await self._forked() or await self._executed()
        self._proc = proc
        _LIVE[proc.pid] = proc
        try:
            await self.wait_healthy(self.start_timeout)
        except BaseException:
            await self.kill()
            raise
        return self

    async def _forked(self) -> forkclient.ForkedProcess | None:
        """The child forked from the test run's fork server, when that is on and can do it.

        A ``preexec`` callable cannot cross to the server; it needs an exec.
        """
        if not forkclient.enabled() or self._preexec is not None:
            return None
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            return await forkclient.spawn(
                ["run", "--config", str(self.config_path)],
                cwd=self.workdir,
                env=_child_env(self._env),
                stdout=self.stdout_path,
                stderr=self.stderr_path,
                rlimits=self.rlimits,
            )
        except forkclient.ForkServerError:
            return None

    async def _executed(self) -> asyncio.subprocess.Process:
        """``python -m rollbackd run --config FILE``, a fresh interpreter."""
        stdout, stderr = self._open_logs()
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rollbackd",
                "run",
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.workdir,
                env=_child_env(self._env),
                # Its own session: a Ctrl-C meant for the test runner is not its SIGINT.
                start_new_session=True,
                preexec_fn=_child_setup(self.rlimits, self._preexec),
            )
        finally:
            stdout.close()
            stderr.close()

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _open_logs(self) -> tuple[Any, Any]:
        return self.stdout_path.open("ab"), self.stderr_path.open("ab")

    async def wait_healthy(self, timeout: float) -> None:
        """Poll GET /healthz until 200; fail early, with the log, if the child exits."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        client_timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                proc = self._proc
                if proc is None or proc.returncode is not None:
                    code = None if proc is None else proc.returncode
                    raise DaemonStartError(
                        f"rollbackd exited with code {code} before /healthz answered; "
                        f"stderr tail:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                        last_error = f"status {resp.status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    last_error = repr(exc)
                if time.monotonic() > deadline:
                    raise DaemonStartError(
                        f"rollbackd did not answer /healthz within {timeout:.0f}s "
                        f"(last: {last_error}); stderr tail:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit by itself; its exit status."""
        proc = self._require()
        code = await asyncio.wait_for(proc.wait(), timeout)
        _LIVE.pop(proc.pid, None)
        return code

    async def kill(self) -> int | None:
        """SIGKILL, as the OOM killer or a node failure would; the exit status (-9)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = await proc.wait()
        _LIVE.pop(proc.pid, None)
        return code

    async def terminate(self, timeout: float | None = None) -> int:
        """SIGTERM and wait for a graceful exit; its exit status.

        A child still running after ``timeout`` is SIGKILLed and TimeoutError
        raised: a hung shutdown is a failure the caller should see.
        """
        proc = self._require()
        limit = self.stop_timeout if timeout is None else timeout
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait(limit)
        except TimeoutError:
            await self.kill()
            raise TimeoutError(
                f"rollbackd did not exit within {limit:.0f}s of SIGTERM (killed); "
                f"stderr tail:\n{self.log_tail()}"
            ) from None

    async def stop(self) -> None:
        """End the child whatever its state: SIGTERM, then SIGKILL. Never raises on timeout."""
        if not self.running:
            if self._proc is not None:
                await self.kill()  # reap
            return
        with contextlib.suppress(TimeoutError):
            await self.terminate()

    def _require(self) -> _Child:
        if self._proc is None:
            raise RuntimeError("the daemon has not been started")
        return self._proc


def _as_dict(config: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(config, str):
        loaded = yaml.safe_load(config) or {}
        if not isinstance(loaded, dict):
            raise ValueError("config YAML must be a mapping of sections")
        return loaded
    # A deep copy through plain values: the caller's dict is never modified.
    plain: dict[str, Any] = _plain(config, ())
    return plain
