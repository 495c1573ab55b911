"""Running a benchmark's ``--quick`` mode once per module, and reading its figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_quick(
    bench: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``bench/<bench>.py --quick``: it must exit 0 and write its figures as JSON."""
    out = tmp_path_factory.mktemp("bench") / f"{bench}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    results: dict[str, Any] = json.loads(out.read_text())
    return done, results


def positive(value: object) -> bool:
    """A real measurement: a finite number above zero (not a bool, not NaN)."""
    return (
        isinstance(value, float | int)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
