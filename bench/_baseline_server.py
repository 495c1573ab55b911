"""The baseline: a bare aiohttp server whose POST handler reads the body, parses it, answers 200.

It is what any Python webhook receiver costs on this machine, so the ratio
rollbackd/baseline says how much the intake itself adds. Run as its own
process (``python bench/_baseline_server.py``); it binds 127.0.0.1:0 and
prints ``url=http://127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    payload = json.loads(await request.read())
    return web.json_response({"status": "ok", "alerts": len(payload.get("alerts", []))})


async def serve() -> None:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/api/v1/alerts", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"url=http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
