"""``python -m rollbackd.testing.kubesim`` as a process: prints its URLs, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

import aiohttp
import yaml

DEADLINE = 20.0


async def read_settings(process: asyncio.subprocess.Process) -> dict[str, str]:
    settings: dict[str, str] = {}
    assert process.stdout is not None
    while len(settings) < 3:
        line = (await process.stdout.readline()).decode()
        assert line, "kubesim exited before printing its URLs"
        key, _, value = line.strip().partition("=")
        settings[key] = value
    return settings


async def test_module_serves_until_sigterm_and_exits_cleanly(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rollbackd.testing.kubesim",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        settings = await asyncio.wait_for(read_settings(process), DEADLINE)
        assert settings["url"].startswith("http://127.0.0.1:")
        assert settings["kubeconfig"] == str(kubeconfig)
        document = yaml.safe_load(kubeconfig.read_text())
        assert document["current-context"] == "kubesim"
        assert document["clusters"][0]["cluster"]["server"] == settings["url"]
        assert document["users"][0]["user"]["token"]
        async with aiohttp.ClientSession() as session:
            async with session.get(settings["url"] + "/api/v1/namespaces/default") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
