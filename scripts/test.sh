#!/usr/bin/env bash
# The test command: set-up, lint, type-check, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
.venv/bin/ruff check rollbackd tests bench
.venv/bin/ruff format --check rollbackd tests bench
.venv/bin/mypy
exec .venv/bin/pytest -p no:cacheprovider -rs "$@"
