#!/usr/bin/env bash
# The laptop-sized twin of runs/celeba_smiling_male.sh: the same stages in the same order, offline, on CPU,
# in a few minutes. The built-in demo data stands in for CelebA, template prompts for the LLM, the procedural
# generator for Stable Diffusion, and every size is tiny. The numbers it prints show the pipeline runs, not
# the paper's results.
#
#   bash runs/cpu_demo.sh            # writes out/cpu_demo/
set -euo pipefail

RUN=${RUN:-$PWD/out/cpu_demo}
SEED=${SEED:-0}
SIZE=${SIZE:-32}                 # image side everywhere (CelebA run: 224)
N_TRAIN=${N_TRAIN:-400}          # biased train images (CelebA run: 20000)
BIAS=${BIAS:-1:9}
PROMPTS_PER_GROUP=${PROMPTS_PER_GROUP:-10}
IMAGES_PER_GROUP=${IMAGES_PER_GROUP:-200} # >= the largest biased cell (0.45 * N_TRAIN) so mask finds its sets
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3}
PRETRAIN_LR=${PRETRAIN_LR:-0.01}
TOPK=${TOPK:-55}
FT_EPOCHS=${FT_EPOCHS:-2}
FT_LR=${FT_LR:-0.05}
BATCH=${BATCH:-64}

mkdir -p "$RUN"
cd "$RUN"
echo "run folder: $RUN" >&2

# 1. real data: the offline demo benchmark (biased train, mildly skewed val/test)
aimfair data demo --n-train "$N_TRAIN" --n-val 100 --n-test 200 --size "$SIZE" --bias "$BIAS" --seed "$SEED" --out data

# 2. prompts: the offline template writer (CelebA run: an LLM)
aimfair prompts --task smiling_male --per-group "$PROMPTS_PER_GROUP" --writer template --seed "$SEED" \
  --out prompts/smiling_male.yaml

# 3. synthetic images: the procedural generator (CelebA run: Stable Diffusion under torchrun)
aimfair synth --task smiling_male --group all --n "$IMAGES_PER_GROUP" --prompts prompts/smiling_male.yaml \
  --generator procedural --size "$SIZE" --batch-size 32 --seed "$SEED" --out synth

# 4. the biased model (random init: nothing is downloaded)
aimfair pretrain --train data/train.csv --val data/val.csv --weights none --epochs "$PRETRAIN_EPOCHS" \
  --lr "$PRETRAIN_LR" --milestones 10 --batch-size "$BATCH" --image-size "$SIZE" --workers 0 --device cpu \
  --seed "$SEED" --out pretrain.safetensors

# 5. the selection mask
aimfair mask --model pretrain.safetensors --real data/train.csv --synth synth/metadata.jsonl --topk "$TOPK" \
  --bias-ratio "$BIAS" --batch-size "$BATCH" --workers 0 --device cpu --seed "$SEED" --out mask.safetensors

# 6. selective fine-tuning
aimfair finetune --model pretrain.safetensors --synth synth/metadata.jsonl --val data/val.csv \
  --mask mask.safetensors --epochs "$FT_EPOCHS" --lr "$FT_LR" --batch-size "$BATCH" --workers 0 --device cpu \
  --seed "$SEED" --out finetune.safetensors

# 7. evaluation on the real test split, before and after (a table on the terminal, JSON beside it)
for m in pretrain finetune; do
  echo "== $m" >&2
  aimfair eval --model $m.safetensors --data data/test.csv --workers 0 --device cpu
  aimfair eval --model $m.safetensors --data data/test.csv --workers 0 --device cpu --json > eval_$m.json
done
echo "done: $RUN/eval_pretrain.json, $RUN/eval_finetune.json" >&2
