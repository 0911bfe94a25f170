"""Conventional paths inside a run folder (the current directory), so the short forms work:

    RUN/aimfair.yaml                  optional config, one section per command
    RUN/data/{train,val,test}.csv     real manifests (`aimfair data ... --out data`)
    RUN/prompts/<task>.yaml           prompt files (`aimfair prompts`), else the shipped ones
    RUN/synth/metadata.jsonl          synthetic images (`aimfair synth`)
    RUN/pretrain.safetensors          biased model (`aimfair pretrain`)
    RUN/mask.safetensors              selection mask (`aimfair mask`)
    RUN/finetune.safetensors          repaired model (`aimfair finetune`)
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
TRAIN = DATA_DIR / "train.csv"
VAL = DATA_DIR / "val.csv"
TEST = DATA_DIR / "test.csv"
PROMPTS_DIR = Path("prompts")
SYNTH_DIR = Path("synth")
SYNTH_MANIFEST = SYNTH_DIR / "metadata.jsonl"
PRETRAIN = Path("pretrain.safetensors")
MASK = Path("mask.safetensors")
FINETUNE = Path("finetune.safetensors")
