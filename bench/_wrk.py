"""Closed-loop throughput with wrk, driven by a generated Lua script.

The script either sends one fixed body (the repeated case) or renders a
``BodyTemplate`` per request with fingerprints from a per-thread counter (the
unique case), and counts 2xx and other answers in wrk's ``response``
callback; ``done`` prints the totals as one JSON line that ``run_wrk`` parses.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from _alertmanager import BodyTemplate
from _common import die_with_parent
from _httpload import ClosedLoopResult

RESULT_MARK = "WRK_RESULT "

_COMMON = r"""
local threads = {}

function setup(thread)
  thread:set("stream", #threads)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "%s{\"ok\": %d, \"non_2xx\": %d, \"duration_us\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d}\n",
    RESULT_MARK, total_ok, total_bad, summary.duration, e.connect, e.read, e.write, e.timeout))
end
"""

_INIT = r"""
function init(args)
  ok, bad, n = 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = AUTHORIZATION
  {body_line}
end
"""

_UNIQUE_REQUEST = r"""
function request()
  local base = n * ALERTS
  n = n + 1
  local parts = { PIECES[1] }
  for i = 1, ALERTS do
    parts[#parts + 1] = string.format("%s%02x%08x", PREFIX, stream, base + i - 1)
    parts[#parts + 1] = PIECES[i + 1]
  end
  return wrk.format(nil, nil, nil, table.concat(parts))
end
"""


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal that cannot be closed early by ``text``."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    # A newline right after the opening bracket is dropped by Lua; keep the text exact.
    return f"[{eq}[\n{text}]{eq}]"


def lua_script(
    authorization: str,
    *,
    body: bytes | None = None,
    template: BodyTemplate | None = None,
    prefix: str = "",
) -> str:
    """A wrk script sending ``body`` every time, or ``template`` with unique fingerprints."""
    head = [
        f"RESULT_MARK = {json.dumps(RESULT_MARK)}",
        f"AUTHORIZATION = {_lua_string(authorization)}",
    ]
    if template is not None:
        if len(prefix) != 6:
            raise ValueError("prefix must be 6 hex digits")
        head.append(f"PREFIX = {json.dumps(prefix)}")
        head.append(f"ALERTS = {template.alerts}")
        head.append("PIECES = {" + ",\n".join(_lua_string(p) for p in template.pieces) + "}")
        return "\n".join(head) + _COMMON + _INIT.format(body_line="") + _UNIQUE_REQUEST
    if body is None:
        raise ValueError("need a body or a template")
    head.append(f"BODY = {_lua_string(body.decode())}")
    return "\n".join(head) + _COMMON + _INIT.format(body_line="wrk.body = BODY")


def run_wrk(
    wrk: str,
    url: str,
    script: str,
    workdir: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
) -> ClosedLoopResult:
    """Run wrk once; every 2xx answer counts in ``ok``, socket errors in ``errors``."""
    path = workdir / "wrk.lua"
    path.write_text(script)
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(path),
        url,
    ]
    # run() kills wrk if the bench is interrupted; PDEATHSIG if the bench is killed.
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=duration + 60,
        preexec_fn=die_with_parent,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            found = json.loads(line.removeprefix(RESULT_MARK))
            break
    else:
        raise RuntimeError(
            f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return ClosedLoopResult(
        client="wrk",
        seconds=found["duration_us"] / 1e6,
        ok=found["ok"],
        non_2xx=found["non_2xx"],
        errors=found["connect"] + found["read"] + found["write"] + found["timeout"],
        ok_fingerprints=None,
    )
