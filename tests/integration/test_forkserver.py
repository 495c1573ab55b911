"""A daemon forked from the test run's fork server behaves as an exec'd ``rollbackd run``.

The suite starts its ``rollbackd run`` children from a server that imported
the package once (``rollbackd.testing.forkclient``). These specs hold the two
ways of starting to the same outcomes (health, exit codes on SIGTERM and
SIGKILL, a refused config), and hold the forked child to what an exec gives:
nothing of the server's left open, its own working directory and
environment, and death when the server dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from rollbackd.testing import forkclient
from rollbackd.testing.process import DaemonProcess, DaemonStartError
from rollbackd.testing.stack import Stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(tmp_path / "stack", with_daemon=False) as started:
        yield started


@pytest.fixture(params=["fork", "exec"])
def launcher(request: pytest.FixtureRequest) -> Iterator[str]:
    was = forkclient.enabled()
    forkclient.enable(request.param == "fork")
    try:
        yield request.param
    finally:
        forkclient.enable(was)


@pytest.fixture
def forking() -> Iterator[None]:
    """The fork server on for one test, whatever ROLLBACKD_TEST_FORK says for the others."""
    was = forkclient.enabled()
    forkclient.enable()
    try:
        yield
    finally:
        forkclient.enable(was)


async def healthy(daemon: DaemonProcess) -> bool:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{daemon.url}/healthz") as resp,
    ):
        return resp.status == 200


async def test_forked_and_execd_daemons_exit_alike(
    stack: Stack, tmp_path: Path, launcher: str
) -> None:
    daemon = DaemonProcess(stack.daemon_config(), tmp_path / "daemon")
    await daemon.start()
    try:
        assert daemon.forked is (launcher == "fork")
        assert await healthy(daemon)
        assert await daemon.terminate(timeout=10) == 0, daemon.log_tail()
        assert '"shutting_down"' in daemon.stderr_text()

        await daemon.start()  # a restart, as crash tests do
        assert daemon.forked is (launcher == "fork")
        assert await daemon.kill() == -signal.SIGKILL
    finally:
        await daemon.stop()


async def test_a_refused_config_exits_2_either_way(
    stack: Stack, tmp_path: Path, launcher: str
) -> None:
    config = stack.daemon_config(journal={"no_such_key": True})
    daemon = DaemonProcess(config, tmp_path / "daemon")
    with pytest.raises(DaemonStartError, match="exited with code 2"):
        await daemon.start()
    assert "no_such_key" in daemon.stderr_text()


def _fd_targets(pid: int) -> dict[int, str]:
    fds = Path(f"/proc/{pid}/fd")
    targets = {}
    for entry in fds.iterdir():
        try:
            targets[int(entry.name)] = os.readlink(entry)
        except FileNotFoundError:  # closed while listed
            continue
    return targets


@pytest.mark.usefixtures("forking")
async def test_a_forked_daemon_holds_nothing_of_the_server(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test runner's own config overrides never reach the daemon (as with an exec).
    monkeypatch.setenv("ROLLBACKD__LOGGING__LEVEL", "error")
    # What the caller passes does.
    daemon = DaemonProcess(
        stack.daemon_config(), tmp_path / "daemon", env={"ROLLBACKD__LOGGING__FORMAT": "console"}
    )
    async with daemon:
        assert daemon.forked
        server = forkclient.server_pid()
        assert server is not None
        server_pipes = {
            target for target in _fd_targets(server).values() if target.startswith("pipe:")
        }
        mine = _fd_targets(daemon.pid)
        assert server_pipes and not server_pipes & set(mine.values())
        assert mine[0] == os.devnull
        assert Path(mine[1]) == daemon.stdout_path.resolve()
        assert Path(mine[2]) == daemon.stderr_path.resolve()
        assert Path(os.readlink(f"/proc/{daemon.pid}/cwd")) == daemon.workdir.resolve()
        # Its own session, as start_new_session gives an exec'd child.
        assert os.getsid(daemon.pid) == daemon.pid
    log = daemon.stderr_text()
    # Info lines were logged (the runner's "error" level did not leak in), as console text.
    assert "shutting_down" in log
    assert not any(line.startswith("{") for line in log.splitlines())


@pytest.mark.usefixtures("forking")
async def test_the_servers_death_kills_its_children_and_the_next_start_forks_again(
    stack: Stack, tmp_path: Path
) -> None:
    first = DaemonProcess(stack.daemon_config(), tmp_path / "first")
    await first.start()
    try:
        server = forkclient.server_pid()
        assert first.forked and server is not None
        os.kill(server, signal.SIGKILL)
        # The kernel ends the child with its parent; the client reports it as killed.
        assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL

        async def server_gone() -> bool:
            return forkclient.server_pid() != server

        await wait_for(server_gone, 10, "the client to notice the server's death")
        second = DaemonProcess(stack.daemon_config(), tmp_path / "second")
        async with second:
            assert second.forked and forkclient.server_pid() not in (None, server)
            assert await healthy(second)
    finally:
        await first.stop()


@pytest.mark.usefixtures("forking")
async def test_a_server_that_does_not_answer_is_ended_and_the_daemon_execd(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = DaemonProcess(stack.daemon_config(), tmp_path / "first")
    async with first:  # a server is running and has answered
        assert first.forked
    server = forkclient.server_pid()
    assert server is not None
    os.kill(server, signal.SIGSTOP)  # hung: it reads nothing and answers nothing
    try:
        second = DaemonProcess(stack.daemon_config(), tmp_path / "second")
        with monkeypatch.context() as patch:
            patch.setattr(forkclient, "ANSWER_TIMEOUT", 1.0)
            await second.start()
        async with second:
            assert not second.forked and await healthy(second)

            async def server_reaped() -> bool:
                try:
                    os.kill(server, 0)
                except ProcessLookupError:
                    return True
                return False

            # Ended, so it can never fork the request it was sent once it wakes.
            await wait_for(server_reaped, 10, "the hung server to be killed and reaped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGCONT)
    # The usual timeout again: a new server's first answer waits for its imports.
    third = DaemonProcess(stack.daemon_config(), tmp_path / "third")
    async with third:
        assert third.forked and forkclient.server_pid() not in (None, server)
