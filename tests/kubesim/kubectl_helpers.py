"""Running the real kubectl v1.33 against a kubesim started by the test.

The fidelity tests must use the kubectl the project pins in ``.tools/bin``
(the system one on these machines is another version whose output and
rollback logic differ), so a missing or wrong binary fails loudly instead of
skipping or quietly testing against something else.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
EXPECTED_MINOR = "33"
FORBIDDEN = pathlib.Path("/usr/bin/kubectl")
SETUP_HINT = "run scripts/setup.sh to install kubectl v1.33 into .tools/bin"
# Each run lives for a moment: Go's collector would only cost CPU (a quarter
# of a run's, and the suite runs kubectl some 300 times). Nothing else changes.
GO_SHORT_LIVED = {"GOGC": "off"}

_checked_versions: set[pathlib.Path] = set()  # binaries already found to be v1.33


def kubectl_binary() -> pathlib.Path:
    """The pinned kubectl: PATH with ``.tools/bin`` first, else ``.tools/bin/kubectl``."""
    search = os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", "")])
    found = shutil.which("kubectl", path=search)
    candidate = pathlib.Path(found) if found else TOOLS_BIN / "kubectl"
    if candidate.resolve() == FORBIDDEN.resolve() or not os.access(candidate, os.X_OK):
        candidate = TOOLS_BIN / "kubectl"
    if not os.access(candidate, os.X_OK):
        pytest.fail(f"kubectl not found at {TOOLS_BIN / 'kubectl'}: {SETUP_HINT}", pytrace=False)
    return candidate


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Kubectl:
    """kubectl bound to one kubeconfig and a private discovery cache."""

    def __init__(
        self, binary: pathlib.Path, kubeconfig: pathlib.Path, cache_dir: pathlib.Path
    ) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    async def run(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> Result:
        """Run kubectl without blocking the event loop that serves kubesim."""
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            *args,
            env={**os.environ, **GO_SHORT_LIVED},
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"kubectl {' '.join(args)} did not finish within {timeout}s"
            ) from None
        result = Result(process.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    async def json(self, *args: str) -> Any:
        return json.loads((await self.run(*args, "-o", "json")).stdout)

    async def check_version(self) -> None:
        """Fail unless the binary is kubectl v1.33 (asked once per binary and process)."""
        if self.binary in _checked_versions:
            return
        version = json.loads((await self.run("version", "--client", "-o", "json")).stdout)
        minor = version["clientVersion"]["minor"]
        if minor != EXPECTED_MINOR:
            pytest.fail(
                f"{self.binary} is kubectl 1.{minor}, expected 1.{EXPECTED_MINOR}: {SETUP_HINT}"
            )
        _checked_versions.add(self.binary)


async def make_kubectl(kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> Kubectl:
    kubectl = Kubectl(kubectl_binary(), kubeconfig, cache_dir)
    await kubectl.check_version()
    return kubectl


def deployment_manifest(
    name: str = "web",
    *,
    image: str = "example/app:1.0",
    replicas: int = 3,
    template_annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment with one container named ``app`` (and knobs as template annotations)."""
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
                    ]
                },
            },
            **spec,
        },
    }


def revision(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")


def history_rows(output: str) -> list[tuple[str, str]]:
    """(REVISION, CHANGE-CAUSE) rows of ``kubectl rollout history``."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("REVISION"))
    rows = []
    for line in lines[header + 1 :]:
        number, _, cause = line.strip().partition(" ")
        rows.append((number, cause.strip()))
    return rows
