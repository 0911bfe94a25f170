#!/usr/bin/env bash
# Install aimfair with its test and docs dependencies into .venv and run the test suite (offline, CPU): the same
# command .ci/run runs, so the docs build test runs here too.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS-test,docs}" bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
