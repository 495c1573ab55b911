"""The runtime package imports no test framework, and the daemon no demo code.

Each check runs a fresh interpreter in which some modules cannot be imported
(a ``sys.meta_path`` finder refuses them), the way a machine without the test
or demo extra, or the container image without ``rollbackd.testing``, would:

- without pytest and its plugins, every module of ``rollbackd`` (kubesim, the
  Prometheus/Alertmanager harness, the pager sink, the process harness and
  the demo stack included) imports, and ``rollbackd demo --help`` answers;
- without the demo extra and ``rollbackd.testing`` (the image), every other
  module imports, ``rollbackd --help`` answers, and ``rollbackd demo`` says
  it needs the demo extra instead of failing on an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.unit.test_import_graph import module_files

PACKAGE = Path(__file__).resolve().parents[2] / "rollbackd"
TEST_FRAMEWORKS = ("pytest", "_pytest", "pytest_asyncio", "pytest_timeout", "hypothesis")
DEMO_ONLY = ("jsonpatch", "rollbackd.testing")

# Run in the child: refuse the blocked modules, then do what argv[2] says.
CHILD = """
import importlib, importlib.abc, json, sys

blocked = tuple(json.loads(sys.argv[1]))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
if sys.argv[2] == "import":
    failed = {}
    for module in json.loads(sys.argv[3]):
        try:
            importlib.import_module(module)
        except BaseException as exc:
            failed[module] = f"{type(exc).__name__}: {exc}"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {b.split(".")[0] for b in blocked}
                    and any(m == b or m.startswith(b + ".") for b in blocked))
    print(json.dumps({"failed": failed, "leaked": leaked}))
else:
    from rollbackd.cli import main
    sys.exit(main(json.loads(sys.argv[3])))
"""


def run_child(
    blocked: Sequence[str], mode: str, argument: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(list(blocked)), mode, json.dumps(list(argument))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def modules_under(package: Path, *, excluding: Sequence[str] = ()) -> list[str]:
    """Every importable module name below ``package``, from its files."""
    return [
        name
        for name in module_files(package)
        if not any(name == e or name.startswith(e + ".") for e in excluding)
    ]


def import_all(blocked: Sequence[str], modules: Sequence[str]) -> dict[str, object]:
    result = run_child(blocked, "import", modules)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_module_list_covers_the_test_support_code() -> None:
    """A guard on the walk itself: an empty list would pass every check below."""
    modules = modules_under(PACKAGE)
    for expected in (
        "rollbackd.cli",
        "rollbackd.demo",
        "rollbackd.testing.stack",
        "rollbackd.testing.promstack",
        "rollbackd.testing.sink",
        "rollbackd.testing.process",
        "rollbackd.testing.kubesim.server",
    ):
        assert expected in modules


def test_every_module_imports_without_a_test_framework() -> None:
    report = import_all(TEST_FRAMEWORKS, modules_under(PACKAGE))
    assert report == {"failed": {}, "leaked": []}


def test_demo_help_answers_without_a_test_framework() -> None:
    result = run_child(TEST_FRAMEWORKS, "cli", ["demo", "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: rollbackd demo")
    assert "--hold" in result.stdout


def test_the_daemon_imports_without_the_demo_extra_or_the_testing_package() -> None:
    runtime = modules_under(PACKAGE, excluding=DEMO_ONLY)
    assert "rollbackd.daemon" in runtime and "rollbackd.testing.stack" not in runtime
    report = import_all((*TEST_FRAMEWORKS, *DEMO_ONLY), runtime)
    assert report == {"failed": {}, "leaked": []}


def test_without_the_demo_extra_the_cli_runs_and_demo_names_the_extra() -> None:
    blocked = (*TEST_FRAMEWORKS, *DEMO_ONLY)
    help_result = run_child(blocked, "cli", ["--help"])
    assert help_result.returncode == 0, help_result.stderr
    assert "demo" in help_result.stdout

    demo = run_child(blocked, "cli", ["demo"])
    assert demo.returncode == 1
    assert "needs the demo extra" in demo.stderr
    assert "rollbackd[demo]" in demo.stderr
    assert "Traceback" not in demo.stderr


def test_without_jsonpatch_alone_demo_names_the_extra() -> None:
    """The testing package present but the extra not installed (a plain pip install)."""
    demo = run_child(("jsonpatch",), "cli", ["demo"])
    assert demo.returncode == 1
    assert "needs the demo extra" in demo.stderr


def test_loading_the_configuration_leaves_the_prometheus_client_unloaded() -> None:
    """Every CLI command loads the configuration first; only the daemon queries Prometheus.

    The signal specs are part of the configuration, and the PromQL adapter
    they once imported brought requests and prometheus-api-client with it:
    a fifth of each CLI call's start-up.
    """
    probe = (
        "import json, sys\n"
        "import rollbackd.config, rollbackd.signals\n"
        "print(json.dumps(sorted(m for m in ('requests', 'prometheus_api_client', "
        "'rollbackd.promql') if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
