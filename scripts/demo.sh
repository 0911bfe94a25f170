#!/usr/bin/env bash
# Install aimfair into .venv and run the offline demo (all stages, AIM-Fair vs baselines, ~10 minutes on 2 CPU
# cores). Extra arguments go to `aimfair demo`, e.g. `bash scripts/demo.sh --quick` or `--seeds 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" bash scripts/setup.sh
.venv/bin/aimfair demo "$@"
