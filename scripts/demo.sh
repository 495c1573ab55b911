#!/usr/bin/env bash
# The main job: set-up, then the whole loop against kubesim, real Prometheus and Alertmanager.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
exec .venv/bin/rollbackd demo "$@"
