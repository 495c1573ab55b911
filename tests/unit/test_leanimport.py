"""The lean import of kubernetes-asyncio: the runtime without the generated models, or the normal import.

Each case runs a fresh interpreter (what is imported is process-wide):

- the installed package loads lean: no model and no generated API module,
  and everything rollbackd uses is there; code that then asks for the
  generated classes gets them (the package's real ``__init__`` runs late);
- a package laid out differently (a stand-in for another version) makes
  ``install`` undo its work and import it the normal way, saying why;
- a package imported before the entry point ran is left as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def run_child(code: str, *, path: Path | None = None) -> dict[str, Any]:
    prelude = f"import sys; sys.path.insert(0, {str(path)!r})\n" if path else ""
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return found


def test_the_runtime_loads_without_models_and_the_full_client_still_loads_later() -> None:
    found = run_child(
        """
        import json, sys
        from rollbackd import leanimport

        outcome = leanimport.install()
        loaded = sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))
        from kubernetes_asyncio import config, watch
        from kubernetes_asyncio.client import ApiClient, Configuration
        from kubernetes_asyncio.client.exceptions import ApiException
        import rollbackd.kube, rollbackd.daemon  # the daemon's own imports stay lean
        lean_after_daemon = "kubernetes_asyncio.client.models.v1_pod" not in sys.modules
        usable = [callable(config.new_client_from_config), callable(config.load_incluster_config),
                  hasattr(watch.Watch, "stream"), hasattr(ApiClient, "call_api"),
                  isinstance(Configuration().api_key, dict), issubclass(ApiException, Exception)]

        # Later code that uses the generated client gets it.
        from kubernetes_asyncio import client
        api = client.CoreV1Api
        from kubernetes_asyncio.client.models import V1Pod
        import kubernetes_asyncio
        from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="x"))
        print(json.dumps({
            "mode": outcome.mode, "again": leanimport.install().mode, "loaded": loaded,
            "lean_after_daemon": lean_after_daemon, "usable": usable,
            "full": [api.__name__, V1Pod.__name__, pod.metadata.name,
                     kubernetes_asyncio.__version__ != "", LeaseLock.__name__],
            "same_client": client.ApiClient is ApiClient,
        }))
        """
    )
    assert found["mode"] == "lean" and found["again"] == "lean"
    assert not any(".models." in name or ".api." in name for name in found["loaded"])
    assert len(found["loaded"]) < 40, found["loaded"]
    assert found["lean_after_daemon"] is True
    assert found["usable"] == [True] * 6
    assert found["full"] == ["CoreV1Api", "V1Pod", "x", True, "LeaseLock"]
    assert found["same_client"] is True


def test_a_probe_for_a_private_name_does_not_load_the_generated_client() -> None:
    found = run_child(
        """
        import inspect, json, sys
        from rollbackd import leanimport

        leanimport.install()
        from kubernetes_asyncio import client
        # What pytest's collection, inspect and mock ask of every module object.
        probes = [hasattr(client, "_pytestfixturefunction"), hasattr(client, "__wrapped__"),
                  hasattr(client, "_mock_name"), inspect.unwrap(client) is client]
        lean = "kubernetes_asyncio.client.models.v1_pod" not in sys.modules
        import kubernetes_asyncio
        version = kubernetes_asyncio.__version__  # a public dunder loads the real __init__
        api = client.CoreV1Api.__name__  # and a generated class still loads when asked for
        print(json.dumps({"probes": probes, "lean": lean, "version": bool(version), "api": api}))
        """
    )
    assert found["probes"] == [False, False, False, True]
    assert found["lean"] is True
    assert found["version"] is True and found["api"] == "CoreV1Api"


def _other_layout(root: Path) -> None:
    """A package named ``otherkube`` whose client keeps everything in its ``__init__``."""
    client = root / "otherkube" / "client"
    client.mkdir(parents=True)
    (root / "otherkube" / "__init__.py").write_text(
        "from otherkube import client\nINIT_RAN = True\n"
    )
    (client / "__init__.py").write_text(
        "class ApiClient:\n    async def call_api(self): ...\n"
        "class Configuration: ...\nclass ApiException(Exception): ...\n"
    )


def test_a_package_laid_out_differently_is_imported_the_normal_way(tmp_path: Path) -> None:
    _other_layout(tmp_path)
    found = run_child(
        """
        import json, sys
        from rollbackd import leanimport

        outcome = leanimport.install("otherkube")
        import otherkube
        from otherkube.client import ApiClient
        print(json.dumps({"mode": outcome.mode, "reason": outcome.reason,
                          "init_ran": otherkube.INIT_RAN, "client": ApiClient.__name__,
                          "recorded": leanimport.outcome() == outcome}))
        """,
        path=tmp_path,
    )
    assert found["mode"] == "full"
    assert "lean import failed" in found["reason"] and "otherkube.client" in found["reason"]
    assert found["init_ran"] is True and found["client"] == "ApiClient"
    assert found["recorded"] is True


def test_a_package_already_imported_is_left_alone() -> None:
    found = run_child(
        """
        import json, sys
        import kubernetes_asyncio.client
        from rollbackd import leanimport

        outcome = leanimport.install()
        print(json.dumps({"mode": outcome.mode,
                          "models": "kubernetes_asyncio.client.models.v1_pod" in sys.modules}))
        """
    )
    assert found == {"mode": "already", "models": True}


def test_without_the_entry_point_nothing_is_recorded() -> None:
    found = run_child(
        """
        import json
        from rollbackd import leanimport
        print(json.dumps({"outcome": leanimport.outcome() is None}))
        """
    )
    assert found == {"outcome": True}
