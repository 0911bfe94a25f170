#!/usr/bin/env bash
# Install aimfair with its test dependencies into .venv and run the test suite (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
