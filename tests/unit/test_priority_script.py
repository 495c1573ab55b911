"""scripts/priority.py: the test command's priority change reaches every thread
of every process under the given ones, and none outside them."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "priority.py"

# A process with a second thread and a child of its own; prints the child's pid.
PARENT = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def priority() -> ModuleType:
    spec = importlib.util.spec_from_file_location("priority_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tree() -> Iterator[tuple[int, int, int]]:
    """(parent, its child, a bystander): three processes at this process's priority."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        yield parent.pid, child, bystander.pid
    finally:
        for process in (parent, bystander):
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def nice_values(priority: ModuleType, pid: int) -> set[int]:
    """The nice value of every thread of ``pid``."""
    return {
        int(priority.stat_fields(f"/proc/{pid}/task/{tid}/stat")[16])
        for tid in os.listdir(f"/proc/{pid}/task")
    }


def test_every_thread_of_the_tree_gets_the_value_and_nothing_else_does(
    priority: ModuleType, tree: tuple[int, int, int]
) -> None:
    parent, child, bystander = tree
    before = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(before + 5, 19)  # lowering a priority needs no privilege
    assert len(os.listdir(f"/proc/{parent}/task")) >= 2, "the parent runs a second thread"
    assert priority.main([str(target), str(parent)]) == 0
    assert nice_values(priority, parent) == {target}
    assert nice_values(priority, child) == {target}
    assert nice_values(priority, bystander) == {before}
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_a_process_that_ended_is_skipped(priority: ModuleType) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert priority.set_tree(19, [done.pid]) == 0
