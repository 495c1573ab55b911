#!/usr/bin/env bash
# The test command: set-up, lint, then the whole suite with the type check beside it.
#
# Most tests wait on real time (1 s scrapes, for-counts, leases), not on the
# CPU, so the integration and kubesim tests run on more workers than there
# are cores (pytest-xdist, ROLLBACKD_TEST_WORKERS, default 16), handed out
# one test at a time (tests/conftest.py puts the modules that start servers
# first). Every worker imports and collects what its pytest was given, so
# without arguments the unit tests, which compute more than they wait, run in
# a pytest of their own, and each part collects only its own files. Another
# pytest runs the benchmark smoke runs (marker `bench`), one file per worker
# so that each benchmark runs once.
#
# Tests marked `heavy` (the 1 100-connection attack, which times /healthz
# against a deadline, and a stop on a machine loaded on purpose) need the
# machine: beside a dozen busy workers /healthz missed its deadline. They run
# first, beside the lint and a collection pass. The integration workers start
# meanwhile at the lowest CPU priority, so their collection only takes what
# the heavy tests leave idle; when those end, they get normal priority back
# (scripts/priority.py) and the unit tests, the benchmarks (priority 10) and
# the type check (19) start. Only root may raise a priority: elsewhere the
# unit tests run beside the heavy tests and the rest waits for them.
# The outputs of the parts that run beside another are printed when they end.
# Arguments go to every part (and keep the rest of the suite in one pytest,
# after the heavy tests).
#
# Bytecode is written even where the environment says not to: without it
# every worker re-runs pytest's assertion rewriting of every test module and
# every daemon process compiles the package again (11 s of CPU per worker).
# The collection pass beside the lint writes it once, before the workers
# start at the same moment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
unset PYTHONDONTWRITEBYTECODE
pytest=(.venv/bin/pytest -p no:cacheprovider -rs)
workers="${ROLLBACKD_TEST_WORKERS:-16}"
# This run's logs, and each pytest's own temporary directory (--basetemp):
# with pytest's default, every session ends by deleting the directories of
# earlier runs, and the last part to end spent seconds of its tail on that.
# Kept when the run fails, for the failed tests' files.
work="$(mktemp -d)"
finish() {
  local status=$?
  if [[ $status -eq 0 ]]; then
    rm -rf "$work"
  else
    echo "test.sh: this run's temporary files are kept in $work" >&2
  fi
}
trap finish EXIT
heavy_log="$work/heavy.log"
mypy_log="$work/mypy.log"
bench_log="$work/bench.log"
unit_log="$work/unit.log"

