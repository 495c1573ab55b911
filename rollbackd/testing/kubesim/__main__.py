"""``python -m rollbackd.testing.kubesim``: run kubesim until SIGINT or SIGTERM.

Prints the API URL and the workload metrics URL (one ``key=value`` per line,
easy for scripts to read), writes a kubeconfig, and shuts down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from . import KubeSim


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rollbackd.testing.kubesim", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="API port; 0 picks a free one")
    parser.add_argument("--metrics-port", type=int, default=0, help="workload /metrics port")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument(
        "--pod-ready-delay", type=float, default=0.5, help="seconds until a new pod is Ready"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sim = KubeSim(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        kubeconfig_path=args.kubeconfig,
        pod_ready_delay=args.pod_ready_delay,
    )
    async with sim:
        print(f"url={sim.url}", flush=True)
        print(f"metrics_url={sim.metrics_url}", flush=True)
        print(f"kubeconfig={sim.kubeconfig}", flush=True)
        await stop.wait()
    print("kubesim stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
