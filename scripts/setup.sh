#!/usr/bin/env bash
# Create .venv and install aimfair (editable). EXTRAS picks the optional dependencies: "test" (default: the
# test suite, with diffusers, transformers, openai and xgrammar) or "" (just what the offline demo needs).
# torch 2.14.1 / torchvision 0.29.1 is the pair known to work on the reference CPU machines; pyproject.toml
# itself declares version ranges so you can bring your own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS-test}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
if [ -n "$EXTRAS" ]; then
  .venv/bin/pip install -q -e ".[$EXTRAS]"
else
  .venv/bin/pip install -q -e .
fi
