"""Write the kubeconfig clients use to reach kubesim.

A plain-http server URL and a bearer token: kubectl and kubernetes-asyncio
then behave as against a real cluster, and kubesim accepts any token.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import yaml

CONTEXT = "kubesim"
TOKEN = "kubesim-token"


def kubeconfig_document(
    url: str, *, namespace: str = "default", token: str = TOKEN
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], url: str) -> pathlib.Path:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(yaml.safe_dump(kubeconfig_document(url), sort_keys=False))
    temporary.chmod(0o600)
    temporary.replace(target)
    return target
