#!/usr/bin/env bash
# AIM-Fair on CelebA, target Smiling, protected Male: the paper's pipeline on a GPU machine.
#
#   CELEBA_ROOT=/data/celeba GPUS=8 bash runs/celeba_smiling_male.sh
#
# data (biased 20k train subset, official val/test) -> prompts (an LLM through any OpenAI-compatible API)
# -> synth (Stable Diffusion 2.1, split across GPUs with torchrun) -> pretrain (biased real) -> mask (k=55)
# -> finetune (masked tensors only, balanced synthetic) -> eval (real test).
# Each stage reads the previous one's files, given explicitly; everything lands in $RUN. Every stage resumes or
# can be rerun on its own: rerunning this script after an interruption continues synth where it stopped.
#
# Needs: `pip install -e ".[all]"` with a CUDA build of torch; CelebA unpacked at $CELEBA_ROOT
# (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); network access to the Hugging Face Hub
# for the first run (or the model pre-downloaded with `hf download $SD_MODEL` and HF_HUB_OFFLINE=1); the API
# key in the environment variable named by $API_KEY_ENV (never on the command line, never written to disk).
# To skip the API, set WRITER=template (offline prompts) or WRITER=transformers LLM_MODEL=<local chat model>.
set -euo pipefail

# ---- what to run ---------------------------------------------------------------------------------------------
CELEBA_ROOT=${CELEBA_ROOT:?set CELEBA_ROOT to the unpacked CelebA folder}
RUN=${RUN:-$PWD/out/celeba_smiling_male}         # everything this run writes
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)} # processes per stage (torchrun); 0 or 1 = one process
SEED=${SEED:-0}

# data (paper §4.1): 20,000 biased training images, minority:majority 1:9
N_TRAIN=${N_TRAIN:-20000}
BIAS=${BIAS:-1:9}

# prompts (paper §3.1): 50 contextual prompts per group, written by an LLM
WRITER=${WRITER:-openai}                           # openai | transformers | template
LLM_MODEL=${LLM_MODEL:-gpt-4o}                     # the paper used GPT-4
LLM_BASE_URL=${LLM_BASE_URL:-}                     # e.g. http://localhost:8000/v1 (vLLM), :11434/v1 (Ollama)
API_KEY_ENV=${API_KEY_ENV:-OPENAI_API_KEY}         # the variable's NAME; local servers need none
PROMPTS_PER_GROUP=${PROMPTS_PER_GROUP:-50}

# synth (paper §4.3): SD 2.1, 10,000 images per group, guidance 9.0, saved at 224x224
SD_MODEL=${SD_MODEL:-stabilityai/stable-diffusion-2-1}
IMAGES_PER_GROUP=${IMAGES_PER_GROUP:-10000}
SCHEDULER=${SCHEDULER:-dpm++}                      # the official set-up is SCHEDULER=ddim STEPS=50
STEPS=${STEPS:-25}
GUIDANCE=${GUIDANCE:-9.0}
SAVE_SIZE=${SAVE_SIZE:-224}
SYNTH_BATCH=${SYNTH_BATCH:-16}                     # images per GPU per call; 16 fits 80 GB at 512 px in fp16

# training (paper §4.3): ResNet-18, batch 128; pretrain 15 epochs lr 0.01 (x0.1 at 10); fine-tune 10 epochs
WEIGHTS=${WEIGHTS:-imagenet}                       # imagenet (torchvision's) or none
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-15}
PRETRAIN_LR=${PRETRAIN_LR:-0.01}
TOPK=${TOPK:-55}                                   # tensors selected of 62 (the paper's best)
FT_EPOCHS=${FT_EPOCHS:-10}
FT_LR=${FT_LR:-0.06}                               # the released runner.sh; the paper's text says 0.4-0.6 (10x)

# 8. (optional) the paper's experiments on this run: e.g. STUDY=all or STUDY=strategies,partial,topk,bias-ratio
STUDY=${STUDY:-}                                   # empty: skip; runs over STUDY_SEEDS seeds into $RUN/studies
STUDY_SEEDS=${STUDY_SEEDS:-3}
# ----------------------------------------------------------------------------------------------------------------

