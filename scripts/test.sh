#!/usr/bin/env bash
# The test command: set-up, lint, type-check, then the whole suite.
#
# The suite runs in two parts. Most tests wait on real time (1 s scrapes,
# for-counts, leases), not on the CPU, so they run on several workers at once
# (pytest-xdist, ROLLBACKD_TEST_WORKERS, default 4). Tests marked `heavy`
# (the bench smoke runs, the 1 100-connection attack) load or measure the
# whole machine, so they run afterwards, apart from the many small tests;
# they too mostly wait, so they run beside each other, one file per worker
# (a bench runs once per file). Arguments go to both parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
.venv/bin/ruff check rollbackd tests bench
.venv/bin/ruff format --check rollbackd tests bench
.venv/bin/mypy

workers="${ROLLBACKD_TEST_WORKERS:-4}"
# pytest's exit code 5 is "no tests collected": a part that a narrower
# selection leaves empty is not a failure, as long as one part ran tests.
set +e
.venv/bin/pytest -p no:cacheprovider -rs -n "$workers" --dist worksteal -m "not heavy" "$@"
parallel=$?
.venv/bin/pytest -p no:cacheprovider -rs -n "$workers" --dist loadfile -m heavy "$@"
heavy=$?
set -e
if [[ $parallel -eq 5 && $heavy -eq 5 ]]; then
  echo "test.sh: no tests collected" >&2
  exit 5
fi
for code in "$parallel" "$heavy"; do
  if [[ $code -ne 0 && $code -ne 5 ]]; then
    echo "test.sh: parallel part exit $parallel, heavy part exit $heavy" >&2
    exit 1
  fi
done
