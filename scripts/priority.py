"""Set the CPU priority (nice value) of processes and everything they started.

    python3 scripts/priority.py NICE PID...

The test command starts the long parts of the suite at the lowest priority
while the heavy tests, which time answers against deadlines, have the
machine, then gives them back normal priority with this. A process started
before its parent was changed keeps the old value, so the walk goes parents
first and runs twice: the second pass finds what started during the first.
Every thread is set (Linux keeps the value per thread). Processes that end
meanwhile are skipped.
"""

from __future__ import annotations

import os
import sys


def stat_fields(path: str) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the command name (state first).

    The command name may hold spaces and parentheses: the fields follow the last ")".
    """
    with open(path) as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(stat_fields(f"/proc/{entry}/stat")[1])
        except OSError:
            continue
        found.setdefault(ppid, []).append(int(entry))
    return found


def set_tree(nice: int, roots: list[int]) -> int:
    """Set ``nice`` on ``roots`` and their descendants, parents first; how many were set."""
    children = _children()
    done = 0
    queue = list(roots)
    while queue:
        pid = queue.pop(0)
        try:
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue  # it ended
        # Linux keeps a nice value per thread: a process's other threads keep theirs.
        for tid in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:
                continue
        done += 1
        queue.extend(children.get(pid, []))
    return done


def main(argv: list[str]) -> int:
    nice, roots = int(argv[0]), [int(pid) for pid in argv[1:]]
    for _ in range(2):
        set_tree(nice, roots)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