# Without arguments each part collects only its own files: each worker would
# otherwise import and collect the whole suite.
bench_args=("$@")
heavy_args=("$@")
warm_args=("$@")
if [[ $# -eq 0 ]]; then
  bench_args=(tests/bench)
  mapfile -t heavy_args < <(grep -rl --include='test_*.py' 'mark\.heavy' tests | sort)
  warm_args=(tests --ignore=tests/unit)
fi

# pytest's exit code 5 is "no tests collected": a part that a narrower
# selection leaves empty is not a failure, as long as one part ran tests.
set +e
"${pytest[@]}" --basetemp "$work/heavy" -p no:xdist -m heavy "${heavy_args[@]}" >"$heavy_log" 2>&1 &
heavy_pid=$!
unit=5
unit_pid=
run_unit() {
  "${pytest[@]}" --basetemp "$work/unit" -p no:xdist -m "not bench and not heavy" tests/unit >"$unit_log" 2>&1
}
# Only root may raise a priority again (below): elsewhere the unit tests run
# beside the heavy tests, and the rest waits for them.
lowered=no
if [[ $# -eq 0 && $(id -u) -eq 0 ]]; then
  lowered=yes
elif [[ $# -eq 0 ]]; then
  run_unit &
  unit_pid=$!
fi
"${pytest[@]}" --basetemp "$work/collect" -q --collect-only -p no:xdist "${warm_args[@]}" >/dev/null 2>&1 &
warm_pid=$!
.venv/bin/ruff check rollbackd tests bench
lint=$?
.venv/bin/ruff format --check rollbackd tests bench
format=$?
# A collection error shows again, with its cause, in the runs below.
wait "$warm_pid"

# The rest starts now at the lowest priority; elsewhere it waits for the heavy tests.
meanwhile=()
if [[ $lowered == yes ]]; then
  meanwhile=(nice -n 19)
else
  wait "$heavy_pid"
  heavy=$?
fi
# The type check runs beside the tests; its verdict counts like theirs. Where
# the heavy tests run meanwhile, it and the benchmarks start once those end:
# what the heavy tests leave idle goes to the integration workers' collection.
after_heavy() {
  if [[ $lowered == yes ]]; then
    while kill -0 "$heavy_pid" 2>/dev/null; do sleep 0.2; done
  fi
}
(after_heavy && exec nice -n 19 .venv/bin/mypy) >"$mypy_log" 2>&1 &
mypy_pid=$!
(after_heavy && exec nice -n 10 "${pytest[@]}" --basetemp "$work/bench" -n 3 --dist loadfile -m bench "${bench_args[@]}") \
  >"$bench_log" 2>&1 &
bench_pid=$!
if [[ $lowered == yes ]]; then
  # When the heavy tests end, everything this script started gets normal
  # priority back but the benchmarks (10: they have time to spare) and mypy
  # (19: it fills idle CPU), and the unit tests start. Twice, in case the
  # heavy tests ended before the integration tests started.
  (
    while kill -0 "$heavy_pid" 2>/dev/null; do sleep 0.2; done
    for _ in 1 2; do
      python3 scripts/priority.py 0 "$$"
      python3 scripts/priority.py 10 "$bench_pid"
      python3 scripts/priority.py 19 "$mypy_pid"
      sleep 1
    done
    run_unit
  ) &
  unit_pid=$!
fi
# In the foreground, so that Ctrl-C reaches it.
if [[ $# -eq 0 ]]; then
  "${meanwhile[@]}" "${pytest[@]}" --basetemp "$work/integration" -n "$workers" --dist load --maxschedchunk 1 \
    -m "not bench and not heavy" tests --ignore=tests/unit --ignore=tests/bench
else
  "${pytest[@]}" --basetemp "$work/integration" -n "$workers" --dist worksteal -m "not bench and not heavy" "$@"
fi
parallel=$?
if [[ $lowered == yes ]]; then
  wait "$heavy_pid"
  heavy=$?
fi
echo "--- tests marked heavy, run first ---"
cat "$heavy_log"
if [[ -n $unit_pid ]]; then
  wait "$unit_pid"
  unit=$?
  echo "--- unit tests (tests/unit), run beside the above ---"
  cat "$unit_log"
fi
wait "$bench_pid"
bench=$?
wait "$mypy_pid"
typecheck=$?
echo "--- mypy, run beside the above ---"
cat "$mypy_log"
echo "--- benchmark smoke runs (marker bench), run beside the above ---"
cat "$bench_log"
set -e
if [[ $lint -ne 0 || $format -ne 0 ]]; then
  echo "test.sh: ruff failed (check $lint, format $format)" >&2
  exit 1
fi
if [[ $typecheck -ne 0 ]]; then
  echo "test.sh: mypy failed (exit $typecheck)" >&2
  exit 1
fi
codes=("$parallel" "$unit" "$bench" "$heavy")
if [[ $parallel -eq 5 && $unit -eq 5 && $bench -eq 5 && $heavy -eq 5 ]]; then
  echo "test.sh: no tests collected" >&2
  exit 5
fi
for code in "${codes[@]}"; do
  if [[ $code -ne 0 && $code -ne 5 ]]; then
    echo "test.sh: exit codes: parallel $parallel, unit $unit, bench $bench, heavy $heavy" >&2
    exit 1
  fi
done
