"""``scripts/setup.sh``: where uv cannot install, pip does, and a second run only checks.

The script runs for real in a throwaway copy of the project layout: the
Debian servers are already installed (the test command needs them anyway),
kubectl and helm are stand-ins in the tools folder, the package is a tiny
one with no dependencies, and uv is a stand-in that always fails. What is
checked is the fallback CI would take if uv broke: the log says so, the
venv imports the package, the install stamp is written, and a second run
installs nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinypkg"
version = "0.0.1"

[project.optional-dependencies]
dev = []

[tool.setuptools]
packages = ["tinypkg"]
"""


def _executable(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _project(root: Path) -> Path:
    """The layout setup.sh expects, with stand-ins for what this test is not about."""
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "pyproject.toml").write_text(TINY_PYPROJECT)
    (root / "tinypkg").mkdir()
    (root / "tinypkg" / "__init__.py").write_text("ANSWER = 42\n")
    for tool in ("kubectl", "helm"):
        _executable(root / ".tools" / "bin" / tool, "exit 0")
    # A uv that is there but fails, as a broken download or an unreachable index would.
    _executable(root / ".tools" / "uv" / "bin" / "uv", 'echo "uv: simulated failure" >&2; exit 1')
    return root


def _run_setup(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup.sh")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_failing_uv_falls_back_to_pip_and_a_second_run_installs_nothing(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None:
        pytest.fail("setup.sh would install the Debian servers first: run scripts/setup.sh")
    root = _project(tmp_path / "project")

    first = _run_setup(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "setup: uv could not install; using pip" in first.stderr
    venv_python = root / ".venv" / "bin" / "python"
    imported = subprocess.run(
        [str(venv_python), "-c", "import tinypkg; print(tinypkg.ANSWER)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.stdout.strip() == "42", imported.stderr
    assert list((root / ".venv").glob(".installed-*")), "the install stamp was not written"

    second = _run_setup(root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "installing" not in second.stderr, second.stderr
