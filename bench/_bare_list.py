"""The RSS baseline: a bare script that lists every Deployment, ReplicaSet and Pod and keeps them.

Standard library only (urllib + json), full objects as the API server sends
them, nothing else: what holding the fleet in memory costs before any
program logic. Prints ``seconds=`` (start to lists held), ``objects=`` and
``rss_kib=`` and exits.

    python bench/_bare_list.py KUBESIM_URL TOKEN
"""

from __future__ import annotations

import gc
import json
import sys
import time
import urllib.request

STARTED = time.monotonic()
PATHS = ("/apis/apps/v1/deployments", "/apis/apps/v1/replicasets", "/api/v1/pods")


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found")


def main(url: str, token: str) -> None:
    held = []
    for path in PATHS:
        request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=300) as response:
            held.append(json.load(response))
    gc.collect()
    objects = sum(len(listing.get("items") or []) for listing in held)
    print(f"seconds={time.monotonic() - STARTED:.3f}", flush=True)
    print(f"objects={objects}", flush=True)
    print(f"rss_kib={rss_kib()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