command -v aimfair >/dev/null || { echo "aimfair is not installed (pip install -e '.[all]')" >&2; exit 1; }
# synth, pretrain, mask, finetune and eval run on every GPU through torchrun; the `--` keeps torchrun's parser off
# aimfair's options (it would take `--n` for its own `--nnodes`). --batch-size stays the global batch.
stage() {
  if [ "$GPUS" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$GPUS" -m aimfair_cli -- "$@"
  else
    aimfair "$@"
  fi
}
mkdir -p "$RUN"
cd "$RUN"
echo "run folder: $RUN  (GPUs for synth: $GPUS)" >&2

# 1. real data: biased train subset + official val/test partitions
#    (each cell's first images in file order, as the official code; add --seed S to draw them at random)
aimfair data celeba "$CELEBA_ROOT" --target Smiling --protected Male --bias "$BIAS" --n "$N_TRAIN" --out data

# 2. contextual prompts for the four groups (kept if already complete: delete the file to rewrite it)
if [ ! -s prompts/smiling_male.yaml ]; then
  llm_args=()
  if [ "$WRITER" != template ]; then llm_args+=(--model "$LLM_MODEL"); fi
  if [ "$WRITER" = openai ]; then
    llm_args+=(--api-key-env "$API_KEY_ENV")
    if [ -n "$LLM_BASE_URL" ]; then llm_args+=(--base-url "$LLM_BASE_URL"); fi
  fi
  aimfair prompts --task smiling_male --per-group "$PROMPTS_PER_GROUP" --writer "$WRITER" "${llm_args[@]}" \
    --seed "$SEED" --out prompts/smiling_male.yaml
fi

# 3. synthetic images: every group, split across GPUs. Under torchrun each rank takes indices i with
#    i mod GPUS == rank on its own GPU (cuda:LOCAL_RANK) and rank 0 writes synth/metadata.jsonl at the end.
#    Interrupted? Rerun: finished images are kept.
synth_args=(synth --task smiling_male --group all --n "$IMAGES_PER_GROUP" --prompts prompts/smiling_male.yaml
  --generator diffusers --model "$SD_MODEL" --scheduler "$SCHEDULER" --steps "$STEPS" --guidance "$GUIDANCE"
  --save-size "$SAVE_SIZE" --batch-size "$SYNTH_BATCH" --seed "$SEED" --out synth)
stage "${synth_args[@]}"

# 4. the biased model: real biased data, no group labels
stage pretrain --train data/train.csv --val data/val.csv --weights "$WEIGHTS" --epochs "$PRETRAIN_EPOCHS" \
  --lr "$PRETRAIN_LR" --milestones 10 --batch-size 128 --image-size 224 --seed "$SEED" \
  --target-name Smiling --protected-name Male --out pretrain.safetensors

# 5. the selection mask: tensors least sensitive to the domain gap and most sensitive to bias
stage mask --model pretrain.safetensors --real data/train.csv --synth synth/metadata.jsonl --topk "$TOPK" \
  --bias-ratio "$BIAS" --seed "$SEED" --out mask.safetensors

# 6. selective fine-tuning on balanced synthetic data
stage finetune --model pretrain.safetensors --synth synth/metadata.jsonl --val data/val.csv \
  --mask mask.safetensors --epochs "$FT_EPOCHS" --lr "$FT_LR" --seed "$SEED" --out finetune.safetensors

# 7. fairness on the real test set, before and after (a table on the terminal, JSON beside it)
for m in pretrain finetune; do
  echo "== $m" >&2
  stage eval --model $m.safetensors --data data/test.csv
  stage eval --model $m.safetensors --data data/test.csv --json > eval_$m.json
done
echo "done: $RUN/eval_pretrain.json, $RUN/eval_finetune.json" >&2

# 8. the paper's studies (Tab. 3, 4, 6, Fig. 5) on this run's data and synthetic pool, one process (each training
# of a study is a separate step; steps already done are reused on rerun)
if [ -n "$STUDY" ]; then
  aimfair study --run "$RUN" --study "$STUDY" --seeds "$STUDY_SEEDS" --weights "$WEIGHTS" \
    --pretrain-epochs "$PRETRAIN_EPOCHS" --pretrain-lr "$PRETRAIN_LR" --finetune-epochs "$FT_EPOCHS" \
    --finetune-lr "$FT_LR" --topk "$TOPK"
  echo "studies: $RUN/studies/report.md" >&2
fi
